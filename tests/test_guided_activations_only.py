"""Guided backprop guides the ReLU activations and nothing else: the variance clamps
inside normalisation layers (max(v, 0) of a reduction) and relu6/hard-swish keep their
plain gradient, in linen, NNX, Equinox and Keras models. Each model is compared with
a twin whose activations call gcj.guided_relu explicitly: the twin's plain gradient
is guided backprop over the activations alone, by construction."""

import functools
import os

os.environ.setdefault("KERAS_BACKEND", "jax")

import flax.linen as nn
import jax
import jax.numpy as jnp
import pytest
from flax import nnx

import gradcam_jax as gcj
from tests.models import assert_close

eqx = pytest.importorskip("equinox")
keras = pytest.importorskip("keras")

X = jax.random.normal(jax.random.key(0), (2, 8, 8, 3))
T = jnp.array([1, 0])
NORMS = ["layer", "group", "rms", "batch"]
# norms whose statistics are clamped with max(v, 0) in each framework (RMSNorm uses
# the mean square, which needs no clamp; BatchNorm in inference mode reads its
# running statistics)
CLAMPED = {"linen": {"layer", "group"}, "nnx": {"layer", "group"},
           "equinox": {"layer", "group"}}


def _score_grad(fn, x=X, t=T):
  """d/dx of sum_b fn(x)[b, t_b], the plain gradient."""
  return jax.grad(lambda x: jnp.take_along_axis(fn(x), t[:, None], 1).sum())(x)


def _check(explain_relu, twin, report, norm, framework):
  """guided_backprop of the ReLU model == the twin's plain gradient; the report
  counts the two ReLUs, and one clamp per clamping norm."""
  assert_close(explain_relu(X, T).guided, _score_grad(twin), atol=1e-5)
  clamps = 2 if norm in CLAMPED[framework] else 0
  assert report.replaced == 2, (framework, norm, report)
  assert report.left.get("statistic clamp", 0) == clamps, (framework, norm, report)


# -- linen ----------------------------------------------------------------------------

class LinenNet(nn.Module):
  norm: str
  act: callable = nn.relu

  @nn.compact
  def __call__(self, x):
    for i in range(2):
      x = nn.Conv(4, (3, 3), name=f"conv{i}")(x)
      x = {"layer": lambda: nn.LayerNorm(name=f"n{i}"),
           "group": lambda: nn.GroupNorm(num_groups=2, name=f"n{i}"),
           "rms": lambda: nn.RMSNorm(name=f"n{i}"),
           "batch": lambda: nn.BatchNorm(use_running_average=True, name=f"n{i}")}[
               self.norm]()(x)
      x = self.act(x)
    return nn.Dense(3, name="fc")(x.mean((1, 2)))


@pytest.mark.parametrize("norm", NORMS)
def test_linen_norms_keep_their_clamps_plain(norm):
  variables = LinenNet(norm).init(jax.random.key(1), X)
  if norm == "batch":  # running statistics that are not the identity
    stats = jax.tree_util.tree_map(lambda v: v + 0.3, variables["batch_stats"])
    variables = {**variables, "batch_stats": stats}
  explain = gcj.guided_backprop(LinenNet(norm).apply, variables)
  report = gcj.guided_report(LinenNet(norm).apply, variables, X)
  twin = functools.partial(LinenNet(norm, act=gcj.guided_relu).apply, variables)
  _check(explain, twin, report, norm, "linen")


@pytest.mark.parametrize("norm", ["layer", "group"])
def test_a_model_without_relu_has_nothing_to_guide(norm):
  """GELU + a normalisation (a ConvNeXt block, a ViT): no ReLU. The variance clamp
  was guided before (reported as 1 ReLU), and the result was far from the plain
  gradient."""
  model = LinenNet(norm, act=nn.gelu)
  variables = model.init(jax.random.key(1), X)
  with pytest.raises(gcj.NoReLUError, match=r"guided\(LinenNet.apply\) found no ReLU"):
    gcj.guided_backprop(model.apply, variables)(X, T)
  plain = functools.partial(model.apply, variables)
  lenient = functools.partial(gcj.guided(model.apply, require_relu=False), variables)
  assert_close(_score_grad(lenient), _score_grad(plain), atol=1e-6)
  report = gcj.guided_report(model.apply, variables, X)
  assert report.replaced == 0 and report.left["statistic clamp"] == 2
  assert "a normalisation's variance" in str(report)


def test_relu6_and_hard_swish_are_left_as_the_peers_leave_them():
  """A MobileNetV3-style block: ReLU, GroupNorm, hard-swish, a relu6. Only the ReLU
  is guided (Captum and pytorch-grad-cam guide torch.nn.ReLU modules only)."""
  class Mobile(nn.Module):
    act: callable = nn.relu

    @nn.compact
    def __call__(self, x):
      x = self.act(nn.GroupNorm(num_groups=2)(nn.Conv(4, (3, 3))(x)))
      x = jax.nn.hard_swish(nn.GroupNorm(num_groups=2)(nn.Conv(4, (3, 3))(x)))
      x = jax.nn.relu6(nn.Conv(4, (1, 1))(x))
      return nn.Dense(3)(x.mean((1, 2)))

  variables = Mobile().init(jax.random.key(2), X)
  explain = gcj.guided_backprop(Mobile().apply, variables)
  twin = functools.partial(Mobile(act=gcj.guided_relu).apply, variables)
  assert_close(explain(X, T).guided, _score_grad(twin), atol=1e-5)
  report = gcj.guided_report(Mobile().apply, variables, X)
  assert (report.replaced, report.left) == (1, {"statistic clamp": 2, "relu6": 2})


# -- NNX ------------------------------------------------------------------------------

class NNXNet(nnx.Module):
  def __init__(self, norm, act, rngs):
    make = {"layer": lambda: nnx.LayerNorm(4, rngs=rngs),
            "group": lambda: nnx.GroupNorm(4, num_groups=2, rngs=rngs),
            "rms": lambda: nnx.RMSNorm(4, rngs=rngs),
            "batch": lambda: nnx.BatchNorm(4, use_running_average=True, rngs=rngs)}
    self.c0, self.n0 = nnx.Conv(3, 4, (3, 3), rngs=rngs), make[norm]()
    self.c1, self.n1 = nnx.Conv(4, 4, (3, 3), rngs=rngs), make[norm]()
    self.fc = nnx.Linear(4, 3, rngs=rngs)
    self.act = act

  def __call__(self, x):
    x = self.act(self.n0(self.c0(x)))
    x = self.act(self.n1(self.c1(x)))
    return self.fc(x.mean((1, 2)))


@pytest.mark.parametrize("norm", NORMS)
def test_nnx_norms_keep_their_clamps_plain(norm):
  model = NNXNet(norm, nnx.relu, nnx.Rngs(3))
  twin = NNXNet(norm, gcj.guided_relu, nnx.Rngs(3))  # same seed: same weights
  explain = gcj.guided_backprop(model)
  graphdef, state = nnx.split(model)
  report = gcj.guided_report(lambda s, x: nnx.merge(graphdef, s)(x), state, X)
  _check(explain, twin, report, norm, "nnx")


# -- Equinox --------------------------------------------------------------------------

class EqxNet(eqx.Module):
  convs: list
  norms: list
  fc: eqx.nn.Linear
  act: callable = eqx.field(static=True)

  def __init__(self, norm, act, key):
    k = jax.random.split(key, 5)
    make = {"layer": lambda: eqx.nn.LayerNorm((4, 8, 8)),
            "group": lambda: eqx.nn.GroupNorm(2, 4),
            "rms": lambda: eqx.nn.RMSNorm((4, 8, 8))}
    self.convs = [eqx.nn.Conv2d(3, 4, 3, padding=1, key=k[0]),
                  eqx.nn.Conv2d(4, 4, 3, padding=1, key=k[1])]
    self.norms = [make[norm](), make[norm]()]
    self.fc = eqx.nn.Linear(4, 3, key=k[2])
    self.act = act

  def __call__(self, x):  # one example, channels first
    for conv, norm in zip(self.convs, self.norms):
      x = self.act(norm(conv(x)))
    return self.fc(x.mean((1, 2)))


@pytest.mark.parametrize("norm", ["layer", "group", "rms"])
def test_equinox_norms_keep_their_clamps_plain(norm):
  """(Equinox's BatchNorm needs a state threaded through the call; its inference mode
  reads running statistics, as linen's and NNX's, tested above.)"""
  model = EqxNet(norm, jax.nn.relu, jax.random.key(4))
  twin = EqxNet(norm, gcj.guided_relu, jax.random.key(4))  # same key: same weights
  x = jnp.moveaxis(X, -1, 1)
  got = gcj.guided_backprop(model, image_layout="NCHW")(x, T).guided
  assert_close(got, _score_grad(jax.vmap(twin), x), atol=1e-5)
  report = gcj.guided_report(jax.vmap(model), x)
  assert report.replaced == 2, report
  assert report.left.get("statistic clamp", 0) == (2 if norm in CLAMPED["equinox"] else 0)


# -- Keras ----------------------------------------------------------------------------

def _keras_net(norm, act):
  L = keras.layers
  make = {"layer": lambda: L.LayerNormalization(),
          "group": lambda: L.GroupNormalization(groups=2),
          "rms": lambda: L.RMSNormalization(),
          "batch": lambda: L.BatchNormalization()}
  inputs = keras.Input((8, 8, 3))
  x = inputs
  for _ in range(2):
    x = L.Activation(act)(make[norm]()(L.Conv2D(4, 3, padding="same")(x)))
  outputs = L.Dense(3)(L.GlobalAveragePooling2D()(x))
  return keras.Model(inputs, outputs)


@pytest.mark.parametrize("norm", NORMS)
def test_keras_norms_keep_their_clamps_plain(norm):
  keras.utils.set_random_seed(5)
  model = _keras_net(norm, "relu")
  twin = _keras_net(norm, lambda t: gcj.guided_relu(t))
  twin.set_weights(model.get_weights())
  if norm == "batch":  # moving statistics that are not the identity
    for m in (model, twin):
      for layer in m.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
          layer.moving_variance.assign(layer.moving_variance + 0.5)
          layer.moving_mean.assign(layer.moving_mean + 0.2)
  from gradcam_jax._adapters import pick
  adapter, params = pick(twin, None)
  got = gcj.guided_backprop(model)(X, T).guided
  assert_close(got, _score_grad(lambda x: adapter(params, x)), atol=1e-5)
  adapter, params = pick(model, None)
  assert gcj.guided_report(adapter, params, X).replaced == 2
