"""Pixel-space explainers (saliency, input x gradient, deconvnet, integrated
gradients): closed forms written here from the papers' formulas, layouts, the
argument checks. Parity with Captum: tests/test_parity_captum.py."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gradcam_jax as gcj
from tests.models import assert_close

RNG = np.random.default_rng(0)
X = jnp.asarray(RNG.normal(size=(2, 4, 4, 3)), jnp.float32)
W = jnp.asarray(RNG.normal(size=(4, 4, 3, 5)), jnp.float32)
T = jnp.array([1, 4])

# a linear model and a quadratic one, as gcj.Split of arrays
LINEAR = gcj.Split(lambda w, x: x, lambda w, a: jnp.einsum("bhwc,hwck->bk", a, w))
QUADRATIC = gcj.Split(lambda w, x: x, lambda w, a: jnp.einsum("bhwc,hwck->bk", a * a, w))


def _column(t):
  return jnp.moveaxis(W[..., t], -1, 0)  # (B, H, W, C): each example's class weights


def test_saliency_of_a_linear_model_is_its_weights():
  out = gcj.jit(gcj.saliency(LINEAR, W))(X, T)
  assert_close(out.attribution, jnp.abs(_column(T)))
  raw = gcj.saliency(LINEAR, W, absolute=False)(X, T).attribution
  assert_close(raw, _column(T))
  heat = jnp.abs(_column(T)).max(-1)
  lo, hi = heat.min((1, 2), keepdims=True), heat.max((1, 2), keepdims=True)
  assert_close(out.cam, (heat - lo) / (hi - lo), atol=1e-6)
  assert out.guided is None and out.cam_raw is None and out.delta is None


def test_input_x_gradient_of_a_linear_model():
  out = gcj.input_x_gradient(LINEAR, W)(X, T)
  assert_close(out.attribution, X * _column(T))
  # completeness holds exactly for a linear model with a zero baseline
  assert_close(out.attribution.sum((1, 2, 3)), LINEAR(W, X)[jnp.arange(2), T], atol=1e-5)


@pytest.mark.parametrize("method", gcj.INTEGRATION_METHODS)
def test_integrated_gradients_of_a_quadratic_model(method):
  """IG of sum(w x^2) from baseline b is w (x^2 - b^2): the integrand is linear in
  the path parameter, so the Gauss-Legendre and midpoint rules are exact; the left
  and right rules are off by a known amount (computed here). Captum's trapezoid rule
  puts its n points on [0, 1] but weighs them 1/n (halved at the ends), so its
  weights sum to (n - 1)/n: matched, not corrected (parity with its code)."""
  b = jnp.float32(0.5)
  out = gcj.integrated_gradients(QUADRATIC, W, baseline=b, steps=8, method=method)(X, T)
  w = _column(T)
  if method == "riemann_left":
    alpha = np.arange(8) / 8
  elif method == "riemann_right":
    alpha = np.arange(1, 9) / 8
  else:
    alpha = None
  if alpha is None:
    want = w * (X * X - b * b) * (7 / 8 if method == "riemann_trapezoid" else 1)
    gap = (w * (X * X - b * b)).sum((1, 2, 3))
    assert_close(out.delta, want.sum((1, 2, 3)) - gap, atol=1e-4)
  else:
    want = (X - b) * 2 * w * (b + alpha.mean() * (X - b))
  assert_close(out.attribution, want, atol=1e-5)


@pytest.mark.parametrize("baseline", [0.25, "colour", "image", "batch"])
def test_integrated_gradients_baselines_in_both_layouts(baseline):
  shapes = {"colour": (3,), "image": (4, 4, 3), "batch": (2, 4, 4, 3)}
  b = baseline if isinstance(baseline, float) else RNG.normal(size=shapes[baseline])
  b = jnp.asarray(b, jnp.float32)
  out = gcj.integrated_gradients(LINEAR, W, baseline=b, steps=4)(X, T)
  assert_close(out.attribution, (X - jnp.broadcast_to(b, X.shape)) * _column(T), atol=1e-5)
  # channels first: the same numbers in the images' layout
  nchw = gcj.Split(lambda w, x: jnp.moveaxis(x, 1, -1), LINEAR.head)
  b_first = b if b.ndim in (0, 1) else jnp.moveaxis(b, -1, -3)
  first = gcj.integrated_gradients(nchw, W, baseline=b_first, steps=4,
                                   image_layout="NCHW")(jnp.moveaxis(X, -1, 1), T)
  assert_close(first.attribution, jnp.moveaxis(out.attribution, -1, 1), atol=1e-5)
  assert first.cam.shape == (2, 4, 4)


def test_integrated_gradients_in_chunks_and_several_targets():
  explain = gcj.integrated_gradients(QUADRATIC, W, steps=6)
  whole = explain(X, T)
  chunked = gcj.integrated_gradients(QUADRATIC, W, steps=6, batch_size=4)(X, T)
  assert_close(chunked.attribution, whole.attribution, atol=1e-6)
  both = gcj.jit(explain)(X, jnp.stack([T, T[::-1]], 1))
  assert both.attribution.shape == (2, 2, 4, 4, 3) and both.delta.shape == (2, 2)
  assert_close(both.attribution[:, 0], whole.attribution, atol=1e-6)
  assert_close(both.attribution[:, 1], explain(X, T[::-1]).attribution, atol=1e-6)


def test_deconvnet_by_hand():
  """f = w2 . relu(W1 x): the deconvnet passes the positive part of the incoming
  gradient through the ReLU whatever the forward sign: W1^T relu(w2[:, t])."""
  w1 = jnp.asarray(RNG.normal(size=(48, 6)), jnp.float32)
  w2 = jnp.asarray(RNG.normal(size=(6, 5)), jnp.float32)
  net = gcj.Split(lambda p, x: x.reshape(x.shape[0], 1, 1, -1) @ p[0],
                  lambda p, a: jax.nn.relu(a[:, 0, 0]) @ p[1])
  out = gcj.deconvnet(net, (w1, w2))(X, T)
  want = (jax.nn.relu(w2[:, T]).T @ w1.T).reshape(X.shape)
  assert_close(out.attribution, want, atol=1e-5)
  with pytest.raises(gcj.NoReLUError):
    gcj.deconvnet(LINEAR, W)(X, T)


def test_smoothgrad_is_the_noise_tunnel_of_saliency():
  smooth = gcj.noise_tunnel(gcj.saliency(QUADRATIC, W), n=4, sigma=0.1)
  out = smooth(X, T, key=jax.random.key(0))
  assert out.attribution.shape == X.shape and out.cam.shape == (2, 4, 4)
  assert not np.allclose(out.attribution, gcj.saliency(QUADRATIC, W)(X, T).attribution)


@pytest.mark.parametrize("kwargs, match", [
  ({"steps": 1}, r"steps: expected an integer of at least 2; got 1"),
  ({"method": "simpson"}, r"method: expected one of \('gausslegendre'"),
  ({"batch_size": 0}, r"batch_size: expected None or a positive integer; got 0"),
])
def test_integrated_gradients_arguments(kwargs, match):
  with pytest.raises(gcj.ArgumentError, match=match):
    gcj.integrated_gradients(LINEAR, W, **kwargs)


def test_integrated_gradients_baseline_of_the_wrong_shape():
  with pytest.raises(gcj.ArgumentError, match=r"baseline: expected a scalar, a colour "
                     r"of shape \(3,\), an image of shape \(4, 4, 3\).*got shape \(4,\)"):
    gcj.integrated_gradients(LINEAR, W, baseline=jnp.zeros(4))(X, T)
