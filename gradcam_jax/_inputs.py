"""Checks of the images an explainer receives, at trace time."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from gradcam_jax._errors import ImageError

__all__ = ["check_images"]


def check_images(images, layout: str = "NHWC") -> jax.Array:
  """Images must be a float batch (B, H, W, C) (or (B, C, H, W) for ``"NCHW"``);
  concrete ones must be finite.

  Under ``jax.jit`` the values are not known at trace time and are not checked:
  non-finite pixels then give NaN maps.
  """
  expected = "(B, H, W, C)" if layout == "NHWC" else "(B, C, H, W)"
  if not hasattr(images, "shape") or not hasattr(images, "dtype"):
    raise ImageError(
      f"images: expected an array of shape {expected}; got {type(images).__name__}."
    )
  if images.ndim != 4:
    hint = " For one image, add a batch axis: images[None]." if images.ndim == 3 else ""
    raise ImageError(
      f"images: expected rank 4, {expected} as the model expects; "
      f"got shape {tuple(images.shape)}.{hint}"
    )
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
  return images
