"""The result pytree every explainer returns."""

from __future__ import annotations

import functools
from typing import Any, NamedTuple

import jax

__all__ = ["Explanation"]


class Explanation(NamedTuple):
  """An explanation of a batch. Fields an explainer does not compute are None; which
  ones are None is fixed per explainer, so the structure never changes between calls.

  Shapes below are for (B,) targets (or the default) and channels-last images
  (B, H, W, C). With (B, T) targets every per-target field (``cam``, ``cam_raw``,
  ``guided``, ``guided_gradcam``, ``targets``) has a T axis after the batch axis:
  ``cam`` (B, T, H, W), ``guided`` (B, T, H, W, C). With ``image_layout="NCHW"``
  the input gradients are in the images' layout, (B, C, H, W) (or (B, T, C, H, W));
  maps are (B, H, W) either way. Signals and volumes likewise: ``cam`` (B, L) or
  (B, D, H, W), input gradients in the inputs' layout.

  Attributes:
    cam: (B, H, W) float32 in [0, 1], Grad-CAM at input resolution.
    cam_raw: (B, h, w) float32, the un-normalised ReLU map at layer resolution; for
      a list of layers, a tuple of them, one per layer at its own resolution (``cam``
      is then the normalised average of the layers' normalised maps).
    guided: (B, H, W, C) guided backpropagation of the target score w.r.t. the input.
    guided_gradcam: (B, H, W, C) ``guided * cam[..., None]`` (the map broadcast over
      the images' channel axis).
    logits: the model output, (B, num_classes) for a classifier (any pytree).
    targets: (B,) int32, the explained classes; None for a target function that
      needs no classes (``gcj.embedding_target``).
    valid: (B,) bool, False for each example whose images, output or maps hold a NaN
      or an Inf. Under ``jax.jit`` non-finite images cannot raise, and they do not
      always show in the maps (a NaN pixel can leave the logits finite and the map
      all zero); check this flag instead.
    attribution: the pixel-space explainers' attribution (:func:`saliency`,
      :func:`input_x_gradient`, :func:`deconvnet`, :func:`integrated_gradients`),
      per pixel and channel in the images' layout, (B, H, W, C); their ``cam`` is
      its heat map (max over channels of the absolute value, normalised).
    delta: (B,) :func:`integrated_gradients`' completeness gap,
      ``sum(attribution) - (score(x) - score(baseline))`` (Captum's
      ``convergence_delta``).
  """

  cam: jax.Array | None
  cam_raw: jax.Array | tuple | None
  guided: jax.Array | None
  guided_gradcam: jax.Array | None
  logits: Any
  targets: jax.Array | None
  valid: jax.Array | None = None
  attribution: jax.Array | None = None
  delta: jax.Array | None = None

  def with_validity(self, images) -> "Explanation":
    """This explanation with `valid` computed from `images` and every float field."""
    batch = images.shape[0]

    def per_example(x) -> bool:
      return (
        jax.numpy.issubdtype(x.dtype, jax.numpy.floating)
        and x.ndim > 0
        and x.shape[0] == batch
      )

    fields = (*self[:5], self.attribution, self.delta)
    leaves = [jax.numpy.asarray(x) for x in (images, *jax.tree_util.tree_leaves(fields))]
    arrays = tuple(x for x in leaves if per_example(x))
    ok = _all_finite(arrays) if arrays else jax.numpy.ones(batch, bool)
    return self._replace(valid=ok)


@jax.jit
def _all_finite(arrays: tuple) -> jax.Array:
  """(B,) True where every array's example is finite: one program (called eagerly,
  one compile per set of shapes instead of one per operation)."""
  batch = arrays[0].shape[0]
  flags = [jax.numpy.isfinite(x).reshape(batch, -1).all(axis=1) for x in arrays]
  return functools.reduce(jax.numpy.logical_and, flags)
