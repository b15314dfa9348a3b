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


# -- a stack of blocks under nnx.scan (Flax's pattern for deep stacks) ---------------

class _Block(nnx.Module):
  def __init__(self, rngs):
    self.conv = nnx.Conv(4, 4, (3, 3), rngs=rngs)

  def __call__(self, x):
    return nnx.relu(self.conv(x))


class _ScanNet(nnx.Module):
  def __init__(self, n, rngs):
    self.stem = nnx.Conv(3, 4, (3, 3), rngs=rngs)

    @nnx.split_rngs(splits=n)
    @nnx.vmap(in_axes=(0,), out_axes=0)
    def make(rngs):
      return _Block(rngs)

    self.blocks = make(rngs)
    self.fc = nnx.Linear(4, 3, rngs=rngs)

  def __call__(self, x):
    x = nnx.relu(self.stem(x))

    @nnx.scan(in_axes=(nnx.Carry, 0), out_axes=nnx.Carry)
    def body(x, block):
      return block(x)

    return self.fc(body(x, self.blocks).mean((1, 2)))


def _unrolled(model, relu):
  """The scanned model written out by hand from its arrays: (stem, rest) with
  ``rest(A)`` the model after the stem's convolution."""
  conv = lambda x, k, b: jax.lax.conv_general_dilated(  # noqa: E731
    x, k, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")) + b[None, None, None]
  stem = lambda x: conv(x, model.stem.kernel[...], model.stem.bias[...])  # noqa: E731

  def rest(a):
    x = relu(a)
    for k in range(model.blocks.conv.kernel[...].shape[0]):
      x = relu(conv(x, model.blocks.conv.kernel[...][k], model.blocks.conv.bias[...][k]))
    return x.mean((1, 2)) @ model.fc.kernel[...] + model.fc.bias[...][None]
  return stem, rest


def test_a_scanned_stack_is_explained_outside_the_stack():
  """It failed at the first step before: listing the layers put plain-Python taps
  into nnx.scan (reported as ImageError), even for guided backprop."""
  model, x, t = _ScanNet(3, nnx.Rngs(0)), models.images(2), jnp.array([2, 0])
  stem, rest = _unrolled(model, jax.nn.relu)
  score = lambda a: jnp.take_along_axis(rest(a), t[:, None], 1).sum()  # noqa: E731
  a = stem(x)
  want = jax.nn.relu(jnp.einsum("bhwk,bk->bhw", a, jax.grad(score)(a).mean((1, 2))))
  # layers inside the stack: tests/test_scan_layers.py
  assert_close(gcj.jit(gcj.gradcam(model, layer="stem"))(x, t).cam_raw, want, atol=1e-5)
  g_stem, g_rest = _unrolled(model, gcj.guided_relu)
  guided = jax.grad(lambda x: jnp.take_along_axis(g_rest(g_stem(x)), t[:, None], 1).sum())
  assert_close(gcj.guided_backprop(model)(x, t).guided, guided(x), atol=1e-5)
