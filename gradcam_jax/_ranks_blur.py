"""Helpers on batches of maps shared by the metrics and the sanity checks: pixel
ranks and Gaussian kernels."""

from __future__ import annotations

import jax
import jax.numpy as jnp

__all__ = ["ranks", "gaussian_kernel"]


def ranks(x: jax.Array) -> jax.Array:
  """The rank of each entry along the last axis, 0 for the smallest (int32); ties
  are broken by position."""
  order = jnp.argsort(x, axis=-1, stable=True)
  return jnp.argsort(order, axis=-1, stable=True)


def gaussian_kernel(sigma: float, radius: int) -> jax.Array:
  """A normalised 1-D Gaussian kernel of ``2 * radius + 1`` taps (float32)."""
  t = jnp.arange(-radius, radius + 1, dtype=jnp.float32)
  k = jnp.exp(-0.5 * (t / sigma) ** 2)
  return k / k.sum()
