"""Tiny models of signals, volumes and clips for the command
(``--model tests.media_models:signal`` and so on): what a user's factory returns."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from gradcam_jax import zoo


class Net(nn.Module):
  """Two conv-ReLU blocks of any rank, a global average pool and a Dense head."""
  rank: int
  classes: int = 3

  @nn.compact
  def __call__(self, x):
    k = (3,) * self.rank
    x = nn.relu(nn.Conv(4, k, name="conv1")(x))
    x = nn.relu(nn.Conv(5, k, name="conv2")(x))
    return nn.Dense(self.classes, name="fc")(x.mean(axis=tuple(range(1, self.rank + 1))))


def _model(name, media, size, channels, preprocess, slow: float = 0.0):
  module = Net(len(size))
  variables = module.init(jax.random.key(len(size) + channels),
                          jnp.zeros((1, *size, channels)))

  def prep(x):
    if slow:  # a job that lasts long enough to be caught running
      import time
      time.sleep(slow)
    return preprocess(x)

  return zoo.ZooModel(name, module, module.apply, variables, "conv2", prep,
                      ["low", "mid", "high"], size, about=f"a tiny {media} model",
                      media=media, channels=channels)


def signal():
  return _model("signal", "signal", (32,), 2, lambda x: np.asarray(x, np.float32))


def volume():
  return _model("volume", "volume", (8, 8, 8), 1,
                lambda x: np.asarray(x, np.float32) / 100)


def slow_volume():
  """volume() with a preprocessing of 0.3 s a batch: a job that can be caught running."""
  return _model("volume", "volume", (8, 8, 8), 1,
                lambda x: np.asarray(x, np.float32) / 100, slow=0.3)


def video():
  return _model("video", "video", (4, 16, 16), 3,
                lambda x: np.asarray(x, np.float32) / 255)


def bad_media():
  return signal()._replace(media="audio")


def bad_size():
  return signal()._replace(input_size=(8, 8))
