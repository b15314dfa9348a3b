"""Signals and volumes through every adapter (issue 20): a small 1-D and 3-D model in
linen, NNX, Equinox (channels first, as it comes) and Keras (channels last and
first), each explained at its last convolution and checked against the closed form
of its head: a ReLU, a global mean, then a Dense layer, so dy/dA_k = W[k, c] / N
where A > 0 (everywhere when the layer's output is already ReLU'd, as a Keras
Conv(activation="relu")), with A read from the framework's own sub-model."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gradcam_jax as gcj
from tests.models import assert_close

SPATIAL = {1: (16,), 3: (6, 8, 8)}
CLASSES = 3


def _x(rank, first=False, batch=2, channels=2):
  x = jax.random.normal(jax.random.key(rank), (batch, *SPATIAL[rank], channels))
  return jnp.moveaxis(x, -1, 1) if first else x


def _expected(a, w, t, first=False, relu_after=True):
  """Grad-CAM of a (B, *s, K) (or (B, K, *s)) activation under [ReLU], mean, Dense(W)."""
  a = np.moveaxis(np.asarray(a, np.float64), 1, -1) if first else np.asarray(a, np.float64)
  space = tuple(range(1, a.ndim - 1))
  n = np.prod(a.shape[1:-1])
  w_c = np.asarray(w).T[np.asarray(t)]  # (B, K)
  grad = ((a > 0) if relu_after else 1.0) * w_c.reshape(w_c.shape[0], *[1] * len(space), -1) / n
  return np.maximum(np.einsum("b...k,bk->b...", a, grad.mean(space)), 0)


def _check(out, a, w, t, rank, first=False, size=None, relu_after=True):
  want = _expected(a, w, t, first, relu_after)
  assert want.max() > 0
  assert out.cam_raw.shape == want.shape
  assert_close(out.cam_raw, want, atol=1e-5 * max(want.max(), 1e-3), rtol=1e-4)
  assert out.cam.shape == (2, *(size or SPATIAL[rank]))


def _layout(rank, first):
  return {(1, False): "NWC", (1, True): "NCW", (3, False): "NDHWC", (3, True): "NCDHW"}[
    (rank, first)]


@pytest.mark.parametrize("rank", (1, 3))
def test_linen(rank):
  import flax.linen as nn

  class Net(nn.Module):
    def setup(self):
      self.c1 = nn.Conv(3, (3,) * rank)
      self.c2 = nn.Conv(4, (3,) * rank, strides=(2,) * rank)
      self.fc = nn.Dense(CLASSES)

    def features(self, x):
      x = nn.max_pool(nn.relu(self.c1(x)), (2,) * rank, (1,) * rank, "SAME")
      return self.c2(x)

    def __call__(self, x):
      return self.fc(nn.relu(self.features(x)).mean(tuple(range(1, 1 + rank))))

  x, t = _x(rank), jnp.array([2, 0])
  v = Net().init(jax.random.key(0), x)
  out = jax.jit(gcj.guided_gradcam(Net().apply, v, layer="c2"))(x, t)
  a = Net().apply(v, x, method=Net.features)
  _check(out, a, v["params"]["fc"]["kernel"], t, rank)
  assert out.guided.shape == x.shape
  assert gcj.gradcam(Net().apply, v)(x).cam_raw.shape == a.shape[:-1]  # layer=None


@pytest.mark.parametrize("rank", (1, 3))
def test_nnx(rank):
  from flax import nnx

  class Net(nnx.Module):
    def __init__(self, rngs):
      self.c1 = nnx.Conv(2, 3, (3,) * rank, rngs=rngs)
      self.c2 = nnx.Conv(3, 4, (3,) * rank, rngs=rngs)
      self.fc = nnx.Linear(4, CLASSES, rngs=rngs)

    def __call__(self, x):
      a = nnx.relu(self.c2(nnx.relu(self.c1(x))))
      return self.fc(a.mean(tuple(range(1, 1 + rank))))

  net = Net(nnx.Rngs(0))
  x, t = _x(rank), jnp.array([1, 2])
  out = gcj.gradcam(net, layer="c2")(x, t)
  a = net.c2(nnx.relu(net.c1(x)))
  _check(out, a, net.fc.kernel[...], t, rank)


@pytest.mark.parametrize("rank", (1, 3))
def test_equinox_channels_first(rank):
  eqx = pytest.importorskip("equinox")
  conv = {1: eqx.nn.Conv1d, 3: eqx.nn.Conv3d}[rank]

  class Net(eqx.Module):
    c1: eqx.Module
    c2: eqx.Module
    fc: eqx.nn.Linear

    def __init__(self, key):
      k = jax.random.split(key, 3)
      self.c1 = conv(2, 3, 3, padding=1, key=k[0])
      self.c2 = conv(3, 4, 3, padding=1, key=k[1])
      self.fc = eqx.nn.Linear(4, CLASSES, key=k[2])

    def __call__(self, x):  # one (C, *spatial) example, as Equinox writes it
      a = jax.nn.relu(self.c2(jax.nn.relu(self.c1(x))))
      return self.fc(a.mean(tuple(range(1, 1 + rank))))

  net = Net(jax.random.key(0))
  x, t = _x(rank, first=True), jnp.array([0, 2])
  out = gcj.gradcam(net, layer=lambda m: m.c2, image_layout=_layout(rank, True))(x, t)
  a = jax.vmap(lambda e: net.c2(jax.nn.relu(net.c1(e))))(x)
  _check(out, a, net.fc.weight.T, t, rank, first=True)
  guided = gcj.guided_backprop(net, image_layout=_layout(rank, True))(x, t)
  assert guided.guided.shape == x.shape


@pytest.mark.parametrize("first", (False, True), ids=("channels_last", "channels_first"))
@pytest.mark.parametrize("rank", (1, 3))
def test_keras(rank, first):
  keras = pytest.importorskip("keras")
  L = keras.layers
  fmt = "channels_first" if first else "channels_last"
  conv = {1: L.Conv1D, 3: L.Conv3D}[rank]
  pool = {1: L.MaxPooling1D, 3: L.MaxPooling3D}[rank]
  gap = {1: L.GlobalAveragePooling1D, 3: L.GlobalAveragePooling3D}[rank]
  keras.utils.set_random_seed(0)
  shape = _x(rank, first).shape[1:]
  inputs = keras.Input(shape)
  a = conv(3, 3, padding="same", activation="relu", data_format=fmt, name="c1")(inputs)
  a = pool(2, data_format=fmt, name="pool")(a)
  a = conv(4, 3, padding="same", activation="relu", data_format=fmt, name="c2")(a)
  out = L.Dense(CLASSES, name="fc")(gap(data_format=fmt)(a))
  model = keras.Model(inputs, out)
  x, t = _x(rank, first), jnp.array([1, 0])
  explain = gcj.guided_gradcam(model, layer="c2", image_layout=_layout(rank, first))
  got = jax.jit(explain)(x, t)
  with jax.numpy_rank_promotion("allow"):
    acts = keras.Model(inputs, model.get_layer("c2").output)(x)
  _check(got, acts, model.get_layer("fc").kernel.value, t, rank, first=first,
         relu_after=False)
  assert got.guided.shape == x.shape
