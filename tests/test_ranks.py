"""Signals and volumes (issue 20): every explainer on (B, L, C) and (B, D, H, W, C)
inputs, channels last and first. Closed forms; each method's map by hand (pure-JAX
activations and gradients, the formula on NumPy, a NumPy separable linear
interpolation); eager == jit == vmap, batch == per example, sharded == one device,
several targets == separate runs; channels first == channels last; the max-pool
backward rule in 1-D and 3-D (the strided-convolution rule's cases of every rank are
in test_guided_fast_vjp.py); the errors."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding, PartitionSpec as P

import gradcam_jax as gcj
from gradcam_jax._guided import fast_vjp
from tests.models import assert_close
from tests.test_methods import GRADIENT_METHODS, _reference

RANKS = (1, 3)
SPATIAL = {1: (12,), 3: (4, 6, 5)}  # the inputs' spatial sizes
LAST = {1: ("NWC", "WIO"), 2: ("NHWC", "HWIO"), 3: ("NDHWC", "DHWIO")}
FIRST = {1: ("NCW", "OIW"), 3: ("NCDHW", "OIDHW")}
C_IN, K1, K2, CLASSES = 2, 3, 5, 4


def _params(rank):
  keys = jax.random.split(jax.random.key(rank), 3)
  window = (3,) * rank
  return {
    "k1": jax.random.normal(keys[0], (*window, C_IN, K1)) * 0.6,  # spatial, I, O
    "k2": jax.random.normal(keys[1], (*window, K1, K2)) * 0.4,
    "w": jax.random.normal(keys[2], (K2, CLASSES)),
  }


def _conv(x, k, rank, first, stride=1):
  lhs, rhs = FIRST[rank] if first else LAST[rank]
  if first:  # the kernel as PyTorch stores it: (O, I, *window)
    k = jnp.moveaxis(jnp.moveaxis(k, -1, 0), -1, 1)
  return jax.lax.conv_general_dilated(
    x, k, (stride,) * rank, "SAME", dimension_numbers=(lhs, rhs, lhs))


def split(rank, first=False):
  """Two convolutions and a linear head, written for `rank` spatial axes, channels
  last (or first)."""
  space = tuple(range(2, 2 + rank)) if first else tuple(range(1, 1 + rank))

  def features(p, x):
    a = jax.nn.relu(_conv(x, p["k1"], rank, first))
    return jax.nn.relu(_conv(a, p["k2"], rank, first))

  def head(p, a):
    return a.mean(space) @ p["w"]

  return gcj.Split(features, head)


def _images(rank, batch=3, seed=1):
  return jax.random.normal(jax.random.key(seed), (batch, *SPATIAL[rank], C_IN))


def _first(x):
  return jnp.moveaxis(x, -1, 1)


def _interp(maps, size):
  """Separable linear interpolation, half-pixel centres, edges clamped: NumPy, one
  axis after another (what OpenCV's INTER_LINEAR does in 2-D)."""
  out = np.asarray(maps, np.float64)
  for axis, n_out in enumerate(size, start=1):
    n_in = out.shape[axis]
    src = np.clip((np.arange(n_out) + 0.5) * n_in / n_out - 0.5, 0, n_in - 1)
    lo = np.floor(src).astype(int)
    hi = np.minimum(lo + 1, n_in - 1)
    frac = (src - lo).reshape([-1 if i == axis else 1 for i in range(out.ndim)])
    out = np.take(out, lo, axis) * (1 - frac) + np.take(out, hi, axis) * frac
  return out


def _minmax(maps):
  axes = tuple(range(1, maps.ndim))
  lo, hi = maps.min(axes, keepdims=True), maps.max(axes, keepdims=True)
  return (maps - lo) / (hi - lo)


def _by_hand(method, a, g):
  """`_reference`'s formula for one example's (*s, K) activation, on its positions
  laid out as an (N, 1, K) grid: every method sums or averages over all positions."""
  flat = _reference(method, a.reshape(-1, 1, a.shape[-1]), g.reshape(-1, 1, g.shape[-1]))
  return flat.reshape(a.shape[:-1])


def _activations_and_gradients(rank, x, t):
  model, p = split(rank), _params(rank)
  a = model.features(p, x)
  g = jax.grad(lambda a: jnp.take_along_axis(model.head(p, a), t[:, None], 1).sum())(a)
  return np.asarray(a, np.float64), np.asarray(g, np.float64)


@pytest.mark.parametrize("rank", RANKS)
def test_linear_model_closed_form(rank):
  """Activation = the input itself, head = spatial mean then W: dy/dA_k = W[k, c] / N
  everywhere, so Grad-CAM is exactly ReLU(sum_k A_k W[k, c]) / N."""
  w = jnp.asarray(np.random.default_rng(0).normal(size=(C_IN, CLASSES)), jnp.float32)
  space = tuple(range(1, 1 + rank))
  model = gcj.Split(lambda p, x: x * 1.0, lambda p, a: a.mean(space) @ p)
  x, t = _images(rank), jnp.array([0, 3, 1])
  out = gcj.gradcam(model, w)(x, t)
  n = np.prod(SPATIAL[rank])
  want = np.maximum(np.einsum("b...k,bk->b...", np.asarray(x), np.asarray(w.T[t])) / n, 0)
  assert out.cam_raw.shape == (3, *SPATIAL[rank])
  assert_close(out.cam_raw, want, atol=1e-6)
  assert_close(out.cam, _minmax(want), atol=1e-5)


@pytest.mark.parametrize("method", GRADIENT_METHODS)
@pytest.mark.parametrize("rank", RANKS)
def test_every_gradient_method_by_hand(rank, method):
  x, t = _images(rank), jnp.array([1, 0, 2])
  a, g = _activations_and_gradients(rank, x, t)
  out = gcj.cam(split(rank), _params(rank), method=method)(x, t)
  raw = np.maximum(np.stack([_by_hand(method, a[i], g[i]) for i in range(3)]), 0)
  scale = max(np.abs(raw).max(), 1e-6)
  assert_close(out.cam_raw, raw, atol=2e-5 * scale, rtol=2e-4)
  assert out.cam.shape == (3, *SPATIAL[rank])
  ok = raw.reshape(3, -1).max(1) > 1e-6  # an all-zero map normalises to zero
  assert_close(out.cam[ok], _minmax(_interp(raw[ok], SPATIAL[rank])), atol=1e-5)


@pytest.mark.parametrize("rank", RANKS)
def test_scorecam_and_ablationcam_by_hand(rank):
  model, p = split(rank), _params(rank)
  x, t = _images(rank), jnp.array([2, 1, 0])
  a = np.asarray(model.features(p, x), np.float64)
  logits = lambda z: np.asarray(model.head(p, model.features(p, jnp.asarray(z, jnp.float32))))  # noqa: E731
  rows = np.arange(3)
  score = np.zeros((3, K2))
  ablated = np.zeros((3, K2))
  base = logits(x)[rows, t]
  for k in range(K2):
    mask = _minmax(_interp(a[..., k], SPATIAL[rank]))[..., None]
    probs = jax.nn.softmax(logits(np.asarray(x) * mask), axis=-1)
    score[:, k] = np.asarray(probs)[rows, t]
    cut = a.copy()
    cut[..., k] = 0
    ablated[:, k] = np.asarray(model.head(p, jnp.asarray(cut, jnp.float32)))[rows, t]
  for method, weights in [("scorecam", score), ("ablationcam", (base[:, None] - ablated)
                                                 / base[:, None])]:
    out = gcj.cam(model, p, method=method, batch_size=2)(x, t)
    want = np.maximum(np.einsum("b...k,bk->b...", a, weights), 0)
    assert_close(out.cam_raw, want, atol=1e-4 * max(want.max(), 1e-6), rtol=1e-3)


@functools.lru_cache(maxsize=None)
def _guided_gradcam(rank):
  return gcj.guided_gradcam(split(rank), _params(rank))


@pytest.mark.parametrize("rank", RANKS)
def test_guided_gradcam_by_hand(rank):
  """guided = the input gradient with guided ReLUs (written here as a custom_vjp);
  guided_gradcam = guided * cam over the channel axis."""

  @jax.custom_vjp
  def relu(z):
    return jnp.maximum(z, 0)

  relu.defvjp(lambda z: (relu(z), z), lambda z, g: (jnp.where((z > 0) & (g > 0), g, 0),))
  p = _params(rank)

  def score(x, t):
    a = relu(_conv(relu(_conv(x, p["k1"], rank, False)), p["k2"], rank, False))
    return jnp.take_along_axis(a.mean(tuple(range(1, 1 + rank))) @ p["w"], t[:, None], 1).sum()

  x, t = _images(rank), jnp.array([0, 1, 3])
  out = jax.jit(_guided_gradcam(rank))(x, t)
  want = jax.grad(score)(x, t)
  assert out.guided.shape == x.shape
  assert_close(out.guided, want, atol=1e-6)
  assert_close(out.guided_gradcam, want * out.cam[..., None], atol=1e-6)


@pytest.mark.parametrize("rank", RANKS)
def test_eager_jit_vmap_and_per_example_agree(rank):
  explain = _guided_gradcam(rank)
  x, t = _images(rank, batch=4), jnp.array([0, 1, 2, 3])
  jitted = jax.jit(explain)(x, t)
  eager = explain(x, t)
  vmapped = jax.vmap(lambda im, c: explain(im[None], c[None]))(x, t)
  for field in ("cam", "cam_raw", "guided", "guided_gradcam", "logits"):
    assert_close(getattr(eager, field), getattr(jitted, field), atol=1e-5)
    assert_close(getattr(vmapped, field)[:, 0], getattr(jitted, field), atol=1e-5)
  one = jax.jit(explain)(x[2:3], t[2:3])
  assert_close(one.cam, jitted.cam[2:3], atol=1e-5)


@pytest.mark.parametrize("rank", RANKS)
def test_sharded_over_four_devices_equals_one_device(rank):
  if jax.device_count() < 4:
    pytest.skip("needs 4 devices (XLA_FLAGS=--xla_force_host_platform_device_count=4)")
  mesh = jax.make_mesh((4,), ("batch",), axis_types=(jax.sharding.AxisType.Auto,))
  explain = jax.jit(gcj.guided_gradcam(split(rank)))
  x, t, p = _images(rank, batch=4), jnp.array([3, 2, 1, 0]), _params(rank)
  reference = explain(p, x, t)
  on = lambda v, spec: jax.device_put(v, NamedSharding(mesh, spec))  # noqa: E731
  sharded = explain(on(p, P()), on(x, P("batch")), on(t, P("batch")))
  assert len(sharded.cam.sharding.device_set) == 4
  for field in ("cam", "guided_gradcam"):
    assert_close(getattr(sharded, field), getattr(reference, field), atol=1e-5)


@pytest.mark.parametrize("rank", RANKS)
def test_several_targets_equal_separate_runs(rank):
  explain = jax.jit(gcj.cam(split(rank), _params(rank), method="gradcam++"))
  x = _images(rank)
  ts = jnp.array([[0, 3], [1, 1], [2, 0]])
  both = explain(x, ts)
  assert both.cam.shape == (3, 2, *SPATIAL[rank])
  for j in range(2):
    one = explain(x, ts[:, j])
    assert_close(both.cam[:, j], one.cam, atol=1e-6)
    assert_close(both.cam_raw[:, j], one.cam_raw, atol=1e-6)


EXPLAINERS = {
  "gradcam": lambda m, p, **kw: gcj.gradcam(m, p, **kw),
  "scorecam": lambda m, p, **kw: gcj.cam(m, p, method="scorecam", batch_size=2, **kw),
  "guided_gradcam": lambda m, p, **kw: gcj.guided_gradcam(m, p, **kw),
  "integrated_gradients": lambda m, p, **kw: gcj.integrated_gradients(m, p, steps=4, **kw),
}


@pytest.mark.parametrize("name", sorted(EXPLAINERS))
@pytest.mark.parametrize("rank", RANKS)
def test_channels_first_equals_channels_last(rank, name):
  build, p = EXPLAINERS[name], _params(rank)
  x = _images(rank)
  last = build(split(rank), p)(x)
  first = build(split(rank, first=True), p, image_layout=FIRST[rank][0])(_first(x))
  assert first.cam.shape == (3, *SPATIAL[rank])
  assert_close(first.cam, last.cam, atol=1e-5)
  for field in ("guided", "guided_gradcam", "attribution"):
    if getattr(last, field) is not None:
      assert_close(getattr(first, field), _first(getattr(last, field)), atol=1e-5)


@pytest.mark.parametrize("rank", RANKS)
def test_pixel_methods_and_wrappers_keep_the_rank(rank):
  model, p, x = split(rank), _params(rank), _images(rank)
  for build in (gcj.saliency, gcj.input_x_gradient, gcj.deconvnet):
    out = build(model, p)(x)
    assert out.attribution.shape == x.shape and out.cam.shape == (3, *SPATIAL[rank])
  smooth = gcj.noise_tunnel(gcj.gradcam(model, p), n=2)(x, key=jax.random.key(0))
  assert smooth.cam.shape == (3, *SPATIAL[rank])
  assert_close(smooth.cam.reshape(3, -1).max(1), np.ones(3), atol=1e-6)


@pytest.mark.parametrize("rank", RANKS)
def test_augment_flips_every_named_axis(rank):
  """augment(flips=<axes>) averages the clean map and each axis's flipped run mapped
  back: computed here from separate runs."""
  model, p, x = split(rank), _params(rank), _images(rank)
  explain = gcj.gradcam(model, p)
  names = {1: "W", 3: "DHW"}[rank]
  out = gcj.augment(explain, flips=names)(x)
  clean = explain(x)
  raws = [clean.cam_raw]
  for axis in range(1, 1 + rank):
    flipped = explain(jnp.flip(x, axis), clean.targets)
    raws.append(jnp.flip(flipped.cam_raw, axis))
  assert_close(out.cam_raw, sum(raws) / len(raws), atol=1e-6)
  with pytest.raises(gcj.ArgumentError, match="spatial axis names.*got 'HX'"):
    gcj.augment(explain, flips="HX")(x)


def test_volume_scales_resize_every_axis():
  model, p, x = split(3), _params(3), _images(3)
  out = gcj.augment(gcj.gradcam(model, p), flips=False, scales=(1.0, 2.0))(x)
  assert out.cam.shape == (3, *SPATIAL[3]) and out.cam_raw.shape == (3, *SPATIAL[3])


def test_segmentation_target_takes_a_region_of_a_signal():
  """A 1-D segmentation model (per-position logits): the target is class c summed over
  the masked positions."""
  kernel = jax.random.normal(jax.random.key(5), (3, C_IN, CLASSES))
  model = gcj.Split(
    lambda p, x: jax.nn.relu(x),
    lambda p, a: jax.lax.conv_general_dilated(a, p, (1,), "SAME",
                                              dimension_numbers=("NWC", "WIO", "NWC")))
  mask = jnp.zeros(12).at[3:7].set(1.0)
  x, t = _images(1), jnp.array([1, 0, 3])
  out = gcj.gradcam(model, kernel, target=gcj.segmentation_target(mask))(x, t)
  logits = model.head(kernel, jax.nn.relu(x))
  assert_close(gcj.segmentation_target(mask)(logits, t),
               (logits[:, 3:7] * jax.nn.one_hot(t, CLASSES)[:, None]).sum((1, 2)), atol=1e-5)
  assert out.cam.shape == (3, 12)
  with pytest.raises(gcj.TargetError, match=r"mask of shape \(12,\) or \(3, 12\).*got shape \(5,\)"):
    gcj.segmentation_target(jnp.ones(5))(logits, t)


# -- the guided backward rules in 1-D and 3-D ---------------------------------------


def _eqn(fn, *args):
  (eqn,) = [e for e in jax.make_jaxpr(fn)(*args).jaxpr.eqns
            if e.primitive.name in ("reduce_window_max", "conv_general_dilated")]
  return eqn


@pytest.mark.parametrize("rank", (1, 2, 3))
def test_fast_max_pool_is_bit_equal_to_xla_with_ties(rank):
  """The max pool's faster backward rule covers every rank: the gradient equals XLA's
  (select_and_scatter) bit for bit, ties (repeated values, first maximum wins)
  included."""
  window = (1, *(2,) * rank, 1)
  pool = lambda x: jax.lax.reduce_window(x, -jnp.inf, jax.lax.max, window, window, "VALID")  # noqa: E731
  shape = (2, *(4,) * rank, 3)
  x = jnp.round(jax.random.normal(jax.random.key(0), shape) * 1.5)  # many ties
  g = jax.random.normal(jax.random.key(1), pool(x).shape)
  fast = fast_vjp.fast_backward(_eqn(pool, x))
  assert fast is not None
  want = jax.vjp(pool, x)[1](g)[0]
  got = jax.vjp(fast, x)[1](g)[0]
  np.testing.assert_array_equal(np.asarray(got), np.asarray(want))
  np.testing.assert_array_equal(np.asarray(fast(x)), np.asarray(pool(x)))


# -- bad input ------------------------------------------------------------------------


def test_volume_to_an_image_model_says_what_ran():
  model = split(2)
  p = {"k1": jnp.ones((3, 3, C_IN, K1)), "k2": jnp.ones((3, 3, K1, K2)),
       "w": jnp.ones((K2, CLASSES))}
  with pytest.raises(gcj.ImageError, match=r"could not run on images of shape \(2, 4, 6, 5, 2\)"):
    gcj.gradcam(model, p)(_images(3, batch=2))


@pytest.mark.parametrize("layout, shape, match", [
  ("NHWC", (2, 12, 2), r"image_layout='NHWC' expects an image batch of rank 4, "
                       r"\(B, H, W, C\); got shape \(2, 12, 2\) \(rank 3: image_layout 'NWC' or 'NCW'\)"),
  ("NCDHW", (2, 3, 8, 8), r"rank 5, \(B, C, D, H, W\).*'NHWC' or 'NCHW'"),
  (None, (2, 3, 4, 5, 6, 2), r"rank 3, 4 or 5.*got shape \(2, 3, 4, 5, 6, 2\)"),
  (None, (12, 2), r"rank 3, 4 or 5.*images\[None\]"),
])
def test_layout_that_does_not_match_the_rank(layout, shape, match):
  with pytest.raises(gcj.ImageError, match=match):
    gcj.gradcam(split(1), _params(1), image_layout=layout)(jnp.ones(shape))


def test_unknown_layout_lists_the_valid_ones():
  with pytest.raises(gcj.ArgumentError, match=r"image_layout: expected None.*'NWC', 'NCW', "
                                              r"'NHWC', 'NCHW', 'NDHWC', 'NCDHW'.*got 'NTC'"):
    gcj.gradcam(split(1), _params(1), image_layout="NTC")


def test_layer_of_another_rank_names_the_rank_expected():
  """A signal model's pooled (B, K) feature is no layer for a 1-D CAM (layer=None finds
  none; a named one says which rank it needs)."""
  import flax.linen as nn

  class Net(nn.Module):
    @nn.compact
    def __call__(self, x):
      a = nn.relu(nn.Conv(4, (3,), name="conv")(x))
      return nn.Dense(3, name="fc")(nn.Dense(4, name="pool")(a.mean(1)))

  x = _images(1, batch=2)
  variables = Net().init(jax.random.key(0), x)
  with pytest.raises(gcj.LayerShapeError, match=r"spatial rank 1.*\(B=2, w, C\) with w > 1"
                                                r"(.|\n)*conv"):
    gcj.gradcam(Net().apply, variables, layer="pool")(x)
  flat = gcj.Split(lambda p, x: _conv(x, p["k1"], 1, False).mean(1),
                   lambda p, a: a @ p["w"][:K1])
  with pytest.raises(gcj.LayerShapeError, match=r"layer=None.*\(B=2, w, C\) with w > 1 "
                                                r"\(spatial rank 1"):
    gcj.gradcam(flat, _params(1))(x)
