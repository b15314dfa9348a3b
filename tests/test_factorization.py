"""Deep Feature Factorization (gradcam_jax/_factorization.py): NMF against
scikit-learn's on real activations, the factorisation by hand, concept scores through
the head, any spatial rank, the checks."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gradcam_jax as gcj
from gradcam_jax import zoo
from gradcam_jax.zoo import demo
from tests import models

decomposition = pytest.importorskip("sklearn.decomposition")


def _relative(v, w, h) -> float:
  return float(np.linalg.norm(v - np.asarray(w) @ np.asarray(h)) / np.linalg.norm(v))


@pytest.fixture(scope="module")
def demo_activations():
  """The demo model's Grad-CAM layer on the shipped scenes (real data), as DFF
  factorises it: (K, B * positions), each channel's minimum subtracted."""
  model = zoo.load("demo")
  images, _ = demo.load_samples()
  x = model.preprocess(images[:8])
  from gradcam_jax._edits import Edit, tap
  from gradcam_jax._request import Request, adapt
  adapter, params, layer = adapt(model.apply_fn, model.variables, model.layer)
  r = Request(adapter, params, x, None, layer)
  y, pull = jax.vjp(lambda p: r.run_with_edits(x, {0: Edit(tap, (p,))}), r.zeros())
  (a,) = pull(jnp.zeros_like(y))
  v = np.asarray(a, np.float64).reshape(-1, a.shape[-1]).T
  return model, x, v - v.min(axis=1, keepdims=True)


@pytest.mark.parametrize("n", [2, 5, 8])
def test_nmf_error_within_1_2x_of_scikit_learns(demo_activations, n):
  """Multiplicative updates (500) against scikit-learn's coordinate descent (its
  defaults, init='random'), on real activations and on a noisy low-rank matrix."""
  _, _, v = demo_activations
  rng = np.random.default_rng(n)
  low = rng.random((64, 4)) @ rng.random((4, 300)) + 0.05 * rng.random((64, 300))
  for matrix in (v, low):
    sk = decomposition.NMF(n_components=n, init="random", random_state=0, max_iter=400)
    w_sk = sk.fit_transform(matrix)
    theirs = _relative(matrix, w_sk, sk.components_)
    w, h = gcj.nmf(matrix, n)
    assert (np.asarray(w) >= 0).all() and (np.asarray(h) >= 0).all()
    assert _relative(matrix, w, h) <= 1.2 * theirs, (n, matrix.shape)


def test_nmf_recovers_an_exact_factorisation_and_is_jittable():
  rng = np.random.default_rng(0)
  v = rng.random((10, 3)) @ rng.random((3, 40))
  w, h = jax.jit(lambda m: gcj.nmf(m, 3, iterations=3000))(v)
  assert _relative(v, w, h) < 0.02
  same = gcj.nmf(v, 3, iterations=3000)
  np.testing.assert_allclose(np.asarray(same[0]), np.asarray(w), rtol=1e-4, atol=1e-6)


def test_factorisation_by_hand_and_scores_through_the_head():
  """GapNet: block2 (post-ReLU) then mean and Dense: concepts are W + the channel
  minima, maps are H per image, the error is H's reconstruction error, and each
  concept's scores are the Dense layer applied to it (pytorch-grad-cam's
  computation_on_concepts=model.fc)."""
  module, variables = models.init(models.GapNet)
  x = models.images(batch=3, size=8)
  dff = gcj.feature_factorization(module.apply, variables, layer="block2",
                                  n_components=3, iterations=300)
  out = dff(x)
  a = module.apply(variables, x, capture_intermediates=True, mutable=["intermediates"])[1]
  a = np.asarray(a["intermediates"]["block2"]["__call__"][0])  # (3, 8, 8, 6)
  v = a.reshape(-1, 6).T
  offset = v.min(axis=1, keepdims=True)
  w, h = gcj.nmf(v - offset, 3, iterations=300)
  np.testing.assert_allclose(out.concepts, np.asarray(w) + offset, rtol=1e-4, atol=1e-5)
  raw = np.moveaxis(np.asarray(h).reshape(3, 3, 8, 8), 0, 1)
  np.testing.assert_allclose(out.maps_raw, raw, rtol=1e-4, atol=1e-5)
  np.testing.assert_allclose(out.error, _relative(v - offset, w, h), rtol=1e-4)
  fc = variables["params"]["fc"]
  head = np.asarray(out.concepts).T @ np.asarray(fc["kernel"]) + np.asarray(fc["bias"])
  np.testing.assert_allclose(out.scores, head, rtol=1e-5, atol=1e-5)
  assert out.maps.shape == (3, 3, 8, 8)
  assert float(out.maps.min()) >= 0 and float(out.maps.max()) == pytest.approx(1.0)
  np.testing.assert_allclose(out.output, module.apply(variables, x), atol=1e-6)
  jitted = gcj.jit(dff)
  for got, want in zip(jitted(x), out):
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
  other = jitted(x, key=jax.random.key(7))  # another start: another local optimum
  assert not np.allclose(other.concepts, out.concepts)


def test_volumes_and_signals():
  from tests import media_models
  model = media_models.volume()
  x = jax.random.normal(jax.random.key(0), (2, 8, 8, 8, 1))
  out = gcj.jit(gcj.feature_factorization(model.apply_fn, model.variables,
                                          n_components=2))(x)
  assert out.maps.shape == (2, 2, 8, 8, 8) and out.concepts.shape == (5, 2)
  signal = media_models.signal()
  out = gcj.jit(gcj.feature_factorization(signal.apply_fn, signal.variables,
                                          n_components=4))(
    jax.random.normal(jax.random.key(1), (3, 32, 2)))
  assert out.maps.shape == (3, 4, 32) and out.scores.shape == (4, 3)


@pytest.mark.parametrize("kwargs, says", [
  ({"n_components": 0}, "n_components: expected a whole number >= 1; got 0"),
  ({"iterations": 2.5}, "iterations: expected a whole number >= 1; got 2.5"),
  ({"n_components": 7}, "n_components: expected at most the layer's 6 channels; got 7"),
  ({"layer": ["block1", "block2"]}, "layer: expected one layer; got a list of 2"),
])
def test_bad_arguments_are_named(kwargs, says):
  module, variables = models.init(models.GapNet)
  with pytest.raises(gcj.ArgumentError, match=says.replace("(", r"\(").replace(
      ")", r"\)")):
    gcj.feature_factorization(module.apply, variables, **{"layer": "block2", **kwargs})(
      models.images(batch=2, size=8))
