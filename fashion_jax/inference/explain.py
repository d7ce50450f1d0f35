"""Why a model chose a class: saliency, integrated gradients, occlusion and Grad-CAM, in JAX.

Each method is one jitted program over a batch of images: `jax.grad` of the explained class's logit,
`vmap`ped over the images (and, for integrated gradients, over the path's steps, so the steps run as
one batched call); occlusion runs all its patches as one batch. Every map is (28, 28), non-negative,
larger meaning more important for the class:

- saliency (Simonyan et al. 2013): |d logit_c / d x|.
- integrated-gradients (Sundararajan et al. 2017): x * integral_0^1 d logit_c / d x (a x) da from
  the black image, the background Fashion-MNIST is drawn on; the integral by Gauss-Legendre
  quadrature. The map keeps the positive part (the evidence for c); `integrated_gradients` gives the
  signed attributions, whose sum is logit_c(x) - logit_c(0) (completeness).
- occlusion (Zeiler & Fergus 2014): how much logit_c drops when a 4x4 patch is set to 0, averaged
  over the patches covering each pixel, negative drops clipped.
- gradcam (Selvaraju et al. 2017): relu(sum_k w_k A_k) at a conv layer (default the last), w_k the
  spatial mean of d logit_c / d A_k, resized bilinearly to 28x28. Conv models only.
"""

from __future__ import annotations

from functools import partial
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from fashion_jax.errors import FashionJaxError
from fashion_jax.model.models import ACTIVATIONS, forward, is_convolutional, pixels_to_inputs

SIDE = 28
METHODS = ("saliency", "integrated-gradients", "occlusion", "gradcam")
IG_STEPS = 256  # Gauss-Legendre nodes: completeness within 1% on the chapter CNN (docs/CHAPTER.md)
PATCH, STRIDE = 4, 2  # occlusion: every pixel is covered by (PATCH // STRIDE) ** 2 = 4 patches
# Images per compiled call, from the rows one call expands to (an image is 225 occluded copies, or
# IG_STEPS points on its path): about 512 images' activations live at once, whatever the method.
CALL_ROWS = 512


class ExplainError(FashionJaxError, ValueError):
    """A method or class the model cannot be explained by; one line."""


def methods_for(model: nn.Module) -> tuple[str, ...]:
    """The methods that apply to `model`: all four for a CNN, Grad-CAM needs a conv layer."""
    return METHODS if is_convolutional(model) else METHODS[:3]


def conv_layer_names(model: nn.Module) -> tuple[str, ...]:
    return (
        tuple(f"conv{i}" for i in range(len(model.cfg.filters))) if is_convolutional(model) else ()
    )


def check_methods(model: nn.Module, methods: tuple[str, ...], gradcam_layer: str | None) -> None:
    for method in methods:
        if method not in METHODS:
            raise ExplainError(f"unknown method {method!r}; choose from {', '.join(METHODS)}")
    if "gradcam" in methods and not is_convolutional(model):
        raise ExplainError(
            f"gradcam needs a conv layer and model {model.cfg.name} has none; "
            f"use {', '.join(METHODS[:3])}"
        )
    layers = conv_layer_names(model)
    if gradcam_layer is not None and layers and gradcam_layer not in layers:
        raise ExplainError(f"no conv layer {gradcam_layer!r}; the model has {', '.join(layers)}")


def _logit(model: nn.Module, params: Any, x: jax.Array, c: jax.Array) -> jax.Array:
    """The logit of class c for one image x (28, 28) in [0, 1]."""
    return model.apply({"params": params}, x[None], train=False)[0, c]


def saliency(model: nn.Module, params: Any, x: jax.Array, target: jax.Array) -> jax.Array:
    grads = jax.vmap(jax.grad(partial(_logit, model, params)))(x, target)
    return jnp.abs(grads)


def gauss_legendre(steps: int) -> tuple[np.ndarray, np.ndarray]:
    """Nodes and weights of `steps`-point Gauss-Legendre quadrature on [0, 1]."""
    nodes, weights = np.polynomial.legendre.leggauss(steps)
    return ((nodes + 1) / 2).astype(np.float32), (weights / 2).astype(np.float32)


def integrated_gradients(
    model: nn.Module, params: Any, x: jax.Array, target: jax.Array, steps: int = IG_STEPS
) -> jax.Array:
    """Signed attributions (B, 28, 28) from the black baseline: they sum to
    logit_c(x) - logit_c(0), up to the quadrature's error."""
    alphas, weights = gauss_legendre(steps)
    grad_one = jax.grad(partial(_logit, model, params))
    # (B, steps) gradients in one call: the inner vmap walks the path, the outer the images
    along_path = jax.vmap(lambda xi, c: jax.vmap(lambda a: grad_one(a * xi, c))(alphas))
    grads = along_path(x, target)
    return x * jnp.tensordot(weights, grads, axes=(0, 1))


def occlusion_masks() -> np.ndarray:
    """(P, 28, 28) float32: 0 inside patch p, 1 elsewhere. Patches start half a patch off the
    edge, so every pixel, corners included, is covered by the same number of them."""
    starts = range(STRIDE - PATCH, SIDE, STRIDE)
    masks = np.ones((len(starts) ** 2, SIDE, SIDE), np.float32)
    for p, (r, c) in enumerate((r, c) for r in starts for c in starts):
        masks[p, max(r, 0) : r + PATCH, max(c, 0) : c + PATCH] = 0
    return masks


def occlusion(model: nn.Module, params: Any, x: jax.Array, target: jax.Array) -> jax.Array:
    masks = jnp.asarray(occlusion_masks())
    batch, patches = x.shape[0], masks.shape[0]
    occluded = (x[:, None] * masks[None]).reshape(batch * patches, SIDE, SIDE)
    logits = model.apply({"params": params}, jnp.concatenate([x, occluded]), train=False)
    rows = jnp.arange(batch)
    base = logits[rows, target]
    hidden = logits[batch:].reshape(batch, patches, -1)[rows, :, target]  # (B, P)
    drop = base[:, None] - hidden
    covered = 1 - masks
    return jnp.maximum(jnp.einsum("bp,phw->bhw", drop, covered) / covered.sum(0), 0)


def gradcam(
    model: nn.Module, params: Any, x: jax.Array, target: jax.Array, layer: str
) -> jax.Array:
    # models.CNN adds a zero 'perturbation' to each conv layer's activations: its gradient is the
    # gradient with respect to the activations. One forward pass creates the zeros and captures the
    # layer's output (before the activation, which the model applies outside the conv module).
    _, state = model.apply(
        {"params": params},
        x,
        train=False,
        mutable=["perturbations", "intermediates"],
        capture_intermediates=lambda module, method: module.name == layer,
    )
    acts = ACTIVATIONS[model.cfg.activation](state["intermediates"][layer]["__call__"][0])

    def picked(perturbations: Any) -> jax.Array:
        logits = model.apply({"params": params, "perturbations": perturbations}, x, train=False)
        return logits[jnp.arange(x.shape[0]), target].sum()  # images are independent: one grad

    grads = jax.grad(picked)(state["perturbations"])[f"{layer}_act"]
    weights = grads.mean(axis=(1, 2), keepdims=True)  # (B, 1, 1, K)
    cam = jnp.maximum((weights * acts).sum(-1), 0)  # (B, h, w)
    return jax.image.resize(cam, (x.shape[0], SIDE, SIDE), "bilinear")


@partial(jax.jit, static_argnames=("model", "method", "layer", "steps"))
def _maps(
    model: nn.Module,
    params: Any,
    images: jax.Array,
    target: jax.Array,
    method: str,
    layer: str | None = None,
    steps: int = IG_STEPS,
) -> jax.Array:
    """One method's (B, 28, 28) maps of uint8 images for the classes `target`: one program per
    method, model, batch shape."""
    x = pixels_to_inputs(images)
    if method == "saliency":
        return saliency(model, params, x, target)
    if method == "integrated-gradients":
        return jnp.maximum(integrated_gradients(model, params, x, target, steps), 0)
    if method == "occlusion":
        return occlusion(model, params, x, target)
    return gradcam(model, params, x, target, layer)


@partial(jax.jit, static_argnames="model")
def _probabilities(model: nn.Module, params: Any, images: jax.Array) -> jax.Array:
    return jax.nn.softmax(forward(model, params, images), axis=-1)


class Explainer:
    """A model's maps, any number of images at a time: each method's program compiled once per
    batch shape (CALL_ROWS // rows per image, then the next power of two for the remainder)."""

    def __init__(
        self,
        model: nn.Module,
        params: Any,
        gradcam_layer: str | None = None,
        ig_steps: int = IG_STEPS,
    ) -> None:
        check_methods(model, (), gradcam_layer)
        self.model, self.params, self.ig_steps = model, params, ig_steps
        layers = conv_layer_names(model)
        self.gradcam_layer = gradcam_layer or (layers[-1] if layers else None)
        self.methods = methods_for(model)

    def probabilities(self, images: np.ndarray) -> np.ndarray:
        """(n, 28, 28) uint8 -> (n, classes) float32 probabilities."""
        out = [
            _probabilities(self.model, self.params, chunk)
            for chunk, _ in _chunks(np.asarray(images, np.uint8), None, CALL_ROWS)
        ]
        return np.concatenate(jax.device_get(out))[: len(images)] if out else np.zeros((0, 10))

    def explain(
        self,
        images: np.ndarray,
        targets: np.ndarray | None = None,
        methods: tuple[str, ...] | None = None,
    ) -> dict[str, np.ndarray]:
        """method -> (n, 28, 28) float32 maps of uint8 images (n, 28, 28) for the classes
        `targets` (default: each image's predicted class)."""
        methods = self.methods if methods is None else tuple(methods)
        check_methods(self.model, methods, self.gradcam_layer)
        images = np.asarray(images, np.uint8)
        if targets is None:
            targets = self.probabilities(images).argmax(-1)
        targets = np.asarray(targets, np.int32)
        return {m: self._method(m, images, targets) for m in methods}

    def _method(self, method: str, images: np.ndarray, targets: np.ndarray) -> np.ndarray:
        rows = {"integrated-gradients": self.ig_steps, "occlusion": len(occlusion_masks()) + 1}
        size = max(1, CALL_ROWS // rows.get(method, 1))
        out = [
            _maps(
                self.model,
                self.params,
                chunk,
                target,
                method,
                self.gradcam_layer if method == "gradcam" else None,
                self.ig_steps if method == "integrated-gradients" else IG_STEPS,
            )
            for chunk, target in _chunks(images, targets, size)
        ]
        if not out:
            return np.zeros((0, SIDE, SIDE), np.float32)
        return np.concatenate(jax.device_get(out))[: len(images)]


def _chunks(images: np.ndarray, targets: np.ndarray | None, size: int):
    """(images, targets) in calls of `size`; the last one padded (with blank images, class 0) to
    a power of two, so a few shapes serve any count."""
    for start in range(0, len(images), size):
        chunk = images[start : start + size]
        target = None if targets is None else targets[start : start + size]
        n = len(chunk)
        padded = size if n == size else min(size, 1 << (n - 1).bit_length())
        if padded > n:
            chunk = np.concatenate([chunk, np.zeros((padded - n, SIDE, SIDE), np.uint8)])
            if target is not None:
                target = np.concatenate([target, np.zeros(padded - n, np.int32)])
        yield chunk, target
