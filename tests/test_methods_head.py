"""The original CAM (gradcam_jax/_methods/head.py): the classifier's weights found in
the program of the model after the layer, in linen, NNX, Equinox (channels first)
and Keras, each against sum_k W_kc A_k from the framework's own weights and
activation; head_weights=; every other head a MethodError naming what breaks."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gradcam_jax as gcj
from tests import models
from tests.models import assert_close

X = models.images(batch=3, size=8)
T = jnp.array([0, 2, 1])


def _cam(a, w, t):
  """ReLU(sum_k W[k, t_b] A_bk) by hand: (B, h, w, K), (K, classes) -> (B, h, w)."""
  w = np.asarray(w, np.float64)[:, np.asarray(t)]
  return np.maximum(np.einsum("bhwk,kb->bhw", np.asarray(a, np.float64), w), 0)


def test_linen_mean_pool_and_dense():
  module, variables = models.init(models.GapNet)
  got = jax.jit(gcj.cam(module.apply, variables, layer="block2", method="cam"))(X, T)
  a = module.apply(variables, X, capture_intermediates=True,
                   mutable=["intermediates"])[1]["intermediates"]["block2"]["__call__"][0]
  want = _cam(a, variables["params"]["fc"]["kernel"], T)
  assert want.max() > 0
  assert_close(got.cam_raw, want, atol=1e-6, rtol=1e-5)
  # the same map Grad-CAM gives for such a head, up to its positive scale
  grad = gcj.gradcam(module.apply, variables, layer="block2")(X, T)
  assert_close(got.cam, grad.cam, atol=1e-5)


def test_nnx():
  nnx = pytest.importorskip("flax.nnx")

  class Block(nnx.Module):
    def __init__(self, rngs):
      self.conv = nnx.Conv(3, 5, (3, 3), rngs=rngs)

    def __call__(self, x):
      return nnx.relu(self.conv(x))

  class Net(nnx.Module):
    def __init__(self, rngs):
      self.block = Block(rngs)
      self.fc = nnx.Linear(5, 3, rngs=rngs)

    def __call__(self, x):
      return self.fc(self.block(x).mean(axis=(1, 2)))

  net = Net(nnx.Rngs(0))
  got = gcj.cam(net, layer="block", method="cam")(X, T)
  want = _cam(net.block(X), net.fc.kernel[...], T)
  assert_close(got.cam_raw, want, atol=1e-6, rtol=1e-5)


def test_equinox_channels_first():
  eqx = pytest.importorskip("equinox")

  net = models.eqx_gap_net(jax.random.key(1), features=5)
  x = jnp.transpose(X, (0, 3, 1, 2))
  # the layer is the ReLU's output: a selector of a function of the conv is not
  # possible in Equinox, so CAM reads the conv (its head: ReLU, pool, dense) and
  # says the head is not a pool and one dense layer ...
  with pytest.raises(gcj.MethodError, match="first operation on the activation is 'max'"):
    gcj.cam(net, layer=lambda m: m.conv, method="cam", image_layout="NCHW")(x, T)

  class Post(eqx.Module):  # ... so the ReLU gets a module of its own
    conv: eqx.nn.Conv2d
    relu: eqx.nn.Lambda
    fc: eqx.nn.Linear

    def __init__(self, net):
      self.conv, self.relu, self.fc = net.conv, eqx.nn.Lambda(jax.nn.relu), net.fc

    def __call__(self, x):
      return self.fc(self.relu(self.conv(x)).mean(axis=(1, 2)))

  post = Post(net)
  got = gcj.cam(post, layer=lambda m: m.relu, method="cam", image_layout="NCHW")(x, T)
  a = jax.vmap(lambda im: jax.nn.relu(net.conv(im)))(x).transpose(0, 2, 3, 1)
  assert_close(got.cam_raw, _cam(a, net.fc.weight.T, T), atol=1e-6, rtol=1e-5)


def test_keras_global_average_pooling_and_dense():
  keras = pytest.importorskip("keras")
  keras.utils.set_random_seed(0)
  inputs = keras.Input((8, 8, 3))
  a = keras.layers.Conv2D(5, 3, padding="same", activation="relu", name="conv")(inputs)
  out = keras.layers.Dense(3, name="pred")(keras.layers.GlobalAveragePooling2D()(a))
  model = keras.Model(inputs, out)
  got = gcj.cam(model, layer="conv", method="cam")(X, T)
  with jax.numpy_rank_promotion("allow"):
    act = keras.Model(inputs, a)(X, training=False)
  want = _cam(act, model.get_layer("pred").kernel.value, T)
  assert_close(got.cam_raw, want, atol=1e-5, rtol=1e-4)


class TwoDense(nn.Module):
  @nn.compact
  def __call__(self, x):
    x = models.ConvReLU(4, name="block")(x)
    return nn.Dense(3, name="fc2")(nn.relu(nn.Dense(6, name="fc1")(x.mean((1, 2)))))


def test_other_heads_are_named_errors_and_head_weights_override():
  module, variables = models.init(TwoDense)
  with pytest.raises(gcj.MethodError, match="after the pool the head applies 'max'"):
    gcj.cam(module.apply, variables, layer="block", method="cam")(X, T)
  vgg, vgg_vars = models.init(models.VggNet)  # flatten, then dense layers
  with pytest.raises(gcj.MethodError, match="first operation on the activation is "
                                            "'reshape'"):
    gcj.cam(vgg.apply, vgg_vars, method="cam")(X, T[:3] % 4)
  gap, gap_vars = models.init(models.GapNet)
  with pytest.raises(gcj.MethodError, match="not affine"):  # a softmax after the dense
    gcj.cam(gap.apply, gap_vars, layer="block2", method="cam",
            target=gcj.class_probability)(X, T)
  w = np.random.default_rng(0).normal(size=(4, 3)).astype(np.float32)
  got = gcj.cam(module.apply, variables, layer="block", method="cam", head_weights=w)(X, T)
  a = module.apply(variables, X, capture_intermediates=True,
                   mutable=["intermediates"])[1]["intermediates"]["block"]["__call__"][0]
  assert_close(got.cam_raw, _cam(a, w, T), atol=1e-6, rtol=1e-5)
  with pytest.raises(gcj.ArgumentError, match=r"head_weights: expected \(channels, "
                                              r"classes\) = \(4, 3\) .* got \(3, 4\)"):
    gcj.cam(module.apply, variables, layer="block", method="cam", head_weights=w.T)(X, T)
  with pytest.raises(gcj.ArgumentError, match="only method 'cam'"):
    gcj.cam(module.apply, variables, method="gradcam", head_weights=w)


def test_shapleycam_by_hand_on_a_quadratic_head():
  """Head y_t = sum_k C_kt m_k^2 (m_k the spatial mean of A_k, N positions): g =
  2 C_kt m_k / N at every position and H A = 2 C_kt m_k / N too (y is quadratic in A),
  so the weights mean(g - H A / 2) are C_kt m_k / N."""
  rng = np.random.default_rng(2)
  params = {"w": jnp.asarray(rng.normal(size=(3, 4)), jnp.float32),
            "c": jnp.asarray(rng.normal(size=(4, 3)), jnp.float32)}

  def features(p, x):
    return jax.nn.relu(jnp.einsum("bhwc,ck->bhwk", x, p["w"]))

  def head(p, a):
    return (a.mean(axis=(1, 2)) ** 2) @ p["c"]

  split = gcj.Split(features, head)
  got = gcj.cam(split, params, method="shapleycam")(X, T)
  a = np.asarray(features(params, X), np.float64)
  m = a.mean(axis=(1, 2))  # (B, K)
  n = a.shape[1] * a.shape[2]
  weights = np.asarray(params["c"], np.float64)[:, np.asarray(T)].T * m / n  # (B, K)
  want = np.maximum(np.einsum("bhwk,bk->bhw", a, weights), 0)
  assert want.max() > 0
  assert_close(got.cam_raw, want, atol=1e-6, rtol=1e-4)
  # a linear head has no curvature: ShapleyCAM is Grad-CAM there
  module, variables = models.init(models.GapNet)
  shap = gcj.cam(module.apply, variables, layer="block2", method="shapleycam")(X, T)
  grad = gcj.gradcam(module.apply, variables, layer="block2")(X, T)
  assert_close(shap.cam_raw, grad.cam_raw, atol=1e-6)
  with pytest.raises(gcj.MethodError, match="second derivative"):
    gcj.guided_gradcam(module.apply, variables, method="shapleycam")
