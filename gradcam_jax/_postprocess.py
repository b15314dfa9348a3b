"""Post-processing of class activation maps: resize, then normalise (the ReLU before
them belongs to each method's map, applied by the explainers).

Each step is a small pure jnp function on a batch of maps (B, h, w), so it runs
inside the same compiled program as the explanation.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

__all__ = ["upsample", "normalize"]


def upsample(maps: jax.Array, size: tuple[int, int]) -> jax.Array:
  """Bilinear resize of (B, h, w) maps to (B, H, W).

  Matches ``cv2.resize(..., interpolation=cv2.INTER_LINEAR)`` (half-pixel centres,
  no antialiasing) to float32 precision.
  """
  b = maps.shape[0]
  return jax.image.resize(maps, (b, *size), method="bilinear", antialias=False)


def normalize(maps: jax.Array, eps: float = 1e-7) -> jax.Array:
  """Per-image min-max normalisation of (B, H, W) maps to [0, 1] (over axes 1 and 2:
  (B, H, W, K) stacks are normalised per image and channel).

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
  lo = jnp.min(maps, axis=(1, 2), keepdims=True)
  hi = jnp.max(maps, axis=(1, 2), keepdims=True)
  span = hi - lo
  ok = span > eps
  scaled = (maps - lo) / jnp.where(ok, span, 1)
  # XLA may divide as a multiply by the reciprocal: pin the maximum to exactly 1
  scaled = jnp.where(maps == hi, 1, scaled)
  return jnp.where(ok, scaled, 0).astype(maps.dtype)
