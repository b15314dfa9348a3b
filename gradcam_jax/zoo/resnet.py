"""ResNet-50 in Flax linen, NHWC, layer for layer torchvision's ``resnet50`` (v1.5:
the stride sits on the 3x3 convolution).

Paths follow torchvision's names: ``conv1``, ``bn1``, ``layer1`` .. ``layer4`` with
blocks ``"0"``, ``"1"``, ... inside (``layer="layer4/2"`` is the last block,
``"layer4"`` the whole stage; both outputs are post-ReLU), ``fc``.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from gradcam_jax.zoo._modules import MaxPool, ReLU

__all__ = ["ResNet50", "init_resnet50"]

STAGES = ((64, 3, 1), (128, 4, 2), (256, 6, 2), (512, 3, 2))


def _conv(features, kernel, stride, name, dtype):
  pad = kernel // 2
  return nn.Conv(
    features,
    (kernel, kernel),
    (stride, stride),
    padding=((pad, pad), (pad, pad)),
    use_bias=False,
    dtype=dtype,
    name=name,
  )


def _bn(name, dtype):
  return nn.BatchNorm(
    use_running_average=True, momentum=0.9, epsilon=1e-5, dtype=dtype, name=name
  )


class Bottleneck(nn.Module):
  width: int
  stride: int = 1
  downsample: bool = False
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x):
    d = self.dtype
    y = ReLU(name="relu1")(_bn("bn1", d)(_conv(self.width, 1, 1, "conv1", d)(x)))
    y = ReLU(name="relu2")(_bn("bn2", d)(_conv(self.width, 3, self.stride, "conv2", d)(y)))
    y = _bn("bn3", d)(_conv(self.width * 4, 1, 1, "conv3", d)(y))
    if self.downsample:
      x = _bn("downsample_1", d)(
        _conv(self.width * 4, 1, self.stride, "downsample_0", d)(x)
      )
    return ReLU(name="relu3")(y + x)


class Stage(nn.Module):
  width: int
  blocks: int
  stride: int
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x):
    for i in range(self.blocks):
      x = Bottleneck(
        self.width, self.stride if i == 0 else 1, i == 0, self.dtype, name=str(i)
      )(x)
    return x


class ResNet50(nn.Module):
  """torchvision ``resnet50`` in inference mode (BatchNorm running statistics)."""

  num_classes: int = 1000
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x):
    d = self.dtype
    x = ReLU(name="relu")(_bn("bn1", d)(_conv(64, 7, 2, "conv1", d)(x)))
    x = MaxPool(3, 2, ((1, 1), (1, 1)), name="maxpool")(x)
    for i, (width, blocks, stride) in enumerate(STAGES, start=1):
      x = Stage(width, blocks, stride, d, name=f"layer{i}")(x)
    x = jnp.mean(x, axis=(1, 2))
    return nn.Dense(self.num_classes, dtype=d, name="fc")(x)


def init_resnet50(key=None, num_classes: int = 1000, size: int = 224):
  """Random ResNet-50 variables (for tests and benchmarks)."""
  model = ResNet50(num_classes)
  key = jax.random.key(0) if key is None else key
  return model, jax.jit(model.init)(key, jnp.zeros((1, size, size, 3)))
