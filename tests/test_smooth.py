"""noise_tunnel and augment (gradcam_jax/_smooth.py): reproducible from the key,
the identity where they should be, flips undone exactly, any nesting of the
wrappers."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gradcam_jax as gcj
from tests import models
from tests.models import assert_close
from tests.test_methods import _vgg
from tests.test_forms import _close
from tests.test_methods_perturbation import _images, _split_model


def test_noise_tunnel_reproducible_and_sigma_zero_is_identity():
  model, variables = _vgg()
  x = models.images(2)
  explain = gcj.guided_gradcam(model.apply, variables)
  plain = explain(x)
  zero = gcj.noise_tunnel(explain, n=3, sigma=0.0)(x, key=jax.random.key(0))
  for field in ("cam", "cam_raw", "guided", "guided_gradcam"):
    assert_close(getattr(zero, field), getattr(plain, field), atol=1e-6)
  smooth = jax.jit(gcj.noise_tunnel(explain, n=4, sigma=0.2), static_argnames=())
  a = smooth(x, key=jax.random.key(1))
  b = smooth(x, key=jax.random.key(1))
  c = smooth(x, key=jax.random.key(2))
  np.testing.assert_array_equal(a.cam_raw, b.cam_raw)
  assert not np.allclose(a.cam_raw, c.cam_raw)
  np.testing.assert_array_equal(a.targets, plain.targets)
  chunked = gcj.noise_tunnel(explain, n=4, sigma=0.2, batch_size=3)(x, key=jax.random.key(1))
  assert_close(chunked.cam_raw, a.cam_raw, atol=1e-5)
  # by hand: the mean of the explanations of the noisy copies
  span = x.max(axis=(1, 2, 3)) - x.min(axis=(1, 2, 3))
  noise = jax.random.normal(jax.random.key(1), (4, *x.shape)) * (0.2 * span)[None, :, None,
                                                                              None, None]
  hand = np.mean([explain(x + noise[i], plain.targets).cam_raw for i in range(4)], axis=0)
  assert_close(a.cam_raw, hand, atol=1e-5)


def test_noise_tunnel_params_form_and_perturbation_method():
  split, params = _split_model()
  x = _images(2)
  smooth = gcj.noise_tunnel(gcj.cam(split, method="scorecam"), n=2, sigma=0.1)
  out = smooth(params, x, key=jax.random.key(0))
  assert out.cam.shape == (2, 8, 8) and np.isfinite(out.cam).all()


def test_augment_flip_is_the_mean_of_the_flipped_back_maps():
  model, variables = _vgg()
  x, t = models.images(2), jnp.array([0, 1])
  explain = gcj.guided_gradcam(model.apply, variables)
  out = gcj.augment(explain, flips=True)(x, t)
  plain = explain(x, t)
  flipped = explain(x[:, :, ::-1], t)
  assert_close(out.cam_raw, (plain.cam_raw + flipped.cam_raw[..., ::-1]) / 2, atol=1e-6)
  assert_close(out.guided, (plain.guided + flipped.guided[:, :, ::-1]) / 2, atol=1e-6)
  gap, gap_vars = models.init(models.GapNet)  # rescaling needs a size-agnostic head
  gap_explain = gcj.guided_gradcam(gap.apply, gap_vars)
  scaled = gcj.augment(gap_explain, flips=False, scales=(1.0, 2.0))(x, t)
  # by composition: the explanation of the image upsampled to 16x16, its maps and
  # gradients resized back to the original frame (area-averaging bilinear), averaged
  # with the plain explanation; cam is the normalised mean of the upsampled maps
  base = gap_explain(x, t)
  big = gap_explain(jax.image.resize(x, (2, 16, 16, 3), "bilinear"), t)
  down = lambda m, size: jax.image.resize(m, (*m.shape[:-2], *size), "bilinear",
                                          antialias=True)
  assert big.cam_raw.shape == (2, 16, 16)
  assert_close(scaled.cam_raw, (base.cam_raw + down(big.cam_raw, (8, 8))) / 2, atol=1e-6)
  guided_back = jnp.moveaxis(down(jnp.moveaxis(big.guided, -1, 0), (8, 8)), 0, -1)
  assert_close(scaled.guided, (base.guided + guided_back) / 2, atol=1e-6)
  assert_close(scaled.cam, gcj.normalize((base.cam + down(big.cam, (8, 8))) / 2),
               atol=1e-6)


def test_gcj_jit_of_a_smoothed_explainer_keeps_the_smoothing():
  model, variables = _vgg()
  x = models.images(2)
  smooth = gcj.noise_tunnel(gcj.gradcam(model.apply, variables), n=2, sigma=0.3)
  assert smooth.name == "noise_tunnel(gradcam)" and smooth.params is variables
  a = gcj.jit(smooth)(x, key=jax.random.key(0))
  b = smooth(x, key=jax.random.key(0))
  assert_close(a.cam_raw, b.cam_raw, atol=1e-5)
  assert not np.allclose(a.cam_raw, gcj.gradcam(model.apply, variables)(x).cam_raw)


def _tiny():
  split = gcj.Split(lambda p, x: jax.nn.relu(x * p), lambda p, a: a.mean((1, 2)))
  return split, jnp.float32(2.0)


_WRAPPERS = {
  "noise_tunnel": lambda e: gcj.noise_tunnel(e, n=2, sigma=0.2),
  "augment": lambda e: gcj.augment(e),
  "jit": gcj.jit,
}
_CHAINS = [(a,) for a in _WRAPPERS] + [(a, b) for a in _WRAPPERS for b in _WRAPPERS] + [
  ("noise_tunnel", "augment", "jit"), ("noise_tunnel", "jit", "augment"),
  ("augment", "noise_tunnel", "jit"), ("augment", "jit", "noise_tunnel"),
  ("jit", "noise_tunnel", "augment"), ("jit", "augment", "noise_tunnel")]


@pytest.mark.parametrize("chain", _CHAINS, ids=["(".join(c) for c in _CHAINS])
def test_every_nesting_of_the_wrappers_can_be_called(chain):
  """augment(noise_tunnel(e)) raised TypeError with key= (augment did not pass it on)
  and ArgumentError without; the README promises any nesting."""
  split, params = _tiny()
  x = jax.random.uniform(jax.random.key(0), (2, 4, 4, 3))
  t, key = jnp.array([1, 2]), jax.random.key(3)
  closure, by_arg = gcj.gradcam(split, params), gcj.gradcam(split)
  for name in chain:  # the first name is the innermost wrapper
    closure, by_arg = _WRAPPERS[name](closure), _WRAPPERS[name](by_arg)
  keyed = "noise_tunnel" in chain
  assert closure.takes_key == by_arg.takes_key == keyed
  for targets in (None, t):
    if keyed:
      with pytest.raises(gcj.ArgumentError, match="key"):
        closure(x, targets)
      out = closure(x, targets, key=key)
      _close(out, closure(x, targets, key=key))  # reproducible from the key
      _close(out, by_arg(params, x, targets, key=key), atol=1e-6)
    else:
      with pytest.raises(gcj.ArgumentError, match="draws nothing at random"):
        closure(x, targets, key=key)
      out = closure(x, targets)
      _close(out, by_arg(params, x, targets), atol=1e-6)
    assert out.cam.shape == (2, 4, 4)
    if targets is not None:
      assert out.targets.tolist() == [1, 2]


def test_nested_wrappers_compute_what_they_say():
  split, params = _tiny()
  x = jax.random.uniform(jax.random.key(0), (2, 4, 4, 3))
  key, e = jax.random.key(4), gcj.gradcam(split, params)
  # augment without augmentations is its explainer, called with a key derived from its own
  nt = gcj.noise_tunnel(e, n=3, sigma=0.3)
  once = gcj.augment(nt, flips=False)(x, key=key)
  _close(once, nt(x, key=jax.random.fold_in(key, 0)), atol=1e-6)
  # noise of width 0 at both levels leaves the plain map
  twice = gcj.noise_tunnel(gcj.noise_tunnel(e, n=2, sigma=0.0), n=2, sigma=0.0)
  _close(twice(x, key=key), e(x), atol=1e-6)
