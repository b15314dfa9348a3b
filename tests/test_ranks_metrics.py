"""Metrics and sanity checks on signals and volumes (issue 20): each against a
brute-force or closed-form answer, and the 2-D-only ones saying so."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gradcam_jax as gcj
from gradcam_jax import metrics, sanity
from gradcam_jax.metrics import _impute
from tests.models import assert_close

SHAPES = {1: (2, 10, 3), 3: (2, 3, 4, 5, 3)}


def _linear_probs(w):
  """A two-class softmax of a linear score: every step's value is known."""
  def score(x):
    s = jnp.sum(x * w[None], axis=tuple(range(1, x.ndim)))
    return jax.nn.softmax(jnp.stack([s, -s], 1), axis=1)
  return score


@pytest.mark.parametrize("rank", (1, 3))
@pytest.mark.parametrize("insert", (False, True))
def test_deletion_and_insertion_by_brute_force(rank, insert):
  shape = SHAPES[rank]
  rng = np.random.default_rng(rank)
  x = rng.normal(size=shape).astype(np.float32)
  w = rng.normal(size=shape[1:]).astype(np.float32)
  maps = rng.permutation(np.prod(shape[1:-1]) * 2).reshape(2, *shape[1:-1]).astype(np.float32)
  score = _linear_probs(jnp.asarray(w))
  curve = (metrics.insertion if insert else metrics.deletion)(
    score, jnp.asarray(x), jnp.asarray(maps), jnp.array([0, 1]), steps=4)
  n = np.prod(shape[1:-1])
  for b, t in ((0, 0), (1, 1)):
    order = np.argsort(-maps[b].reshape(-1))
    for s, frac in enumerate(np.linspace(0, 1, 5)):
      chosen = np.zeros(n, bool)
      chosen[order[: int(round(frac * n))]] = True
      chosen = chosen.reshape(shape[1:-1])[..., None]
      xb = np.where(chosen, x[b], 0) if insert else np.where(chosen, 0, x[b])
      want = score(jnp.asarray(xb[None]))[0, t]
      assert float(curve.scores[b, s]) == pytest.approx(float(want), abs=1e-5)


def test_imputation_recovers_a_linear_volume():
  """A linear field is harmonic: removed interior voxels imputed from their six
  neighbours (no noise) converge to it."""
  d, h, w = np.meshgrid(np.arange(5), np.arange(6), np.arange(7), indexing="ij")
  field = (0.5 * d - 0.3 * h + 0.2 * w + 1.0).astype(np.float32)[None, ..., None]
  removed = np.zeros((1, 5, 6, 7), bool)
  removed[0, 1:4, 2:5, 1:6] = True
  got = _impute(jnp.asarray(field), jnp.asarray(removed), jax.random.key(0), 0.0, 400)
  assert_close(got, field, atol=1e-4)
  signal = np.linspace(-1, 2, 9, dtype=np.float32)[None, :, None]
  cut = np.zeros((1, 9), bool)
  cut[0, 2:7] = True
  assert_close(_impute(jnp.asarray(signal), jnp.asarray(cut), jax.random.key(0), 0.0, 400),
               signal, atol=1e-4)


@pytest.mark.parametrize("rank", (1, 3))
def test_road_runs_and_keeps_untouched_inputs(rank):
  shape = SHAPES[rank]
  x = jax.random.normal(jax.random.key(0), shape)
  maps = jax.random.uniform(jax.random.key(1), shape[:-1])
  score = _linear_probs(jnp.ones(shape[1:]))
  out = metrics.road(score, x, maps, jnp.array([0, 1]), key=jax.random.key(2),
                     percentiles=(0.0, 0.5), noise=0.0)
  assert out.shape == (2, 2)
  assert_close(out[:, 0], score(x)[jnp.arange(2), jnp.array([0, 1])], atol=1e-6)


def test_pointing_game_in_one_and_three_dimensions():
  signal = jnp.zeros((2, 10)).at[0, 7].set(1).at[1, 2].set(1)
  assert np.asarray(metrics.pointing_game(signal, [[6, 9], [3, 5]])).tolist() == [1.0, 0.0]
  assert np.asarray(metrics.pointing_game(signal, [[6, 9], [3, 5]], tolerance=1)).tolist() \
      == [1.0, 1.0]
  volume = jnp.zeros((1, 4, 5, 6)).at[0, 3, 1, 4].set(1)  # (z, y, x) = (3, 1, 4)
  assert float(metrics.pointing_game(volume, [[4, 1, 3, 5, 2, 4]])[0]) == 1.0
  assert float(metrics.pointing_game(volume, [[4, 1, 2, 5, 2, 3]])[0]) == 0.0  # z outside
  with pytest.raises(gcj.ArgumentError, match=r"expected boxes of 6 coordinates.*rank 3"):
    metrics.pointing_game(volume, [[0, 0, 1, 1]])


def test_blur_of_a_signal_by_hand_and_of_a_constant_volume():
  x = np.random.default_rng(0).normal(size=(1, 20, 2)).astype(np.float32)
  k = np.asarray(gcj.metrics.gaussian_kernel(2.0, 6))
  num = np.stack([np.convolve(x[0, :, c], k, "same") for c in range(2)], -1)
  den = np.convolve(np.ones(20), k, "same")[:, None]
  assert_close(metrics.blurred(jnp.asarray(x), 2.0)[0], num / den, atol=1e-5)
  flat = jnp.full((1, 4, 6, 5, 1), 0.7)
  assert_close(metrics.blurred(flat, 1.5), flat, atol=1e-6)


def test_average_drop_and_two_d_only_metrics_name_the_shapes():
  x = jnp.ones(SHAPES[3])
  score = _linear_probs(jnp.ones(SHAPES[3][1:]))
  drop, _ = metrics.average_drop_increase(score, x, jnp.ones(SHAPES[3][:-1]), jnp.array([0, 1]))
  assert float(drop) == pytest.approx(0.0)
  with pytest.raises(gcj.ArgumentError, match=r"expected maps of shape \(2, 3, 4, 5\)"):
    metrics.deletion(score, x, jnp.ones((2, 4, 5)), jnp.array([0, 1]))
  with pytest.raises(gcj.ArgumentError, match=r"2-D \(H, W\) map.*got shape \(3, 4, 5\)"):
    metrics.box_from_map(np.ones((3, 4, 5)))


def test_randomisation_table_on_a_signal_model():
  import flax.linen as nn

  class Net(nn.Module):
    @nn.compact
    def __call__(self, x):
      x = nn.relu(nn.Conv(4, (3,), name="conv")(x))
      return nn.Dense(3, name="fc")(x.mean(1))

  x = jax.random.normal(jax.random.key(0), (2, 16, 2))
  v = Net().init(jax.random.key(1), x)
  rows = sanity.randomisation_table(lambda v: gcj.gradcam(Net().apply, v), Net().apply, v, x,
                                    jnp.array([0, 1]), key=jax.random.key(2))
  assert [r.randomised for r in rows][:2] == ["none", "down to fc"]
  assert all(np.isnan(r.ssim) and np.isnan(r.hog) for r in rows)
  assert all(-1 <= r.spearman <= 1 for r in rows) and rows[0].spearman == 1.0
  guided = sanity.randomisation_table(lambda v: gcj.guided_backprop(Net().apply, v),
                                      Net().apply, v, x, jnp.array([0, 1]),
                                      key=jax.random.key(2), field="guided")
  assert len(guided) == len(rows) and not np.isnan(guided[1].spearman)
