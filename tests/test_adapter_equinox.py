"""Equinox models (one example in, as Equinox writes them): layers chosen by selector
functions; the same maps as the linen version of the same weights; no model edits."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gradcam_jax as gcj
from tests import models
from tests.models import assert_close

eqx = pytest.importorskip("equinox")


class EqxNet(eqx.Module):
  convs: list
  fc1: eqx.nn.Linear
  fc2: eqx.nn.Linear

  def __init__(self, key):
    k = jax.random.split(key, 4)
    self.convs = [eqx.nn.Conv2d(3, 4, 3, padding=1, key=k[0]),
                  eqx.nn.Conv2d(4, 6, 3, padding=1, key=k[1])]
    self.fc1 = eqx.nn.Linear(6 * 8 * 8, 8, key=k[2])
    self.fc2 = eqx.nn.Linear(8, 3, key=k[3])

  def __call__(self, x):  # one (H, W, C) image
    x = jnp.transpose(x, (2, 0, 1))
    for conv in self.convs:
      x = jax.nn.relu(conv(x))
    x = jnp.transpose(x, (1, 2, 0)).reshape(-1)  # flatten in HWC order, like linen
    return self.fc2(jax.nn.relu(self.fc1(x)))


class LinenNet(nn.Module):
  @nn.compact
  def __call__(self, x):
    x = models.ConvReLU(4, name="c0")(x)
    x = models.ConvReLU(6, name="c1")(x)
    x = nn.relu(nn.Dense(8, name="fc1")(x.reshape(x.shape[0], -1)))
    return nn.Dense(3, name="fc2")(x)


def _linen_variables(m):
  conv = lambda c: {"kernel": jnp.transpose(c.weight, (2, 3, 1, 0)), "bias": c.bias[:, 0, 0]}
  dense = lambda d: {"kernel": d.weight.T, "bias": d.bias}
  return {"params": {"c0": {"conv": conv(m.convs[0])}, "c1": {"conv": conv(m.convs[1])},
                     "fc1": dense(m.fc1), "fc2": dense(m.fc2)}}


@pytest.fixture(scope="module")
def net():
  return EqxNet(jax.random.key(0))


def test_equinox_equals_linen(net):
  x, t = models.images(3), jnp.array([0, 2, 1])
  ours = jax.jit(gcj.guided_gradcam(net, layer=lambda m: m.convs[1],
                                    reshape=gcj.channels_last))(x, t)
  ref = jax.jit(gcj.guided_gradcam(LinenNet().apply, _linen_variables(net),
                                   layer="c1/conv"))(x, t)  # pre-ReLU, as eqx
  for field in ("cam", "cam_raw", "guided", "guided_gradcam", "logits"):
    assert_close(getattr(ours, field), getattr(ref, field), atol=1e-5)
  for method in ("layercam", "scorecam", "ablationcam"):
    a = gcj.cam(net, method=method, layer=lambda m: m.convs[1], reshape=gcj.channels_last,
                batch_size=2)(x, t)
    b = gcj.cam(LinenNet().apply, _linen_variables(net), method=method, layer="c1/conv",
                batch_size=2)(x, t)
    assert_close(a.cam_raw, b.cam_raw, atol=1e-5)
  both = gcj.gradcam(net, layer=[lambda m: m.convs[0], lambda m: m.convs[1]],
                     reshape=gcj.channels_last)(x, t)
  assert both.cam.shape == (3, 8, 8)


def test_equinox_errors_and_no_mutation(net):
  x = models.images(2)
  before = jax.tree_util.tree_map(np.array, eqx.filter(net, eqx.is_array))
  with pytest.raises(gcj.LayerNotFoundError, match="selector"):
    gcj.gradcam(net)(x)
  with pytest.raises(gcj.LayerSpecError, match="selector function"):  # a malformed spec
    gcj.gradcam(net, layer="convs/1")(x)
  gcj.gradcam(net, layer=lambda m: m.convs[1], reshape=gcj.channels_last)(x)
  jax.tree_util.tree_map(np.testing.assert_array_equal, eqx.filter(net, eqx.is_array),
                         before)
  assert type(net.convs[1]) is eqx.nn.Conv2d


def test_a_model_that_needs_a_key_gets_equinox_advice_that_works():
  """The advice was linen's (functools.partial(model.apply, train=False)) before."""
  class Dropped(eqx.Module):
    conv: eqx.nn.Conv2d
    drop: eqx.nn.Dropout
    fc: eqx.nn.Linear

    def __init__(self, key):
      k1, k2 = jax.random.split(key)
      self.conv = eqx.nn.Conv2d(3, 4, 3, padding=1, key=k1)
      self.drop = eqx.nn.Dropout(0.5)
      self.fc = eqx.nn.Linear(4, 3, key=k2)

    def __call__(self, x, *, key):
      return self.fc(self.drop(jax.nn.relu(self.conv(x)), key=key).mean((1, 2)))

  model, x = Dropped(jax.random.key(0)), jnp.ones((2, 3, 8, 8))
  with pytest.raises(gcj.ModelError, match=r"eqx\.Partial\(eqx\.nn\.inference_mode"
                     ) as raised:
    gcj.guided_backprop(model, image_layout="NCHW")(x)
  assert "model.apply" not in str(raised.value)
  bound = eqx.Partial(eqx.nn.inference_mode(model), key=None)  # as the message says
  out = gcj.guided_gradcam(bound, layer=lambda p: p.func.conv, image_layout="NCHW")(x)
  plain = jax.vmap(lambda xi: eqx.nn.inference_mode(model)(xi, key=None))(x)
  assert_close(out.logits, plain, atol=1e-6)


def test_a_module_holding_a_jitted_function_under_gcj_jit():
  """A field holding a jitted activation (equimo's layers keep theirs so) made
  gcj.jit fail: the whole module, functions and all, was passed as the jitted
  params. Now the bound params are the module's arrays only."""
  class WithAct(eqx.Module):
    conv: eqx.nn.Conv2d
    act: object
    fc: eqx.nn.Linear

    def __init__(self, key):
      k1, k2 = jax.random.split(key)
      self.conv = eqx.nn.Conv2d(3, 4, 3, padding=1, key=k1)
      self.act = jax.jit(jax.nn.relu)
      self.fc = eqx.nn.Linear(4, 3, key=k2)

    def __call__(self, x):
      return self.fc(self.act(self.conv(x)).mean((1, 2)))

  model, x = WithAct(jax.random.key(0)), models.images(2)
  x = jnp.transpose(x, (0, 3, 1, 2))
  explain = gcj.gradcam(model, layer=lambda m: m.conv, image_layout="NCHW")
  assert_close(gcj.jit(explain)(x).cam_raw, explain(x).cam_raw, atol=1e-6)
  plain = eqx.tree_at(lambda m: m.act, model, lambda a: a)  # no ReLU left
  with pytest.raises(gcj.NoReLUError, match=r"Equinox module WithAct \(in Partial\)"):
    gcj.guided_backprop(eqx.Partial(plain), image_layout="NCHW")(x)
