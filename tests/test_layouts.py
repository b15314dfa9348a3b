"""Channels-first images (``image_layout="NCHW"``, the Equinox and PyTorch layout):
maps (B, H, W) and input gradients in the images' own layout, equal to the same model
written channels last; a layout that contradicts the shapes raises."""

import jax
import jax.numpy as jnp
import pytest

import gradcam_jax as gcj
from tests import models
from tests.models import assert_close

K1 = jax.random.normal(jax.random.key(1), (3, 3, 3, 5)) * 0.5   # HWIO
K2 = jax.random.normal(jax.random.key(2), (3, 3, 5, 6)) * 0.3
W = jax.random.normal(jax.random.key(3), (6, 4))
PARAMS = {"k1": K1, "k2": K2, "w": W}


def _conv(x, k, layout):
  return jax.lax.conv_general_dilated(x, k, (1, 1), "SAME",
                                      dimension_numbers=(layout, "HWIO", layout))


def split(layout):
  """The same two-conv model, written for `layout` images and activations."""
  spatial = (1, 2) if layout == "NHWC" else (2, 3)

  def features(p, x):
    return jax.nn.relu(_conv(jax.nn.relu(_conv(x, p["k1"], layout)), p["k2"], layout))

  def head(p, a):
    return a.mean(spatial) @ p["w"]
  return gcj.Split(features, head)


def _nchw(x):
  return jnp.transpose(x, (0, 3, 1, 2))


@pytest.fixture(scope="module")
def images():
  x = models.images(3)  # (3, 8, 8, 3) NHWC
  return x, _nchw(x)


FIELDS = ("cam", "cam_raw", "guided", "guided_gradcam", "logits", "targets")
EXPLAINERS = {
    "gradcam": lambda m, **kw: gcj.gradcam(m, PARAMS, **kw),
    "layercam": lambda m, **kw: gcj.cam(m, PARAMS, method="layercam", **kw),
    "scorecam": lambda m, **kw: gcj.cam(m, PARAMS, method="scorecam", top_n=3,
                                        batch_size=2, **kw),
    "ablationcam": lambda m, **kw: gcj.cam(m, PARAMS, method="ablationcam", **kw),
    "guided_backprop": lambda m, **kw: gcj.guided_backprop(
        m, PARAMS, **{k: v for k, v in kw.items() if k == "image_layout"}),
    "guided_gradcam": lambda m, **kw: gcj.guided_gradcam(m, PARAMS, **kw),
}


@pytest.mark.parametrize("name", sorted(EXPLAINERS))
def test_channels_first_equals_channels_last(images, name):
  x, x_first = images
  build = EXPLAINERS[name]
  last = jax.jit(build(split("NHWC")))(x)
  first = jax.jit(build(split("NCHW"), image_layout="NCHW"))(x_first)
  for field in FIELDS:
    a, b = getattr(last, field), getattr(first, field)
    assert (a is None) == (b is None), field
    if a is None:
      continue
    if field in ("guided", "guided_gradcam"):
      a = _nchw(a)  # input gradients come back in the images' layout
    assert b.shape == a.shape, field
    assert_close(b, a, atol=1e-5)
  if first.cam is not None:
    assert first.cam.shape == (3, 8, 8)
    assert float(first.cam.max()) == pytest.approx(1.0, abs=1e-6)


def test_channels_first_eager_equals_jit(images):
  _, x_first = images
  explain = gcj.guided_gradcam(split("NCHW"), PARAMS, image_layout="NCHW")
  eager, jitted = explain(x_first), jax.jit(explain)(x_first)
  assert_close(eager.guided_gradcam, jitted.guided_gradcam, atol=1e-6)
  assert_close(eager.cam, jitted.cam, atol=1e-6)


def test_channels_first_with_several_targets(images):
  x, x_first = images
  t = jnp.array([[0, 1], [2, 3], [1, 0]])
  last = gcj.guided_gradcam(split("NHWC"), PARAMS)(x, t)
  first = gcj.guided_gradcam(split("NCHW"), PARAMS, image_layout="NCHW")(x_first, t)
  assert first.cam.shape == (3, 2, 8, 8) and first.guided.shape == (3, 2, 3, 8, 8)
  assert_close(first.cam, last.cam, atol=1e-5)
  assert_close(first.guided_gradcam,
               jnp.transpose(last.guided_gradcam, (0, 1, 4, 2, 3)), atol=1e-5)


def test_augment_channels_first(images):
  x, x_first = images
  last = gcj.augment(gcj.guided_gradcam(split("NHWC"), PARAMS), scales=(1.0, 1.5))(x)
  first = gcj.augment(gcj.guided_gradcam(split("NCHW"), PARAMS, image_layout="NCHW"),
                      scales=(1.0, 1.5), image_layout="NCHW")(x_first)
  assert_close(first.cam, last.cam, atol=1e-5)
  assert_close(first.guided, _nchw(last.guided), atol=1e-5)


def test_channels_first_images_without_the_option_raise(images):
  """Before: (B, C, H, W) images gave (B, C, H) maps without a word."""
  _, x_first = images
  x_big = jnp.tile(x_first, (1, 1, 2, 2))  # (3, 3, 16, 16): grid 16 > "H" = 3
  with pytest.raises(gcj.LayerShapeError, match="image_layout='NCHW'"):
    gcj.gradcam(split("NCHW"), PARAMS)(x_big)


def test_channels_first_activations_under_nhwc_raise(images):
  """A Split whose features return (B, C, h, w) for NHWC images was read as
  (B, h, w, C), giving wrong maps silently. The shapes give it away when the channel
  count exceeds the image height, as here (12 channels, 8x8 images): the "grid"
  (12, 8) cannot come from the images. (With fewer channels than pixels no shape
  contradicts the reading, and only the declared layout can tell.)"""
  x, _ = images

  def features(p, x):
    return jnp.transpose(split("NHWC").features(p, x), (0, 3, 1, 2))  # (B, 6, 8, 8)
  wide = {**PARAMS, "k2": jnp.tile(PARAMS["k2"], (1, 1, 1, 2))}        # 12 channels
  model = gcj.Split(features, lambda p, a: a.mean((2, 3)) @ jnp.tile(p["w"], (2, 1)))
  with pytest.raises(gcj.LayerShapeError, match=r"\(12, 8\).*image_layout='NCHW'"):
    gcj.gradcam(model, wide)(x)


def test_bad_layout_is_refused():
  for build in (lambda: gcj.gradcam(split("NHWC"), PARAMS, image_layout="HWC"),
                lambda: gcj.guided_backprop(split("NHWC"), PARAMS, image_layout="nchw"),
                lambda: gcj.augment(gcj.gradcam(split("NHWC"), PARAMS),
                                    image_layout="CHW")):
    with pytest.raises(gcj.ArgumentError, match="NHWC.*NCHW"):
      build()


def test_equinox_channels_first_needs_no_reshape():
  eqx = pytest.importorskip("equinox")

  class TakesHWC(eqx.Module):  # the documented way so far: NHWC images, transposed
    net: eqx.Module

    def __call__(self, x):
      return self.net(jnp.transpose(x, (2, 0, 1)))

  net = models.eqx_gap_net(jax.random.key(0))
  x = models.images(2)
  declared = gcj.guided_gradcam(net, layer=lambda m: m.conv, image_layout="NCHW")(
      _nchw(x))
  by_hand = gcj.guided_gradcam(TakesHWC(net), layer=lambda m: m.net.conv,
                               reshape=gcj.channels_last)(x)
  assert declared.cam.shape == (2, 8, 8)
  assert_close(declared.cam, by_hand.cam, atol=1e-6)
  assert_close(declared.guided, _nchw(by_hand.guided), atol=1e-6)
  # undeclared, the (C, H) = (3, 8) "image size" cannot hold the 8x8 grid: it raises
  with pytest.raises(gcj.LayerShapeError, match="image_layout='NCHW'"):
    gcj.guided_gradcam(net, layer=lambda m: m.conv, reshape=gcj.channels_last)(_nchw(x))
