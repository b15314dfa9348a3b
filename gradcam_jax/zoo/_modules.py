"""Parameter-free layers as modules, so that their outputs have paths too.

Flax applies ``nn.relu`` and ``nn.max_pool`` as plain functions, which no method
interceptor sees. The zoo wraps them in these modules so a post-ReLU activation
(the Grad-CAM paper's convention, and Keras' ``block5_conv3``) is a layer path.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp


class ReLU(nn.Module):
  """``nn.relu`` as a module."""

  @nn.compact
  def __call__(self, x):
    return nn.relu(x)


class MaxPool(nn.Module):
  """``nn.max_pool`` as a module (window = stride = `size`, or as given)."""

  size: int = 2
  stride: int | None = None
  padding: str | tuple = "VALID"

  @nn.compact
  def __call__(self, x):
    s = self.stride or self.size
    return nn.max_pool(x, (self.size, self.size), (s, s), padding=self.padding)


def adaptive_avg_pool(x: jax.Array, size: tuple[int, int]) -> jax.Array:
  """PyTorch's ``AdaptiveAvgPool2d`` on NHWC: cell i spans [floor(i*H/n), ceil((i+1)*H/n))."""
  _, h, w, _ = x.shape
  oh, ow = size
  if (h, w) == (oh, ow):
    return x
  rows = []
  for i in range(oh):
    r0, r1 = (i * h) // oh, -((-(i + 1) * h) // oh)
    cols = []
    for j in range(ow):
      c0, c1 = (j * w) // ow, -((-(j + 1) * w) // ow)
      cols.append(jnp.mean(x[:, r0:r1, c0:c1, :], axis=(1, 2)))
    rows.append(jnp.stack(cols, axis=1))
  return jnp.stack(rows, axis=1)
