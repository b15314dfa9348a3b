"""Sanity checks (gradcam_jax/sanity.py): similarity measures and the randomisation table."""

import jax
import jax.numpy as jnp
import numpy as np

from gradcam_jax import sanity
from tests import models
from tests.models import assert_close


def test_similarity_measures():
  rng = np.random.default_rng(3)
  a = jnp.asarray(rng.normal(size=(4, 32, 32)), jnp.float32)
  b = jnp.asarray(rng.normal(size=(4, 32, 32)), jnp.float32)
  assert_close(sanity.spearman(a, a), np.ones(4), atol=1e-6)
  assert_close(sanity.spearman(a, -a), -np.ones(4), atol=1e-6)
  assert np.abs(np.asarray(sanity.spearman(a, b))).max() < 0.1
  assert_close(sanity.ssim(a, a), np.ones(4), atol=1e-5)
  assert np.abs(np.asarray(sanity.ssim(a, b))).max() < 0.1
  assert_close(sanity.hog_correlation(a, a), np.ones(4), atol=1e-5)
  assert np.abs(np.asarray(sanity.hog_correlation(a, b))).max() < 0.25
  # spearman is invariant to monotone transforms
  assert_close(sanity.spearman(a, jnp.exp(a)), np.ones(4), atol=1e-6)


def test_randomisation_table_shapes_and_identity():
  import gradcam_jax as gcj
  model, variables = models.init(models.GapNet, shape=(1, 16, 16, 3))
  x = models.images(2, size=16)
  t = jnp.array([0, 1])
  assert sanity.top_down_layers(model.apply, variables, x) == [
      ("fc",), ("block2", "conv"), ("block1", "conv")]
  rows = sanity.randomisation_table(lambda v: gcj.gradcam(model.apply, v, layer="block2"),
                                    model.apply, variables, x, t, key=jax.random.key(0))
  assert [r.randomised for r in rows] == ["none", "down to fc", "down to block2/conv",
                                          "down to block1/conv"]
  assert rows[0].spearman == 1.0  # the unrandomised model against itself
  assert all(r.spearman < 0.99 for r in rows[1:]), rows  # randomising changes the map
  same = sanity.randomisation_table(lambda v: gcj.gradcam(model.apply, v, layer="block2"),
                                    model.apply, variables, x, t, key=jax.random.key(0),
                                    layers=[])
  assert same == [sanity.SanityRow("none", 1.0, 1.0, 1.0, 1.0)]
  indep = sanity.randomisation_table(lambda v: gcj.guided_backprop(model.apply, v),
                                     model.apply, variables, x, t, key=jax.random.key(0),
                                     field="guided", mode="independent")
  assert [r.randomised for r in indep][1:] == ["fc", "block2/conv", "block1/conv"]
  r = sanity.randomise(variables, [("fc",)], jax.random.key(1))
  assert not np.allclose(r["params"]["fc"]["kernel"], variables["params"]["fc"]["kernel"])
  np.testing.assert_array_equal(r["params"]["block1"]["conv"]["kernel"],
                                variables["params"]["block1"]["conv"]["kernel"])
