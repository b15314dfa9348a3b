"""The result (gradcam_jax/_result.py): `valid` flags the examples whose images,
output or maps are not all finite, under jit where non-finite images cannot raise."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gradcam_jax as gcj
from tests import models


@pytest.fixture(scope="module")
def vgg():
  return models.init(models.VggNet)


def _bad_batch():
  x = models.images(4)
  x = x.at[1, 2, 3, 0].set(jnp.nan)     # one NaN pixel
  x = x.at[2, 5, 1, 2].set(jnp.inf)     # one Inf pixel
  return x.at[3].set(3e38)               # finite, but overflows inside the model


@pytest.mark.parametrize("build", [
    lambda m, v: gcj.gradcam(m.apply, v),
    lambda m, v: gcj.guided_backprop(m.apply, v),
    lambda m, v: gcj.guided_gradcam(m.apply, v),
    lambda m, v: gcj.cam(m.apply, v, method="scorecam", top_n=2),
], ids=["gradcam", "guided_backprop", "guided_gradcam", "scorecam"])
def test_valid_flags_non_finite_examples_under_jit(vgg, build):
  model, variables = vgg
  out = jax.jit(build(model, variables))(_bad_batch())
  np.testing.assert_array_equal(out.valid, [True, False, False, False])
  clean = jax.jit(build(model, variables))(models.images(4))
  assert out.valid.dtype == jnp.bool_ and bool(clean.valid.all())


def test_the_silent_cases_the_flag_catches(vgg):
  """What the README says happens without the flag, on this model: the NaN pixel's
  example can have finite logits; the overflowing example has NaN logits."""
  model, variables = vgg
  out = jax.jit(gcj.guided_gradcam(model.apply, variables))(_bad_batch())
  logits = np.asarray(out.logits)
  assert np.isfinite(logits[0]).all()
  assert not np.isfinite(logits[3]).all()
  assert not bool(out.valid[1]) and not bool(out.valid[3])


def test_wrappers_keep_the_flag(vgg):
  model, variables = vgg
  x = _bad_batch()
  smooth = gcj.noise_tunnel(gcj.gradcam(model.apply, variables), n=2)
  np.testing.assert_array_equal(jax.jit(smooth)(x, key=jax.random.key(0)).valid,
                                [True, False, False, False])
  tta = gcj.augment(gcj.gradcam(model.apply, variables))
  np.testing.assert_array_equal(jax.jit(tta)(x).valid, [True, False, False, False])


def test_several_targets_are_flagged_per_image(vgg):
  model, variables = vgg
  t = jnp.array([[0, 1]] * 4)
  out = jax.jit(gcj.guided_gradcam(model.apply, variables))(_bad_batch(), t)
  assert out.cam.shape[:2] == (4, 2)
  np.testing.assert_array_equal(out.valid, [True, False, False, False])


def test_explanation_fields():
  # the six original fields keep their places; `valid`, then the pixel-space
  # explainers' `attribution` and `delta` came last, with defaults, so
  # Explanation(cam, cam_raw, guided, guided_gradcam, logits, targets) still works
  assert gcj.Explanation._fields == ("cam", "cam_raw", "guided", "guided_gradcam",
                                     "logits", "targets", "valid", "attribution",
                                     "delta")
  e = gcj.Explanation(*[None] * 6)
  assert e.valid is None and e.attribution is None and e.delta is None
