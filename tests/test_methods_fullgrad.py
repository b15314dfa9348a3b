"""FullGrad (issue 21): ``gcj.cam(..., method="fullgrad")``.

One small network (conv with bias, batch norm, ReLU, max pool, conv without bias,
batch norm, ReLU, global mean, Dense) in linen, NNX, Equinox and Keras with the same
weights. The reference is written here from the paper's formula with
pytorch-grad-cam's post-processing: the network in plain ``jax.numpy``, each layer's
``dy/dA`` from the vjp of the network after it, biases from the weights
(``beta - mean * gamma / sqrt(var + eps)``), each channel normalised and resized one
by one with OpenCV, as pytorch-grad-cam does. Parity with pytorch-grad-cam itself is
in ``tests/test_parity_pytorch_grad_cam.py``.
"""

import cv2
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gradcam_jax as gcj
from tests.models import assert_close

EPS = 1e-5


class FullGradNet(nn.Module):
  @nn.compact
  def __call__(self, x):
    x = nn.relu(nn.BatchNorm(True, epsilon=EPS, name="bn1")(nn.Conv(4, (3, 3), name="c1")(x)))
    x = nn.max_pool(x, (2, 2), (2, 2))
    x = nn.Conv(5, (3, 3), use_bias=False, name="c2")(x)
    x = nn.relu(nn.BatchNorm(True, epsilon=EPS, name="bn2")(x))
    return nn.Dense(3, name="fc")(x.mean((1, 2)))


def _variables():
  net = FullGradNet()
  v = net.init(jax.random.key(0), jnp.ones((1, 8, 8, 3)))
  keys = iter(jax.random.split(jax.random.key(3), 16))
  bump = lambda a, s: a + s * jax.random.normal(next(keys), a.shape)  # noqa: E731
  p, s = v["params"], v["batch_stats"]
  return {
    "params": {**p, "bn1": {"scale": bump(p["bn1"]["scale"], 0.3),
                            "bias": bump(p["bn1"]["bias"], 0.3)},
               "bn2": {"scale": bump(p["bn2"]["scale"], 0.3),
                       "bias": bump(p["bn2"]["bias"], 0.3)},
               "c1": {"kernel": p["c1"]["kernel"], "bias": bump(p["c1"]["bias"], 0.3)}},
    "batch_stats": {k: {"mean": bump(s[k]["mean"], 0.2),
                        "var": jnp.abs(bump(s[k]["var"], 0.3)) + 0.2} for k in s},
  }


VARS = _variables()
X = jax.random.normal(jax.random.key(7), (2, 8, 8, 3))
T = jnp.array([0, 2])
LINEN = jax.jit(gcj.cam(FullGradNet().apply, VARS, method="fullgrad"))


def _bn(name):
  p, s = VARS["params"][name], VARS["batch_stats"][name]
  a = p["scale"] / jnp.sqrt(s["var"] + EPS)
  return a, p["bias"] - s["mean"] * a  # the affine map, its bias


def _conv(x, name):
  y = jax.lax.conv_general_dilated(x, VARS["params"][name]["kernel"], (1, 1), "SAME",
                                   dimension_numbers=("NHWC", "HWIO", "NHWC"))
  return y + VARS["params"][name]["bias"] if "bias" in VARS["params"][name] else y


def _pool(x):
  return jax.lax.reduce_window(x, -jnp.inf, jax.lax.max, (1, 2, 2, 1), (1, 2, 2, 1), "VALID")


def _reference(x, t):
  """FullGrad by the formula: (B, 8, 8) raw maps before the final normalisation."""
  with jax.numpy_rank_promotion("allow"):
    return _reference_maps(x, t)


def _reference_maps(x, t):
  s1, b1 = _bn("bn1")
  s2, b2 = _bn("bn2")
  fc = VARS["params"]["fc"]
  stages = [  # each layer's output from the previous one's
    lambda a: _conv(a, "c1"),
    lambda a: a * s1 + b1,
    lambda a: _conv(_pool(jax.nn.relu(a)), "c2"),
    lambda a: a * s2 + b2,
    lambda a: jax.nn.relu(a).mean((1, 2)) @ fc["kernel"] + fc["bias"],
  ]
  biases = [VARS["params"]["c1"]["bias"], b1, jnp.zeros(5), b2]

  def score(stage, a):
    for f in stages[stage:]:
      a = f(a)
    return jnp.take_along_axis(a, t[:, None], 1).sum()

  outs, a = [], x
  for f in stages[:-1]:
    a = f(a)
    outs.append(a)
  maps = []
  dx = jax.grad(lambda x: score(0, x))(x)
  maps.append(np.abs(np.asarray(dx * x, np.float64)))
  for k, (a, b) in enumerate(zip(outs, biases)):
    g = jax.grad(lambda a: score(k + 1, a))(a)
    maps.append(np.abs(np.asarray(g * b, np.float64)))
  total = np.zeros(x.shape[:3])
  for m in maps:  # pytorch-grad-cam: every (example, channel) scaled, resized, summed
    for i in range(m.shape[0]):
      for c in range(m.shape[-1]):
        ch = m[i, ..., c] - m[i, ..., c].min()
        ch = ch / (1e-7 + ch.max())
        total[i] += cv2.resize(ch.astype(np.float32), (8, 8))
  return total


def test_equals_the_formula_with_pytorch_grad_cams_post_processing():
  out = LINEN(X, T)
  want = _reference(X, T)
  assert out.cam_raw.shape == (2, 8, 8) and want.max() > 0
  assert_close(out.cam_raw, want, rtol=1e-5, atol=1e-5)
  span = want.max((1, 2), keepdims=True) - want.min((1, 2), keepdims=True)
  assert_close(out.cam, (want - want.min((1, 2), keepdims=True)) / span, atol=1e-5)
  # each bias counts: without c1's bias the map is another one
  other = jax.tree.map(lambda a: a, VARS)
  other["params"]["c1"]["bias"] = jnp.zeros(4)
  changed = gcj.cam(FullGradNet().apply, other, method="fullgrad")(X, T).cam_raw
  assert np.abs(np.asarray(changed) - np.asarray(out.cam_raw)).max() > 0.1


def test_eager_jit_targets_and_batch_agree():
  eager = gcj.cam(FullGradNet().apply, VARS, method="fullgrad")(X, T)
  assert_close(eager.cam_raw, LINEN(X, T).cam_raw, rtol=1e-5, atol=1e-5)
  both = LINEN(X, jnp.stack([T, 1 - T], 1))
  assert both.cam.shape == (2, 2, 8, 8)
  assert_close(both.cam_raw[:, 1], LINEN(X, 1 - T).cam_raw, rtol=1e-5, atol=1e-5)
  one = LINEN(X[1:], T[1:])
  assert_close(one.cam_raw[0], LINEN(X, T).cam_raw[1], rtol=1e-5, atol=1e-5)


def test_nnx_equinox_and_keras_give_the_linen_map():
  want = np.asarray(LINEN(X, T).cam_raw)
  p, s = VARS["params"], VARS["batch_stats"]
  from flax import nnx

  class Net(nnx.Module):
    def __init__(self):
      r = nnx.Rngs(0)
      self.c1 = nnx.Conv(3, 4, (3, 3), rngs=r)
      self.bn1 = nnx.BatchNorm(4, use_running_average=True, epsilon=EPS, rngs=r)
      self.c2 = nnx.Conv(4, 5, (3, 3), use_bias=False, rngs=r)
      self.bn2 = nnx.BatchNorm(5, use_running_average=True, epsilon=EPS, rngs=r)
      self.fc = nnx.Linear(5, 3, rngs=r)

    def __call__(self, x):
      x = nnx.max_pool(nnx.relu(self.bn1(self.c1(x))), (2, 2), (2, 2))
      return self.fc(nnx.relu(self.bn2(self.c2(x))).mean((1, 2)))

  net = Net()
  for name in ("c1", "c2", "fc"):
    for k, value in p[name].items():
      getattr(getattr(net, name), k)[...] = value
  for name in ("bn1", "bn2"):
    bn = getattr(net, name)
    for k, value in (*p[name].items(), *s[name].items()):
      getattr(bn, k)[...] = value
  assert_close(gcj.cam(net, method="fullgrad")(X, T).cam_raw, want, rtol=1e-5, atol=1e-5)

  eqx = pytest.importorskip("equinox")

  class EqxNet(eqx.Module):
    c1: eqx.nn.Conv2d
    bn1: eqx.nn.BatchNorm
    c2: eqx.nn.Conv2d
    bn2: eqx.nn.BatchNorm
    fc: eqx.nn.Linear
    state: eqx.nn.State

    def __init__(self):
      k = jax.random.split(jax.random.key(0), 3)
      hwio = lambda w: jnp.transpose(w, (3, 2, 0, 1))  # noqa: E731
      c1 = eqx.nn.Conv2d(3, 4, 3, padding=1, key=k[0])
      self.c1 = eqx.tree_at(lambda c: (c.weight, c.bias), c1,
                            (hwio(p["c1"]["kernel"]), p["c1"]["bias"][:, None, None]))
      c2 = eqx.nn.Conv2d(4, 5, 3, padding=1, use_bias=False, key=k[1])
      self.c2 = eqx.tree_at(lambda c: c.weight, c2, hwio(p["c2"]["kernel"]))
      bns = [eqx.nn.BatchNorm(n, "batch", eps=EPS, inference=True, mode="ema")
             for n in (4, 5)]
      bns = [eqx.tree_at(lambda b: (b.weight, b.bias), b, (p[n]["scale"], p[n]["bias"]))
             for b, n in zip(bns, ("bn1", "bn2"))]
      self.bn1, self.bn2 = bns
      state = eqx.nn.State(self)
      for b, n in zip(bns, ("bn1", "bn2")):
        state = state.set(b.ema_state_index, (s[n]["mean"], s[n]["var"]))
      self.state = state
      fc = eqx.nn.Linear(5, 3, key=k[2])
      self.fc = eqx.tree_at(lambda f: (f.weight, f.bias), fc,
                            (p["fc"]["kernel"].T, p["fc"]["bias"]))

    def __call__(self, x):  # one (C, H, W) image
      x = jax.nn.relu(self.bn1(self.c1(x), self.state)[0])
      x = eqx.nn.MaxPool2d(2, 2)(x)
      return self.fc(jax.nn.relu(self.bn2(self.c2(x), self.state)[0]).mean((1, 2)))

  first = jnp.moveaxis(X, -1, 1)
  got = gcj.cam(EqxNet(), method="fullgrad", image_layout="NCHW")(first, T)
  assert_close(got.cam_raw, want, rtol=1e-5, atol=1e-5)

  keras = pytest.importorskip("keras")
  L = keras.layers
  inputs = keras.Input((8, 8, 3))
  a = L.BatchNormalization(epsilon=EPS, name="bn1")(L.Conv2D(4, 3, padding="same", name="c1")(inputs))
  a = L.MaxPooling2D(2)(L.ReLU()(a))
  a = L.Conv2D(5, 3, padding="same", use_bias=False, name="c2")(a)
  a = L.ReLU()(L.BatchNormalization(epsilon=EPS, name="bn2")(a))
  model = keras.Model(inputs, L.Dense(3, name="fc")(L.GlobalAveragePooling2D()(a)))
  model.get_layer("c1").set_weights([np.asarray(p["c1"]["kernel"]), np.asarray(p["c1"]["bias"])])
  model.get_layer("c2").set_weights([np.asarray(p["c2"]["kernel"])])
  model.get_layer("fc").set_weights([np.asarray(p["fc"]["kernel"]), np.asarray(p["fc"]["bias"])])
  for n in ("bn1", "bn2"):
    model.get_layer(n).set_weights([np.asarray(v) for v in (
      p[n]["scale"], p[n]["bias"], s[n]["mean"], s[n]["var"])])
  got = gcj.cam(model, method="fullgrad")(X, T)
  assert_close(got.cam_raw, want, rtol=1e-5, atol=1e-5)


def test_bad_use_is_named():
  with pytest.warns(UserWarning, match="layer='c1' is ignored"):  # as pytorch-grad-cam
    with_layer = gcj.cam(FullGradNet().apply, VARS, method="fullgrad", layer="c1")
  assert_close(with_layer(X, T).cam_raw, LINEN(X, T).cam_raw, rtol=1e-5, atol=1e-5)
  with pytest.raises(gcj.ArgumentError, match="reshape=None"):
    gcj.cam(FullGradNet().apply, VARS, method="fullgrad", reshape=gcj.tokens_to_grid)
  with pytest.raises(gcj.MethodError, match="fullgrad"):
    gcj.guided_gradcam(FullGradNet().apply, VARS, method="fullgrad")
  split = gcj.Split(lambda p, x: x, lambda p, a: a.mean((1, 2)))
  with pytest.raises(gcj.UnsupportedError, match="Split"):
    gcj.cam(split, {}, method="fullgrad")(X)

  class Dense(nn.Module):
    @nn.compact
    def __call__(self, x):
      return nn.Dense(3)(x.reshape(x.shape[0], -1))

  dense = Dense()
  with pytest.raises(gcj.LayerNotFoundError, match="no convolution"):
    gcj.cam(dense.apply, dense.init(jax.random.key(0), X), method="fullgrad")(X)
