"""Reshapes that turn a layer's activation into the (B, h, w, C) grid CAMs need."""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp

from gradcam_jax._errors import LayerShapeError

__all__ = ["tokens_to_grid", "channels_last"]


def tokens_to_grid(grid: tuple[int, int] | None = None, prefix: int = 1) -> Callable:
  """A `reshape` for transformers: (B, prefix + N, D) tokens -> (B, h, w, D).

  Drops the first `prefix` tokens (the class token; more for register tokens) and
  lays the N patch tokens out row by row on a `grid` of (h, w), inferred as a square
  when None.

  Example:
    >>> import jax.numpy as jnp, gradcam_jax as gcj
    >>> gcj.tokens_to_grid()(jnp.zeros((2, 1 + 16, 8))).shape
    (2, 4, 4, 8)
  """

  def reshape(tokens):
    b, n, d = tokens.shape
    patches = n - prefix
    h, w = grid if grid is not None else (int(round(patches**0.5)),) * 2
    if h * w != patches:
      raise LayerShapeError(
        f"tokens_to_grid: {patches} patch tokens (after dropping "
        f"{prefix}) do not fill a {h}x{w} grid; pass grid=(h, w)."
      )
    return tokens[:, prefix:].reshape(b, h, w, d)

  return reshape


def channels_last(a: jax.Array) -> jax.Array:
  """A `reshape` for channels-first layers (Equinox/PyTorch style (B, C, h, w))."""
  return jnp.moveaxis(a, 1, -1)
