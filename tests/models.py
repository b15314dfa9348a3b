"""Tiny models with answers that can be worked out by hand."""

from __future__ import annotations

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np


class ConvReLU(nn.Module):
  """A conv followed by a ReLU, so the module's output is post-activation."""
  features: int
  kernel: tuple = (3, 3)
  relu: callable = nn.relu

  @nn.compact
  def __call__(self, x):
    return self.relu(nn.Conv(self.features, self.kernel, name="conv")(x))


class GapNet(nn.Module):
  """conv-relu blocks, then global average pooling and one Dense: a CAM network."""
  classes: int = 3

  @nn.compact
  def __call__(self, x):
    x = ConvReLU(4, name="block1")(x)
    x = ConvReLU(6, name="block2")(x)
    return nn.Dense(self.classes, name="fc")(x.mean(axis=(1, 2)))


class VggNet(nn.Module):
  """VGG-like: conv blocks with pooling, then a dense head with a ReLU (not GAP)."""
  classes: int = 4
  relu: callable = nn.relu

  @nn.compact
  def __call__(self, x):
    x = ConvReLU(4, relu=self.relu, name="conv1")(x)
    x = nn.max_pool(x, (2, 2), (2, 2))
    x = ConvReLU(6, relu=self.relu, name="conv2")(x)
    x = x.reshape(x.shape[0], -1)
    x = self.relu(nn.Dense(8, name="fc1")(x))
    return nn.Dense(self.classes, name="fc2")(x)


class BNNet(nn.Module):
  """Conv, BatchNorm (running statistics passed through `train`), ReLU, head."""

  @nn.compact
  def __call__(self, x, train: bool = False):
    x = nn.Conv(4, (3, 3), name="conv")(x)
    x = nn.BatchNorm(use_running_average=not train, name="bn")(x)
    x = nn.relu(x)
    return nn.Dense(3, name="fc")(x.mean(axis=(1, 2)))


class SetupNet(nn.Module):
  """Layers in a `setup` list, a remat block, and a module called twice."""

  def setup(self):
    self.layers = [nn.Conv(4, (3, 3)), nn.Conv(4, (3, 3))]
    self.shared = nn.Conv(4, (1, 1))
    self.remat_block = nn.remat(ConvReLU)(4)
    self.fc = nn.Dense(3)

  def __call__(self, x):
    for layer in self.layers:
      x = nn.relu(layer(x))
    x = nn.relu(self.shared(x))
    x = self.remat_block(x)
    x = nn.relu(self.shared(x))
    return self.fc(x.mean(axis=(1, 2)))


class NoReLUNet(nn.Module):
  """No ReLU anywhere: guided backprop must equal the plain gradient."""

  @nn.compact
  def __call__(self, x):
    x = jnp.tanh(nn.Conv(4, (3, 3), name="conv")(x))
    return nn.Dense(3, name="fc")(x.reshape(x.shape[0], -1))


@functools.lru_cache(maxsize=None)
def init(model_cls, shape=(1, 8, 8, 3), seed=0, **kwargs):
  model = model_cls(**kwargs)
  variables = model.init(jax.random.key(seed), jnp.ones(shape))
  return model, variables


def images(batch=4, size=8, channels=3, seed=1):
  return jax.random.normal(jax.random.key(seed), (batch, size, size, channels))


def assert_close(a, b, atol=1e-6, rtol=1e-6):
  np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=atol, rtol=rtol)


def eqx_gap_net(key, features: int = 4, classes: int = 3):
  """An Equinox CNN as Equinox writes them (one (C, H, W) image in): a 3x3 conv of
  3 -> `features` channels, ReLU, global average pool, Linear."""
  import equinox as eqx

  class EqxGapNet(eqx.Module):
    conv: eqx.nn.Conv2d
    fc: eqx.nn.Linear

    def __init__(self, key):
      k1, k2 = jax.random.split(key)
      self.conv = eqx.nn.Conv2d(3, features, 3, padding=1, key=k1)
      self.fc = eqx.nn.Linear(features, classes, key=k2)

    def __call__(self, x):
      return self.fc(jax.nn.relu(self.conv(x)).mean((1, 2)))

  return EqxGapNet(key)
