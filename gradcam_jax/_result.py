"""The result pytree every explainer returns."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax

__all__ = ["Explanation"]


class Explanation(NamedTuple):
  """An explanation of a batch. Fields an explainer does not compute are None; which
  ones are None is fixed per explainer, so the structure never changes between calls.

  Attributes:
    cam: (B, H, W) float32 in [0, 1], Grad-CAM at input resolution.
    cam_raw: (B, h, w) float32, the un-normalised ReLU map at layer resolution; for
      a list of layers, a tuple of them, one per layer at its own resolution (``cam``
      is then the normalised average of the layers' normalised maps).
    guided: (B, H, W, C) guided backpropagation of the target score w.r.t. the input.
    guided_gradcam: (B, H, W, C) ``guided * cam[..., None]``.
    logits: the model output, (B, num_classes) for a classifier.
    targets: (B,) int32, the explained classes.
  """
  cam: jax.Array | None
  cam_raw: jax.Array | tuple | None
  guided: jax.Array | None
  guided_gradcam: jax.Array | None
  logits: Any
  targets: jax.Array | None
