"""Flax NNX models: the same explanation as the linen version of the same weights, and
the user's module is never modified, also when tracing fails."""


import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import gradcam_jax as gcj
from tests import models
from tests.models import assert_close


class Block(nnx.Module):
  def __init__(self, cin, cout, rngs):
    self.conv = nnx.Conv(cin, cout, (3, 3), rngs=rngs)

  def __call__(self, x):
    return nnx.relu(self.conv(x))


class Net(nnx.Module):
  def __init__(self, rngs):
    self.blocks = nnx.List([Block(3, 4, rngs), Block(4, 6, rngs)])
    self.fc1 = nnx.Linear(6 * 8 * 8, 8, rngs=rngs)
    self.fc2 = nnx.Linear(8, 3, rngs=rngs)

  def __call__(self, x):
    for b in self.blocks:
      x = b(x)
    return self.fc2(nnx.relu(self.fc1(x.reshape(x.shape[0], -1))))


class LinenNet(nn.Module):
  @nn.compact
  def __call__(self, x):
    x = models.ConvReLU(4, name="blocks_0")(x)
    x = models.ConvReLU(6, name="blocks_1")(x)
    return nn.Dense(3, name="fc2")(nn.relu(nn.Dense(8, name="fc1")(x.reshape(x.shape[0], -1))))


def _linen_variables(net):
  conv = lambda c: {"kernel": c.kernel[...], "bias": c.bias[...]}
  dense = lambda d: {"kernel": d.kernel[...], "bias": d.bias[...]}
  return {"params": {"blocks_0": {"conv": conv(net.blocks[0].conv)},
                     "blocks_1": {"conv": conv(net.blocks[1].conv)},
                     "fc1": dense(net.fc1), "fc2": dense(net.fc2)}}


@pytest.fixture(scope="module")
def net():
  return Net(nnx.Rngs(0))


def test_nnx_equals_linen(net):
  x, t = models.images(3), jnp.array([0, 2, 1])
  ours = jax.jit(gcj.guided_gradcam(net, layer=("blocks", 1)))(x, t)
  ref = jax.jit(gcj.guided_gradcam(LinenNet().apply, _linen_variables(net),
                                   layer="blocks_1"))(x, t)
  for field in ("cam", "cam_raw", "guided", "guided_gradcam", "logits"):
    assert_close(getattr(ours, field), getattr(ref, field), atol=1e-6)
  for method in ("gradcam++", "scorecam", "ablationcam"):
    a = gcj.cam(net, method=method, layer="blocks/1", batch_size=3)(x, t)
    b = gcj.cam(LinenNet().apply, _linen_variables(net), method=method, layer="blocks_1",
                batch_size=3)(x, t)
    assert_close(a.cam_raw, b.cam_raw, atol=1e-6)


def test_nnx_api_forms_and_paths(net):
  x = models.images(2)
  graphdef, state = nnx.split(net)
  a = gcj.gradcam(net, layer=("blocks", 1, "conv"))(x)
  b = gcj.gradcam((graphdef, state), layer="blocks/1/conv")(x)
  c = jax.jit(gcj.gradcam(graphdef, layer="blocks/1/conv"))(state, x)
  np.testing.assert_array_equal(a.cam_raw, b.cam_raw)
  assert_close(a.cam_raw, c.cam_raw)
  auto = gcj.gradcam(net)(x)  # the last spatial activation: blocks/1
  assert_close(auto.cam_raw, gcj.gradcam(net, layer=("blocks", 1))(x).cam_raw)
  with pytest.raises(gcj.LayerNotFoundError, match="blocks/1/conv"):
    gcj.gradcam(net, layer=("blocks", 7))(x)


def test_user_module_is_not_modified(net):
  before_state = jax.tree_util.tree_map(np.array, nnx.state(net))
  before = (type(net), type(net.blocks[1]), type(net.blocks[1].conv))
  x = models.images(2)
  gcj.guided_gradcam(net, layer=("blocks", 1))(x)

  def failing_target(output, targets):
    raise RuntimeError("boom")

  with pytest.raises(RuntimeError, match="boom"):
    gcj.gradcam(net, layer=("blocks", 1), target=failing_target)(x)
  assert (type(net), type(net.blocks[1]), type(net.blocks[1].conv)) == before
  jax.tree_util.tree_map(np.testing.assert_array_equal, nnx.state(net), before_state)
