"""A trained model behind a queue: what `fashion-jax serve` asks for, answered on one thread.

`ModelService` loads the model once (predict.Predictor, which compiles its forward pass for one
batch shape), runs every program once at startup so no request waits for the compiler, and owns
the only thread that calls JAX. Requests put jobs on a queue and wait on a Future. Images that
arrive together are classified in one `predict_images` call: the worker takes every image pending
(up to MAX_BATCH), so a burst costs a few batched calls instead of one call per image.
"""

from __future__ import annotations

import base64
import dataclasses
import logging
import os
import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

import numpy as np

from fashion_jax.data.dataset import CLASS_NAMES, load_split
from fashion_jax.inference.explain import Explainer
from fashion_jax.inference.inspection import feature_maps
from fashion_jax.inference.mistakes import GALLERY_METHOD, mistakes
from fashion_jax.inference.predictor import Predictor
from fashion_jax.inference.preprocess import SIDE
from fashion_jax.model.models import is_convolutional
from fashion_jax.storage import run_files

log = logging.getLogger("fashion_jax")

MAX_BATCH = 64  # images per model call; a larger burst waits for the next call


@dataclasses.dataclass
class _Job:
    future: Future
    image: np.ndarray | None = None  # a classification, batched with its neighbours
    call: Callable[[], Any] | None = None  # anything else that needs the model, run alone


def _b64(array: np.ndarray) -> str:
    return base64.b64encode(np.ascontiguousarray(array, np.uint8).tobytes()).decode("ascii")


def _to_bytes(maps: np.ndarray) -> np.ndarray:
    """(H, W, C) float maps -> (C, H, W) uint8, each channel stretched over its own range (as
    plots.plot_feature_maps shows them), so a weak but structured channel stays visible."""
    maps = np.moveaxis(np.asarray(maps, np.float32), -1, 0)
    low = maps.min(axis=(1, 2), keepdims=True)
    span = maps.max(axis=(1, 2), keepdims=True) - low
    scaled = np.where(span > 0, (maps - low) / np.where(span > 0, span, 1.0), 0.0)
    return np.round(scaled * 255).astype(np.uint8)


class ModelService:
    """The model of `workdir`, loaded and compiled once, called from one worker thread."""

    def __init__(self, workdir: str | os.PathLike) -> None:
        self.workdir = str(workdir)
        self.predictor = Predictor(workdir)
        self.convolutional = is_convolutional(self.predictor.model)
        self.explainer = Explainer(self.predictor.model, self.predictor.params)
        self._gallery: dict[str, Any] | None = None  # the mistakes, once asked for
        self._jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._worker = threading.Thread(target=self._work, name="fashion-jax-model", daemon=True)
        self._worker.start()
        self._warm()

    def _warm(self) -> None:
        """Compile every program a request can run, so no request waits for the compiler."""
        blank = np.zeros((SIDE, SIDE), np.uint8)
        self.classify(blank).result()
        self.explain(blank).result()
        self.attributions(blank).result()
        self._info = self._call(self._describe).result()

    def classify(self, image: np.ndarray) -> Future:
        """A Future of the (num_classes,) probabilities of one (28, 28) uint8 image."""
        future: Future = Future()
        self._jobs.put(_Job(future, image=np.asarray(image, np.uint8)))
        return future

    def explain(self, image: np.ndarray) -> Future:
        """A Future of every conv layer's feature maps for one image: [] without conv layers."""
        return self._call(lambda: self._feature_maps(image))

    def attributions(self, image: np.ndarray) -> Future:
        """A Future of the maps of every method that applies, for the predicted class and the
        runner-up: [{"class", "label", "probability", "maps": {method: 28x28 list}}, ...]."""
        return self._call(lambda: self._attributions(image))

    def _attributions(self, image: np.ndarray) -> list[dict[str, Any]]:
        # One call per method for both classes: the image twice, a class each
        pair = np.stack([np.asarray(image, np.uint8)] * 2)
        probs = self.explainer.probabilities(pair[:1])[0]
        top = np.argsort(-probs, kind="stable")[:2]
        maps = self.explainer.explain(pair, top)
        return [
            {
                "class": CLASS_NAMES[int(k)],
                "label": int(k),
                "probability": float(probs[k]),
                "maps": {
                    m: np.asarray(v[j], np.float64).round(8).tolist() for m, v in maps.items()
                },
            }
            for j, k in enumerate(top)
        ]

    def mistakes(self) -> Future:
        """A Future of the gallery of mistakes on the test set (inference/mistakes.py), computed
        on the first call: [{"true", "predicted", "count", "items": [{"index", "confidence",
        "image": base64 uint8, "map": 28x28 list}]}]; a DataError without the data files."""
        return self._call(self._mistakes)

    def _mistakes(self) -> dict[str, Any]:
        if self._gallery is None:
            images, labels = load_split("test")
            groups = mistakes(self.explainer, images, labels)
            self._gallery = {
                "method": GALLERY_METHOD,
                "groups": [_gallery_group(images, g) for g in groups],
            }
        return self._gallery

    def _call(self, call: Callable[[], Any]) -> Future:
        future: Future = Future()
        self._jobs.put(_Job(future, call=call))
        return future

    def info(self) -> dict[str, Any]:
        """The model's name, its config, the class names and, for a CNN, the conv0 filters."""
        return self._info

    def _describe(self) -> dict[str, Any]:
        config = self.predictor.config
        return {
            "workdir": self.workdir,
            "model": config.model.name,
            "convolutional": self.convolutional,
            "classes": list(CLASS_NAMES),
            "config": run_files.to_dict(config),
            "filters": self._filters() if self.convolutional else None,
            "methods": list(self.explainer.methods),
        }

    def close(self) -> None:
        self._jobs.put(None)
        self._worker.join(timeout=10)

    def _feature_maps(self, image: np.ndarray) -> list[dict[str, Any]]:
        if not self.convolutional:
            return []
        maps = feature_maps(self.predictor.model, self.predictor.params, image)
        layers = []
        for name, m in maps.items():
            height, width, channels = m.shape
            data = _b64(_to_bytes(m))  # (channels, height, width) uint8, row-major
            layers.append(
                {
                    "layer": name,
                    "height": height,
                    "width": width,
                    "channels": channels,
                    "data": data,
                }
            )
        return layers

    def _filters(self) -> dict[str, Any]:
        """conv0's kernels for input channel 0, as plots.plot_filters draws them: one symmetric
        scale for all, so a weight's sign reads the same in every tile."""
        kernel = np.asarray(self.predictor.params["conv0"]["kernel"], np.float32)[:, :, 0, :]
        height, width, count = kernel.shape
        return {
            "layer": "conv0",
            "height": height,
            "width": width,
            "count": count,
            "limit": float(np.abs(kernel).max()) or 1.0,
            "weights": np.moveaxis(kernel, -1, 0).round(5).tolist(),  # [filter][row][column]
        }

    def _work(self) -> None:
        while True:
            job = self._jobs.get()
            if job is None:
                return
            if job.call is not None:
                _settle([job], lambda live, call=job.call: [call()])
                continue
            batch, later = [job], []
            while len(batch) < MAX_BATCH:
                try:
                    more = self._jobs.get_nowait()
                except queue.Empty:
                    break
                (batch if more is not None and more.image is not None else later).append(more)
            _settle(
                batch, lambda live: self.predictor.predict_images(np.stack([j.image for j in live]))
            )
            for other in later:
                self._jobs.put(other)  # a stop or an explain taken while gathering the batch


def _gallery_group(images: np.ndarray, group: dict[str, Any]) -> dict[str, Any]:
    items = [
        {"index": i, "confidence": p, "image": _b64(images[i]), "map": m.round(8).tolist()}
        for i, p, m in zip(group["indices"], group["confidence"], group["maps"].astype(float))
    ]
    return {k: group[k] for k in ("true", "predicted", "count")} | {"items": items}


def _settle(jobs: list[_Job], compute: Callable[[list[_Job]], Any]) -> None:
    """`compute` the results of the jobs still wanted, one per job, and hand them out (or the
    error). A job whose waiter went away (a client that disconnected) was cancelled: it is
    dropped here, since a cancelled Future refuses a result."""
    live = [job for job in jobs if job.future.set_running_or_notify_cancel()]
    if not live:
        return
    try:
        results = compute(live)
    except Exception as err:  # the worker must outlive any one bad request
        log.debug("model call failed", exc_info=True)
        for job in live:
            job.future.set_exception(err)
        return
    for job, result in zip(live, results):
        job.future.set_result(result)
