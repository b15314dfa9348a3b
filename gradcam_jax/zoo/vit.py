"""A tiny Vision Transformer in Flax linen, for tests, examples and the ViT seam.

Patch embedding (a strided conv), a class token, learned position embeddings,
pre-norm blocks of multi-head attention and a ReLU MLP (ReLU so guided backprop has
something to guide), and a linear head on the class token. Explain a block's
tokens with ``reshape=gcj.tokens_to_grid()``: ``layer="blocks_1"`` is the last
block's output, (B, 1 + N, D).
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

__all__ = ["TinyViT", "Block"]


class Block(nn.Module):
  dim: int
  heads: int
  mlp: int

  @nn.compact
  def __call__(self, x):
    x = x + nn.MultiHeadDotProductAttention(num_heads=self.heads, name="attn")(
      nn.LayerNorm(name="norm1")(x)
    )
    h = nn.relu(nn.Dense(self.mlp, name="fc1")(nn.LayerNorm(name="norm2")(x)))
    return x + nn.Dense(self.dim, name="fc2")(h)


class TinyViT(nn.Module):
  patch: int = 4
  dim: int = 32
  depth: int = 2
  heads: int = 2
  mlp: int = 64
  num_classes: int = 10

  @nn.compact
  def __call__(self, images):
    x = nn.Conv(self.dim, (self.patch, self.patch), strides=self.patch, name="patch_embed")(
      images
    )
    b, h, w, d = x.shape
    x = x.reshape(b, h * w, d)
    cls = self.param("cls_token", nn.initializers.normal(0.02), (1, 1, d))
    x = jnp.concatenate([jnp.broadcast_to(cls, (b, 1, d)), x], axis=1)
    x = x + self.param("pos_embed", nn.initializers.normal(0.02), (1, h * w + 1, d))
    for i in range(self.depth):
      x = Block(self.dim, self.heads, self.mlp, name=f"blocks_{i}")(x)
    return nn.Dense(self.num_classes, name="head")(nn.LayerNorm(name="norm")(x)[:, 0])


def init_tiny_vit(key=None, size: int = 32, **kwargs):
  model = TinyViT(**kwargs)
  key = jax.random.key(0) if key is None else key
  return model, model.init(key, jnp.zeros((1, size, size, 3)))
