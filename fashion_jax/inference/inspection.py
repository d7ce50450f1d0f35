"""What a trained model does to images, as arrays: each conv layer's feature maps and the
confusion matrix.

The numbers behind plots.py's model figures and serve's explain page, computed with JAX. Apart
from plots.py because they draw nothing: the web page shows the feature maps without matplotlib,
and a figure is only one way to look at a confusion matrix.
"""

from __future__ import annotations

from functools import partial
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from fashion_jax.config import NUM_CLASSES
from fashion_jax.data.idx import DataError
from fashion_jax.model.models import ACTIVATIONS, CONV_LAYERS, pixels_to_inputs
from fashion_jax.training.evaluate import DEFAULT_BATCH, predict_logits


def feature_maps(model: nn.Module, params: Any, image: np.ndarray) -> dict[str, np.ndarray]:
    """Conv layer name -> (H, W, C) activations (after the activation) for one uint8 (28, 28) image;
    {} for a model without conv layers."""
    image = np.asarray(image)
    if image.shape != (28, 28):
        raise ValueError(f"expected one (28, 28) image, got shape {image.shape}")
    return {
        name: np.asarray(maps)
        for name, maps in jax.device_get(_conv_outputs(model, params, image)).items()
    }


# Module-level jits with the model static: equal models hash equal, so a model restored again by
# plot_all reuses the compiled function instead of tracing a fresh closure on every call.
@partial(jax.jit, static_argnames="model")
def _conv_outputs(model: nn.Module, params: Any, image: jax.Array) -> dict[str, jax.Array]:
    # Each conv layer's output is intercepted and passed through the model's activation: the
    # activations the next layer sees, without the model having to store them.
    activation = ACTIVATIONS[model.cfg.activation] if hasattr(model, "cfg") else (lambda x: x)
    captured: dict[str, jax.Array] = {}

    def grab(next_fun, args, kwargs, context):
        out = next_fun(*args, **kwargs)
        if isinstance(context.module, CONV_LAYERS) and context.method_name == "__call__":
            captured[context.module.name] = activation(out)[0]  # batch of one
        return out

    with nn.intercept_methods(grab):
        model.apply({"params": params}, pixels_to_inputs(jnp.asarray(image))[None], train=False)
    return captured


def confusion_matrix(
    model: nn.Module,
    params: Any,
    images: np.ndarray,
    labels: np.ndarray,
    batch_size: int = DEFAULT_BATCH,
    num_classes: int = NUM_CLASSES,
) -> np.ndarray:
    """(num_classes, num_classes) int64 counts: rows are the true class, columns the predicted
    one."""
    check_labels(len(images), labels, num_classes)
    if len(images) == 0:
        return np.zeros((num_classes, num_classes), np.int64)
    preds = predict_logits(model, params, images, batch_size).argmax(axis=-1)
    return confusion_counts(preds, labels, num_classes)


def check_labels(n: int, labels: np.ndarray, num_classes: int = NUM_CLASSES) -> None:
    """One label in 0..num_classes-1 for each of n images, or a one-line DataError."""
    true = np.asarray(labels).astype(np.int64)
    if len(true) != n or (n and not 0 <= true.min() <= true.max() < num_classes):
        raise DataError(
            "labels",
            f"need one label in 0..{num_classes - 1} per image; "
            f"got {len(true)} labels for {n} images",
        )


def confusion_counts(
    preds: np.ndarray, labels: np.ndarray, num_classes: int = NUM_CLASSES
) -> np.ndarray:
    """The confusion matrix of predicted classes against checked labels (check_labels)."""
    true, preds = np.asarray(labels).astype(np.int64), np.asarray(preds).astype(np.int64)
    return np.bincount(true * num_classes + preds, minlength=num_classes**2).reshape(
        num_classes, num_classes
    )
