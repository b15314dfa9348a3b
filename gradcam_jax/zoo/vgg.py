"""VGG16 in Flax linen, NHWC, layer for layer torchvision's ``vgg16``.

Module names follow torchvision's indices so weights map one to one and layers are
addressed as users know them: ``features_28`` is the last convolution (pre-ReLU)
and ``features_29`` the ReLU after it (the Keras ``block5_conv3`` output, the
default Grad-CAM layer). ``classifier_0/3/6`` are the dense layers.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from gradcam_jax.zoo._modules import MaxPool, ReLU, adaptive_avg_pool

__all__ = ["VGG16", "VGG16_CONFIG", "KERAS_CONV_NAMES"]

# torchvision's cfg "D": channels of each conv, "M" for a max pool.
VGG16_CONFIG = (
  64,
  64,
  "M",
  128,
  128,
  "M",
  256,
  256,
  256,
  "M",
  512,
  512,
  512,
  "M",
  512,
  512,
  512,
  "M",
)

# Keras VGG16 layer name of each torchvision conv index.
KERAS_CONV_NAMES = {
  0: "block1_conv1",
  2: "block1_conv2",
  5: "block2_conv1",
  7: "block2_conv2",
  10: "block3_conv1",
  12: "block3_conv2",
  14: "block3_conv3",
  17: "block4_conv1",
  19: "block4_conv2",
  21: "block4_conv3",
  24: "block5_conv1",
  26: "block5_conv2",
  28: "block5_conv3",
}


class ConvReLU(nn.Module):
  """A Keras ``Conv2D(activation="relu")``: one module, post-ReLU output."""

  features: int
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x):
    return nn.relu(
      nn.Conv(self.features, (3, 3), padding=1, dtype=self.dtype, name="conv")(x)
    )


class VGG16(nn.Module):
  """torchvision ``vgg16`` (no batch norm): 13 convs, 3 dense layers, dropout off.

  Attributes:
    num_classes: size of the last dense layer.
    naming: ``"torchvision"`` (``features_28`` conv, ``features_29`` its ReLU,
      ``classifier_0/3/6``) or ``"keras"`` (``block5_conv3`` = conv + ReLU as in
      Keras, ``fc1``, ``fc2``, ``predictions``). Same computation either way.
    dtype: computation dtype (params stay float32).
  """

  num_classes: int = 1000
  naming: str = "torchvision"
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x):
    keras = self.naming == "keras"
    index, block, conv = 0, 1, 1
    for v in VGG16_CONFIG:
      if v == "M":
        x = MaxPool(2, name=f"block{block}_pool" if keras else f"features_{index}")(x)
        index, block, conv = index + 1, block + 1, 1
      else:
        if keras:
          x = ConvReLU(v, self.dtype, name=f"block{block}_conv{conv}")(x)
        else:
          x = nn.Conv(v, (3, 3), padding=1, dtype=self.dtype, name=f"features_{index}")(x)
          x = ReLU(name=f"features_{index + 1}")(x)
        index, conv = index + 2, conv + 1
    x = adaptive_avg_pool(x, (7, 7))
    # torchvision flattens NCHW: keep its order so classifier_0 weights carry over
    x = jnp.transpose(x, (0, 3, 1, 2)).reshape(x.shape[0], -1)
    names = (
      ("fc1", "fc2", "predictions")
      if keras
      else ("classifier_0", "classifier_3", "classifier_6")
    )
    x = ReLU(name="fc1_relu" if keras else "classifier_1")(
      nn.Dense(4096, dtype=self.dtype, name=names[0])(x)
    )
    x = ReLU(name="fc2_relu" if keras else "classifier_4")(
      nn.Dense(4096, dtype=self.dtype, name=names[1])(x)
    )
    return nn.Dense(self.num_classes, dtype=self.dtype, name=names[2])(x)


def init_vgg16(key=None, num_classes: int = 1000, size: int = 224):
  """Random VGG16 variables (for tests and benchmarks)."""
  model = VGG16(num_classes)
  key = jax.random.key(0) if key is None else key
  return model, jax.jit(model.init)(key, jnp.zeros((1, size, size, 3)))
