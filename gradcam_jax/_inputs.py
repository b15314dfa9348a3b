"""Checks of the images an explainer receives, at trace time."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from gradcam_jax._errors import ImageError
from gradcam_jax._layout import Layout, resolve_layout

__all__ = ["check_images"]


def check_images(images, image_layout: str | None = None) -> tuple[jax.Array, Layout]:
  """Images must be a float batch of rank 3, 4 or 5 in `image_layout` ((B, L, C),
  (B, H, W, C), (B, D, H, W, C) channels last when None); concrete ones must be
  finite. Returns them with their :class:`Layout`.

  Under ``jax.jit`` the values are not known at trace time and are not checked:
  non-finite pixels then give NaN maps.
  """
  if not hasattr(images, "shape") or not hasattr(images, "dtype"):
    raise ImageError(
      "images: expected an array, (B, H, W, C) images (or (B, L, C) signals, "
      f"(B, D, H, W, C) volumes); got {type(images).__name__}."
    )
  layout = resolve_layout(image_layout, images)
  if not jnp.issubdtype(images.dtype, jnp.floating):
    raise ImageError(
      f"images: expected a floating dtype (float32, bfloat16, ...) after "
      f"the model's preprocessing; got {images.dtype}. Convert and "
      "normalise uint8 images first (zoo models carry `preprocess`)."
    )
  if not isinstance(images, jax.core.Tracer):
    finite = np.isfinite(np.asarray(images, dtype=np.float32))
    if not finite.all():
      bad = sorted(set(np.nonzero(~finite)[0].tolist()))
      raise ImageError(
        f"images: expected finite values; got NaN or Inf in images {bad[:20]} of the batch."
      )
  return images, layout
