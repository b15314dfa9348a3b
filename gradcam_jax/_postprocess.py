"""Post-processing of class activation maps: resize, then normalise (the ReLU before
them belongs to each method's map, applied by the explainers).

Each step is a small pure jnp function on a batch of maps (B, h, w) (or (B, w),
(B, d, h, w): any spatial rank), so it runs inside the same compiled program as the
explanation.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

__all__ = ["upsample", "normalize"]


def upsample(maps: jax.Array, size: tuple[int, ...]) -> jax.Array:
  """Linear resize of ``(B, *s)`` maps to ``(B, *size)``: bilinear for (B, h, w) images'
  maps, linear for signals' (B, w), trilinear for volumes' (B, d, h, w).

  Separable, with half-pixel centres and no antialiasing: in 2-D it matches
  ``cv2.resize(..., interpolation=cv2.INTER_LINEAR)`` to float32 precision, and each
  axis is that same interpolation in any rank.
  """
  b = maps.shape[0]
  return jax.image.resize(maps, (b, *size), method="linear", antialias=False)


def normalize(
  maps: jax.Array, eps: float = 1e-7, axes: tuple[int, ...] = (1, 2)
) -> jax.Array:
  """Per-image min-max normalisation of (B, H, W) maps to [0, 1] over `axes` (axes 1
  and 2 by default: (B, H, W, K) stacks are normalised per image and channel; pass
  ``axes=(1,)`` for signals' (B, L) maps, ``(1, 2, 3)`` for volumes' (B, D, H, W)).

  A map whose range (max - min) is at most `eps` (an all-zero map, say) becomes all
  zero, never NaN; any other map has minimum 0 and maximum exactly 1.

  Example:
    >>> import jax.numpy as jnp, gradcam_jax as gcj
    >>> gcj.normalize(jnp.array([[[0.0, 2.0], [1.0, 4.0]], [[0.0, 0.0], [0.0, 0.0]]]))
    Array([[[0.  , 0.5 ],
            [0.25, 1.  ]],
    <BLANKLINE>
           [[0.  , 0.  ],
            [0.  , 0.  ]]], dtype=float32)
  """
  lo = jnp.min(maps, axis=axes, keepdims=True)
  hi = jnp.max(maps, axis=axes, keepdims=True)
  span = hi - lo
  ok = span > eps
  scaled = (maps - lo) / jnp.where(ok, span, 1)
  # XLA may divide as a multiply by the reciprocal: pin the maximum to exactly 1
  scaled = jnp.where(maps == hi, 1, scaled)
  return jnp.where(ok, scaled, 0).astype(maps.dtype)
