"""The CAM family: each method against its formula written out independently,
relations between methods, chunking, multi-target, eager == jit, batch == per-example."""

import functools

import cv2
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gradcam_jax as gcj
from gradcam_jax import _methods as m
from tests import models
from tests.models import assert_close

GRADIENT_METHODS = ["gradcam", "hirescam", "gradcam_elementwise", "xgradcam", "gradcam++",
                    "layercam", "eigencam", "eigengradcam", "fem", "kpcacam"]
ALL_METHODS = GRADIENT_METHODS + ["scorecam", "ablationcam"]


def _rand(seed, shape, positive=False):
  x = np.random.default_rng(seed).normal(size=shape).astype(np.float64)
  return np.abs(x) if positive else x


def _reference(method, a, g):
  """The formulas, written with NumPy loops over channels (h, w, K) -> (h, w)."""
  h, w, k = a.shape
  out = np.zeros((h, w))
  if method == "gradcam":
    for c in range(k):
      out += g[:, :, c].mean() * a[:, :, c]
  elif method == "hirescam":
    for c in range(k):
      out += g[:, :, c] * a[:, :, c]
  elif method == "gradcam_elementwise":
    for c in range(k):
      out += np.maximum(g[:, :, c] * a[:, :, c], 0)
  elif method == "xgradcam":
    for c in range(k):
      out += (a[:, :, c] * g[:, :, c]).sum() / (a[:, :, c].sum() + 1e-7) * a[:, :, c]
  elif method == "gradcam++":
    for c in range(k):
      gc, s = g[:, :, c], a[:, :, c].sum()
      # pytorch-grad-cam's GradCAMPlusPlus: eps = 0.000001 in the denominator
      coeff = np.where(gc != 0, gc ** 2 / (2 * gc ** 2 + s * gc ** 3 + 1e-6), 0)
      out += (coeff * np.maximum(gc, 0)).sum() * a[:, :, c]
  elif method == "layercam":
    for c in range(k):
      out += np.maximum(g[:, :, c], 0) * a[:, :, c]
  elif method in ("eigencam", "eigengradcam"):
    x = a if method == "eigencam" else a * g
    rows = x.reshape(h * w, k) - x.reshape(h * w, k).mean(0)
    cov = rows.T @ rows  # first principal direction = top eigenvector of X^T X
    vals, vecs = np.linalg.eigh(cov)
    proj = rows @ vecs[:, -1]
    ref = x.reshape(h * w, k).mean(1)
    out = (proj if proj @ (ref - ref.mean()) >= 0 else -proj).reshape(h, w)
  elif method == "fem":  # pytorch-grad-cam's FEM (k = 2), on NCHW as it runs
    act = a.transpose(2, 0, 1)[None]
    th = (act.mean(axis=(2, 3)) + 2 * act.std(axis=(2, 3)))[..., None, None]
    weights = (act > th).mean(axis=(2, 3))
    out = (weights[..., None, None] * act).sum(axis=1)[0]
  elif method == "kpcacam":  # pytorch-grad-cam's KPCA_CAM: scikit-learn's KernelPCA
    from sklearn.decomposition import KernelPCA
    rows = a.reshape(h * w, k) - a.reshape(h * w, k).mean(axis=0)
    out = KernelPCA(n_components=1, kernel="sigmoid").fit_transform(rows).reshape(h, w)
  return out


@pytest.mark.parametrize("method", GRADIENT_METHODS)
def test_method_matches_formula(method):
  a = _rand(0, (5, 6, 4), positive=True)
  g = _rand(1, (5, 6, 4))
  got = m.METHODS[method](jnp.asarray(a, jnp.float32), jnp.asarray(g, jnp.float32))
  assert_close(got, _reference(method, a, g), atol=2e-5, rtol=2e-4)


@pytest.mark.parametrize("method", ["gradcam++", "xgradcam"])
def test_small_gradients_match_pytorch_grad_cams_eps(method):
  """With gradients near 1e-3 the denominator's eps matters (Grad-CAM++ with 1e-7
  instead of pytorch-grad-cam's 1e-6 differs by tens of percent here)."""
  a = _rand(4, (5, 6, 4), positive=True)
  g = _rand(5, (5, 6, 4)) * 1e-3
  got = m.METHODS[method](jnp.asarray(a, jnp.float32), jnp.asarray(g, jnp.float32))
  want = _reference(method, a, g)
  assert_close(got / np.abs(want).max(), want / np.abs(want).max(), atol=1e-4)


def test_gradcam_equals_hirescam_for_spatially_constant_gradient():
  a = jnp.asarray(_rand(2, (4, 4, 3), positive=True), jnp.float32)
  g = jnp.broadcast_to(jnp.array([0.5, -1.0, 2.0]), (4, 4, 3))
  assert_close(m.gradcam_map(a, g), m.hirescam_map(a, g), atol=1e-6)


@pytest.mark.parametrize("method", GRADIENT_METHODS)
def test_methods_are_finite_on_all_zero_inputs(method):
  z = jnp.zeros((4, 4, 3))
  assert np.isfinite(np.asarray(m.METHODS[method](z, z))).all()
  assert np.isfinite(np.asarray(m.METHODS[method](z, jnp.ones((4, 4, 3))))).all()


def test_eigencam_sign_follows_mean_activation():
  a = jnp.asarray(_rand(3, (6, 6, 5), positive=True), jnp.float32)
  a = a.at[1:3, 1:3].add(5.0)  # a strong blob
  got = np.asarray(m.eigencam_map(a, jnp.zeros_like(a)))
  assert np.corrcoef(got.ravel(), np.asarray(a.mean(-1)).ravel())[0, 1] > 0.5
  flipped = np.asarray(m.eigencam_map(-a, jnp.zeros_like(a)))  # sign fixed per input
  assert np.corrcoef(flipped.ravel(), np.asarray(-a.mean(-1)).ravel())[0, 1] > 0.5


# --- a tiny model with hand-checkable perturbation methods ------------------------


@functools.lru_cache(maxsize=None)
def _vgg():
  return models.init(models.VggNet)


@pytest.mark.parametrize("method", ALL_METHODS)
def test_methods_through_driver_nonnegative_jit_and_per_example(method):
  model, variables = _vgg()
  x, t = models.images(3), jnp.array([0, 2, 1])
  explain = gcj.cam(model.apply, variables, method=method, batch_size=2)
  jitted = jax.jit(explain)
  out = jitted(x, t)
  assert out.cam.shape == (3, 8, 8) and out.cam_raw.shape == (3, 4, 4)
  assert np.all(np.asarray(out.cam_raw) >= 0) and np.isfinite(out.cam).all()
  assert_close(explain(x, t).cam_raw, out.cam_raw, atol=1e-5, rtol=1e-4)
  for i in range(3):
    assert_close(jitted(x[i:i + 1], t[i:i + 1]).cam_raw[0], out.cam_raw[i], atol=1e-5,
                 rtol=1e-4)


@pytest.mark.parametrize("method", ["gradcam", "gradcam++", "scorecam", "ablationcam"])
def test_multi_target_equals_single_target_runs(method):
  model, variables = _vgg()
  x = models.images(2)
  targets = jnp.array([[0, 1, 3], [2, 2, 0]])
  explain = jax.jit(gcj.cam(model.apply, variables, method=method))
  multi = explain(x, targets)
  assert multi.cam.shape == (2, 3, 8, 8) and multi.cam_raw.shape == (2, 3, 4, 4)
  for j in range(3):
    single = explain(x, targets[:, j])
    assert_close(multi.cam_raw[:, j], single.cam_raw, atol=1e-5, rtol=1e-4)
    assert_close(multi.cam[:, j], single.cam, atol=1e-5)


def test_multi_target_guided_gradcam():
  model, variables = _vgg()
  x = models.images(2)
  targets = jnp.array([[0, 1], [3, 2]])
  explain = jax.jit(gcj.guided_gradcam(model.apply, variables))
  multi = explain(x, targets)
  assert multi.guided.shape == (2, 2, 8, 8, 3)
  for j in range(2):
    single = explain(x, targets[:, j])
    for field in ("cam", "cam_raw", "guided", "guided_gradcam"):
      assert_close(getattr(multi, field)[:, j], getattr(single, field), atol=1e-5)
  gb = jax.jit(gcj.guided_backprop(model.apply, variables))(x, targets)
  assert_close(gb.guided, multi.guided, atol=1e-6)


# --- several layers, smoothing ------------------------------------------------------

def test_several_layers_average_normalised_maps():
  """Each layer's Grad-CAM worked out by hand (activations and gradients from a
  pure-JAX copy of the model, OpenCV's bilinear resize, min-max by hand), then the
  average of the normalised maps: pytorch-grad-cam's rule for several layers."""
  import flax.linen as nn

  k0 = jax.random.normal(jax.random.key(20), (3, 3, 3, 4)) * 0.4
  k1 = jax.random.normal(jax.random.key(21), (3, 3, 4, 5)) * 0.4
  w = jax.random.normal(jax.random.key(22), (5, 3))

  class Net(nn.Module):
    @nn.compact
    def __call__(self, x):
      a0 = models.ConvReLU(4, name="l0")(x)
      pooled = nn.max_pool(a0, (2, 2), (2, 2))
      a1 = models.ConvReLU(5, name="l1")(pooled)
      return nn.Dense(3, use_bias=False, name="fc")(a1.mean((1, 2)))

  zeros = lambda n: jnp.zeros(n)  # noqa: E731
  variables = {"params": {"l0": {"conv": {"kernel": k0, "bias": zeros(4)}},
                          "l1": {"conv": {"kernel": k1, "bias": zeros(5)}},
                          "fc": {"kernel": w}}}
  x, t = models.images(2), jnp.array([1, 2])
  conv = lambda a, k: jax.lax.conv_general_dilated(  # noqa: E731
      a, k, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))
  pool = lambda a: jax.lax.reduce_window(  # noqa: E731
      a, -jnp.inf, jax.lax.max, (1, 2, 2, 1), (1, 2, 2, 1), "VALID")
  a0 = jax.nn.relu(conv(x, k0))
  after0 = lambda a: jax.nn.relu(conv(pool(a), k1)).mean((1, 2)) @ w  # noqa: E731
  a1 = jax.nn.relu(conv(pool(a0), k1))
  after1 = lambda a: a.mean((1, 2)) @ w  # noqa: E731

  def by_hand(a, rest):
    g = jax.grad(lambda z: jnp.take_along_axis(rest(z), t[:, None], 1).sum())(a)
    raw = np.maximum(np.einsum("bhwk,bk->bhw", np.asarray(a), np.asarray(g.mean((1, 2)))),
                     0)
    up = np.stack([cv2.resize(m, (8, 8), interpolation=cv2.INTER_LINEAR) for m in raw])
    lo, hi = up.min((1, 2), keepdims=True), up.max((1, 2), keepdims=True)
    return (up - lo) / (hi - lo)

  mean = (by_hand(a0, after0) + by_hand(a1, after1)) / 2
  both = gcj.cam(Net().apply, variables, layer=["l0", "l1"])(x, t)
  lo, hi = mean.min((1, 2), keepdims=True), mean.max((1, 2), keepdims=True)
  assert_close(both.cam, (mean - lo) / (hi - lo), atol=1e-5)
  # cam_raw keeps its meaning: each layer's raw map at its own resolution
  assert [r.shape for r in both.cam_raw] == [(2, 8, 8), (2, 4, 4)]
  for raw, (a, rest) in zip(both.cam_raw, [(a0, after0), (a1, after1)]):
    g = jax.grad(lambda z: jnp.take_along_axis(rest(z), t[:, None], 1).sum())(a)
    assert_close(raw, jax.nn.relu(jnp.einsum("bhwk,bk->bhw", a, g.mean((1, 2)))),
                 atol=1e-5)
  # and the smoothing wrappers carry the tuple through
  smooth = gcj.augment(gcj.cam(Net().apply, variables, layer=["l0", "l1"]))(x, t)
  assert [r.shape for r in smooth.cam_raw] == [(2, 8, 8), (2, 4, 4)]




@pytest.mark.parametrize("kernel, gamma", [("sigmoid", None), ("rbf", 0.3), ("poly", 0.2),
                                           ("linear", None)])
@pytest.mark.parametrize("size", [(5, 6), (16, 15)])  # 240 positions: scikit-learn's ARPACK
def test_kpcacam_equals_scikit_learns_kernel_pca(kernel, gamma, size):
  """pytorch-grad-cam's KPCA_CAM: per-channel centring, then scikit-learn's
  KernelPCA(n_components=1) (its sign rule included) on the (h*w, K) rows."""
  import functools
  decomposition = pytest.importorskip("sklearn.decomposition")
  a = _rand(3, (*size, 6), positive=True)
  rows = a.reshape(-1, 6) - a.reshape(-1, 6).mean(axis=0)
  want = decomposition.KernelPCA(n_components=1, kernel=kernel, gamma=gamma).fit_transform(
    rows).reshape(size)
  fn = functools.partial(m.METHODS["kpcacam"], kernel=kernel, gamma=gamma)
  got = fn(jnp.asarray(a, jnp.float32), jnp.zeros(a.shape, jnp.float32))
  assert_close(got, want, atol=2e-4 * np.abs(want).max(), rtol=2e-3)


def test_kpcacam_names_a_kernel_it_does_not_know():
  import functools
  fn = functools.partial(m.METHODS["kpcacam"], kernel="laplacian")
  with pytest.raises(gcj.ArgumentError, match=r"kernel: expected one of \('sigmoid'"):
    fn(jnp.ones((3, 3, 2)), jnp.ones((3, 3, 2)))
