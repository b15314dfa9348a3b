"""Metrics and sanity checks, on toy inputs with answers worked out by hand."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gradcam_jax import metrics
from tests.models import assert_close


def _linear_model(w):
  """p(class 0) = sigmoid(sum_ij w_ij x_ij): a linear model on one-channel images."""
  def score(x):
    z = jnp.sum(x[..., 0] * w[None], axis=(1, 2))
    return jnp.stack([jax.nn.sigmoid(z), 1 - jax.nn.sigmoid(z)], axis=1)
  return score


def test_deletion_best_worst_and_random_orders():
  rng = np.random.default_rng(0)
  w = jnp.asarray(rng.normal(size=(6, 6)), jnp.float32)
  x = jnp.asarray(rng.uniform(0.5, 1.0, size=(1, 6, 6, 1)), jnp.float32)
  score, t = _linear_model(w), jnp.array([0])
  contribution = (w * x[0, ..., 0])[None]
  best = metrics.deletion(score, x, contribution, t, steps=36)
  worst = metrics.deletion(score, x, -contribution, t, steps=36)
  rand = metrics.deletion(score, x, jnp.asarray(rng.normal(size=(1, 6, 6))), t, steps=36)
  assert best.auc[0] < rand.auc[0] < worst.auc[0]
  # with one pixel per step, removing by contribution is optimal at every step:
  # the remaining logit is the sum of the smallest contributions
  c = np.sort(np.asarray(contribution).ravel())[::-1]
  expected = [1 / (1 + np.exp(-c[k:].sum())) for k in range(37)]
  assert_close(best.scores[0], expected, atol=1e-6)
  ins = metrics.insertion(score, x, contribution, t, steps=36)
  assert ins.auc[0] > metrics.insertion(score, x, -contribution, t, steps=36).auc[0]


def test_curve_endpoints_and_baselines():
  rng = np.random.default_rng(1)
  w = jnp.asarray(rng.normal(size=(8, 8)), jnp.float32)
  x = jnp.asarray(rng.uniform(size=(2, 8, 8, 1)), jnp.float32)
  score, t = _linear_model(w), jnp.array([0, 1])
  maps = jnp.asarray(rng.normal(size=(2, 8, 8)))
  full = np.asarray(score(x))[[0, 1], [0, 1]]
  blur = metrics.blurred(x, sigma=2.0)
  for baseline, empty in ((0.0, jnp.zeros_like(x)), (blur, blur)):
    d = metrics.deletion(score, x, maps, t, baseline=baseline, steps=4)
    i = metrics.insertion(score, x, maps, t, baseline=baseline, steps=4)
    base = np.asarray(score(empty))[[0, 1], [0, 1]]
    assert d.scores.shape == (2, 5) and list(np.asarray(d.fractions)) == [0, .25, .5, .75, 1]
    assert_close(d.scores[:, 0], full) and assert_close(d.scores[:, -1], base)
    assert_close(i.scores[:, 0], base) and assert_close(i.scores[:, -1], full)
  chunked = metrics.deletion(score, x, maps, t, steps=4, batch_size=2)
  assert_close(chunked.scores, metrics.deletion(score, x, maps, t, steps=4).scores)
  assert_close(metrics.auc(jnp.array([0., .5, 1.]), jnp.array([[1., 1., 0.]])), [0.75])


def test_blur_keeps_constant_images():
  x = jnp.full((1, 9, 9, 3), 0.7)
  assert_close(metrics.blurred(x, 2.0), x, atol=1e-6)


def test_average_drop_increase_by_hand():
  # probabilities of class 0 are read from the image's first pixel
  score = lambda x: jnp.stack([x[:, 0, 0, 0], 1 - x[:, 0, 0, 0]], axis=1)
  x = jnp.zeros((4, 2, 2, 1)).at[:, 0, 0, 0].set(jnp.array([0.8, 0.5, 0.0, 0.4]))
  maps = jnp.zeros((4, 2, 2)).at[:, 0, 0].set(jnp.array([0.5, 1.0, 1.0, 1.0]))
  # O = x * map: 0.4 (drop 0.5), 0.5 (no drop), 0 (zero confidence: 0), 0.4 (0)
  drop, inc = metrics.average_drop_increase(score, x, maps, jnp.zeros(4, jnp.int32))
  assert_close(drop, 100 * 0.5 / 4)
  assert_close(inc, 0.0)
  # class 0's probability is 1 - first pixel: masking can raise it, and an image with
  # Y = 0 whose explanation has O > 0 counts as an increase (and cannot drop)
  score2 = lambda x: jnp.stack([1 - x[:, 0, 0, 0], x[:, 0, 0, 0]], axis=1)
  x2 = jnp.zeros((4, 2, 2, 1)).at[:, 0, 0, 0].set(jnp.array([0.2, 0.5, 1.0, 0.6]))
  maps2 = jnp.zeros((4, 2, 2)).at[:, 0, 0].set(jnp.array([1.0, 0.0, 0.5, 1.0]))
  # Y = 0.8, 0.5, 0.0, 0.4; O = 0.8, 1.0, 0.5, 0.4: increases at 1 and 2 (Y = 0)
  drop2, inc2 = metrics.average_drop_increase(score2, x2, maps2, jnp.zeros(4, jnp.int32))
  assert_close(drop2, 0.0)
  assert_close(inc2, 100 * 2 / 4)


def test_pointing_game_tolerance_and_several_boxes():
  maps = jnp.zeros((3, 10, 10)).at[0, 4, 4].set(1).at[1, 4, 7].set(1).at[2, 0, 0].set(1)
  boxes = jnp.array([[3, 3, 6, 6], [3, 3, 6, 6], [3, 3, 6, 6]])
  np.testing.assert_array_equal(metrics.pointing_game(maps, boxes), [1, 0, 0])
  np.testing.assert_array_equal(metrics.pointing_game(maps, boxes, tolerance=2), [1, 1, 0])
  several = jnp.array([[[3, 3, 6, 6], [-1, -1, -1, -1]], [[0, 0, 1, 1], [7, 4, 8, 5]],
                       [[-1, -1, -1, -1], [0, 0, 1, 1]]])
  np.testing.assert_array_equal(metrics.pointing_game(maps, several), [1, 1, 1])


def test_connected_component_boxes_on_blobs():
  cam = np.zeros((32, 32), np.float32)
  cam[2:6, 3:9] = 0.5       # small blob
  cam[10:25, 12:20] = 1.0   # largest blob
  cam[30, 30] = 0.1         # below 15% of the max: ignored
  np.testing.assert_array_equal(metrics.box_from_map(cam), [12, 10, 20, 25])
  assert metrics.box_iou([12, 10, 20, 25], [12, 10, 20, 25]) == 1.0
  assert metrics.box_iou([0, 0, 2, 2], [1, 1, 3, 3]) == pytest.approx(1 / 7)
  np.testing.assert_array_equal(metrics.box_from_map(np.zeros((4, 4))), [-1] * 4)
  loc = metrics.localisation(np.stack([cam, cam]), [[12, 10, 20, 25], [0, 0, 5, 5]])
  np.testing.assert_array_equal(loc, [1.0, 0.0])


def test_road_orders_and_imputation():
  rng = np.random.default_rng(2)
  w = jnp.asarray(rng.normal(size=(8, 8)), jnp.float32)
  x = jnp.asarray(rng.uniform(size=(1, 8, 8, 1)), jnp.float32)
  score, t = _linear_model(w), jnp.array([0])
  contribution = (w * x[0, ..., 0])[None]
  morf = metrics.road(score, x, contribution, t, key=jax.random.key(0), order="morf")
  lerf = metrics.road(score, x, contribution, t, key=jax.random.key(0), order="lerf")
  assert morf.shape == (1, 5)
  assert float(morf.mean()) < float(lerf.mean())
  # imputing a constant image gives back the constant (plus the noise)
  flat = jnp.full((1, 6, 6, 1), 0.3)
  removed = jnp.zeros((1, 6, 6), bool).at[0, 2:4, 2:4].set(True)
  assert_close(metrics._impute(flat, removed, jax.random.key(0), 0.0, 50), flat, atol=1e-6)
  # a linear ramp is harmonic: imputation recovers it
  ramp = jnp.tile(jnp.linspace(0, 1, 6)[None, None, :, None], (1, 6, 1, 1))
  assert_close(metrics._impute(ramp, removed, jax.random.key(0), 0.0, 500), ramp, atol=1e-4)


