"""Closed forms and the seed's regressions (design section 1)."""

import flax
import jax
import jax.numpy as jnp
import numpy as np

import gradcam_jax as gcj
from tests import models
from tests.models import assert_close


def _intermediate(model, variables, x, name):
  _, state = model.apply(variables, x, capture_intermediates=True,
                         mutable=["intermediates"])
  return state["intermediates"][name]["__call__"][0]


def _with_fc_kernel(variables, fn):
  params = flax.core.unfreeze(variables)["params"]
  params["fc"]["kernel"] = fn(params["fc"]["kernel"])
  return {"params": params}


def test_gap_linear_head_gradcam_equals_cam():
  """With a GAP+Dense head, Grad-CAM at the last features is CAM / (h*w)."""
  model, variables = models.init(models.GapNet)
  x = models.images()
  out = jax.jit(gcj.gradcam(model.apply, variables, layer="block2"))(x)
  feats = _intermediate(model, variables, x, "block2")
  w = variables["params"]["fc"]["kernel"]  # (K, classes)
  cam = jnp.einsum("bhwk,kb->bhw", feats, w[:, out.targets])
  expected = jax.nn.relu(cam) / (feats.shape[1] * feats.shape[2])
  assert float(expected.max()) > 0
  assert_close(out.cam_raw, expected, atol=1e-6, rtol=1e-5)
  np.testing.assert_array_equal(out.targets, jnp.argmax(out.logits, -1))


def test_negative_weighted_sum_gives_all_zero_map_without_nan():
  model, variables = models.init(models.GapNet)
  variables = _with_fc_kernel(variables, lambda k: -jnp.abs(k))  # features >= 0
  x = models.images()
  out = jax.jit(gcj.guided_gradcam(model.apply, variables, layer="block2"))(x)
  assert np.all(np.asarray(out.cam_raw) == 0)
  assert np.all(np.asarray(out.cam) == 0)
  assert np.all(np.asarray(out.guided_gradcam) == 0)
  assert np.isfinite(np.asarray(out.guided)).all()


def test_zero_weights_give_zero_map_not_ones():
  """Seed Q1: the weighted sum starts from zero (the Keras code started from ones)."""
  model, variables = models.init(models.GapNet)
  variables = _with_fc_kernel(variables, lambda k: k.at[:, 0].set(0.0))
  out = gcj.gradcam(model.apply, variables, layer="block2")(models.images(),
                                                           jnp.zeros(4, jnp.int32))
  np.testing.assert_array_equal(out.cam_raw, 0.0)


def test_normalised_map_in_unit_interval_with_max_one():
  model, variables = models.init(models.VggNet)
  out = jax.jit(gcj.gradcam(model.apply, variables))(models.images(8))
  cam, raw = np.asarray(out.cam), np.asarray(out.cam_raw)
  assert cam.shape == (8, 8, 8) and raw.shape == (8, 4, 4)
  assert cam.min() >= 0 and cam.max() <= 1
  nonzero = raw.reshape(8, -1).max(1) > 0
  assert nonzero.sum() >= 4
  np.testing.assert_array_equal(cam.reshape(8, -1).max(1)[nonzero], 1.0)
  np.testing.assert_array_equal(cam.reshape(8, -1).min(1)[nonzero], 0.0)


def test_min_max_not_max_only():
  """Seed Q2: dividing by the max alone leaves the minimum above zero."""
  maps = jnp.array([[[1.0, 2.0], [3.0, 5.0]]])
  assert_close(gcj.normalize(maps), [[[0.0, 0.25], [0.5, 1.0]]])
  np.testing.assert_array_equal(gcj.normalize(jnp.full((1, 2, 2), 3.0)), 0.0)


def test_guided_gradcam_is_guided_backprop_times_gradcam():
  """The one-forward Guided Grad-CAM equals the product of the two separate
  explainers' results (separate code paths: two forwards, plain and guided)."""
  model, variables = models.init(models.VggNet)
  x, t = models.images(), jnp.array([0, 1, 2, 3])
  out = jax.jit(gcj.guided_gradcam(model.apply, variables))(x, t)
  cam = jax.jit(gcj.gradcam(model.apply, variables))(x, t).cam
  guided = jax.jit(gcj.guided_backprop(model.apply, variables))(x, t).guided
  assert float(jnp.abs(out.guided_gradcam).max()) > 0
  assert_close(out.guided_gradcam, guided * cam[..., None], atol=1e-6)


def test_guided_gradcam_halves_equal_separate_explainers():
  model, variables = models.init(models.VggNet)
  x, t = models.images(), jnp.array([0, 1, 2, 3])
  both = jax.jit(gcj.guided_gradcam(model.apply, variables))(x, t)
  cam = jax.jit(gcj.gradcam(model.apply, variables))(x, t)
  gb = jax.jit(gcj.guided_backprop(model.apply, variables))(x, t)
  assert_close(both.cam, cam.cam, atol=1e-5)
  assert_close(both.cam_raw, cam.cam_raw)
  assert_close(both.guided, gb.guided)
  np.testing.assert_array_equal(both.logits, cam.logits)


def test_cam_is_bilinear_upsampling_of_raw_map():
  """cam == min-max(bilinear resize(cam_raw)), resize matching OpenCV INTER_LINEAR."""
  import cv2  # a dependency of the package
  model, variables = models.init(models.VggNet)
  out = gcj.gradcam(model.apply, variables)(models.images(2))
  for raw, cam in zip(np.asarray(out.cam_raw), np.asarray(out.cam)):
    up = cv2.resize(raw, (8, 8), interpolation=cv2.INTER_LINEAR)
    expected = (up - up.min()) / (up.max() - up.min())
    assert_close(cam, expected, atol=1e-6)


def test_default_target_is_logit_not_softmax():
  """Seed: the Keras code differentiated the softmax output; we use the logit."""
  model, variables = models.init(models.VggNet)
  x = models.images()
  default = gcj.gradcam(model.apply, variables)(x)
  logit = gcj.gradcam(model.apply, variables, target=gcj.class_logit)(x)
  prob = gcj.gradcam(model.apply, variables, target=gcj.class_probability)(x)
  np.testing.assert_array_equal(default.cam_raw, logit.cam_raw)
  assert not np.allclose(default.cam_raw, prob.cam_raw, atol=1e-4)


def test_probability_target_matches_hand_gradient():
  """dp_c/dA through softmax, written out: p_c * (dz_c - sum_j p_j dz_j)."""
  model, variables = models.init(models.GapNet)
  x = models.images(2)
  t = jnp.array([1, 2])
  out = gcj.gradcam(model.apply, variables, layer="block2",
                    target=gcj.class_probability)(x, t)
  feats = _intermediate(model, variables, x, "block2")
  hw = feats.shape[1] * feats.shape[2]
  w = variables["params"]["fc"]["kernel"]
  p = jax.nn.softmax(out.logits)
  alpha = (p[jnp.arange(2), t][:, None]
           * (w[:, t].T - p @ w.T)) / hw  # (B, K): mean over positions of dp/dA
  expected = jax.nn.relu(jnp.einsum("bhwk,bk->bhw", feats, alpha))
  assert_close(out.cam_raw, expected, atol=1e-7, rtol=1e-5)


def test_guided_backprop_is_class_specific():
  """Seed: the Keras "guided" saliency took the max over channels (class-agnostic).

  Class c reads only input channel c, so its guided map lives on channel c alone.
  """
  def features(p, x):
    return jax.nn.relu(jnp.einsum("bhwc,cd->bhwd", x, p["w"]))

  def head(p, a):
    return a.mean(axis=(1, 2)) @ p["v"]

  params = {"w": jnp.eye(2), "v": jnp.eye(2)}
  x = jnp.abs(models.images(2, channels=2)) + 0.1
  explain = gcj.guided_gradcam(gcj.Split(features, head), params)
  g0 = np.asarray(explain(x, jnp.array([0, 0])).guided)
  g1 = np.asarray(explain(x, jnp.array([1, 1])).guided)
  assert np.all(g0[..., 0] > 0) and np.all(g0[..., 1] == 0)
  assert np.all(g1[..., 1] > 0) and np.all(g1[..., 0] == 0)


def test_guided_maps_differ_between_classes_on_vgg_like_model():
  model, variables = models.init(models.VggNet)
  explain = jax.jit(gcj.guided_backprop(model.apply, variables))
  x = models.images(2)
  a = explain(x, jnp.array([0, 0])).guided
  b = explain(x, jnp.array([1, 1])).guided
  assert not np.allclose(a, b, atol=1e-4)
