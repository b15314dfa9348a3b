"""Score-CAM, Ablation-CAM, IS-CAM, SS-CAM (gradcam_jax/_methods/perturbation.py)
and Random-CAM on a tiny split model with hand-computed answers; chunking and Faster
Score-CAM."""


import cv2
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gradcam_jax as gcj
from tests.models import assert_close


def _split_model():
  def features(p, x):  # 8x8 -> 4x4, K = 4 channels
    y = jax.nn.relu(jnp.einsum("bhwc,ck->bhwk", x, p["w"]))
    return y.reshape(y.shape[0], 4, 2, 4, 2, 4).mean(axis=(2, 4))

  def head(p, a):
    return jax.nn.relu(a.mean(axis=(1, 2)) @ p["v1"]) @ p["v2"]

  rng = np.random.default_rng(5)
  params = {"w": jnp.asarray(rng.normal(size=(3, 4)), jnp.float32),
            "v1": jnp.asarray(rng.normal(size=(4, 6)), jnp.float32),
            "v2": jnp.asarray(rng.normal(size=(6, 3)), jnp.float32)}
  return gcj.Split(features, head), params


def _images(n=3):
  return jnp.asarray(np.random.default_rng(6).uniform(size=(n, 8, 8, 3)), jnp.float32)


def test_scorecam_matches_hand_computation():
  split, params = _split_model()
  x, t = _images(), jnp.array([0, 1, 2])
  out = gcj.cam(split, params, method="scorecam")(x, t)
  a = np.asarray(split.features(params, x), np.float64)
  for b in range(3):
    weights = []
    for k in range(4):
      up = cv2.resize(a[b, :, :, k].astype(np.float32), (8, 8),
                      interpolation=cv2.INTER_LINEAR).astype(np.float64)
      mask = (up - up.min()) / (up.max() - up.min()) if up.max() > up.min() else 0 * up
      logits = np.asarray(split(params, (np.asarray(x[b]) * mask[..., None])[None]))[0]
      p = np.exp(logits - logits.max()) / np.exp(logits - logits.max()).sum()
      weights.append(p[int(t[b])])
    expected = np.maximum(np.einsum("hwk,k->hw", a[b], np.array(weights)), 0)
    assert_close(out.cam_raw[b], expected, atol=1e-5, rtol=1e-4)


def test_ablationcam_matches_hand_computation():
  split, params = _split_model()
  x, t = _images(), jnp.array([2, 0, 1])
  out = gcj.cam(split, params, method="ablationcam")(x, t)
  a = np.asarray(split.features(params, x), np.float64)
  for b in range(3):
    y = float(split.head(params, a[b:b + 1].astype(np.float32))[0, int(t[b])])
    weights = []
    for k in range(4):
      ablated = a[b:b + 1].copy()
      ablated[..., k] = 0
      yk = float(split.head(params, ablated.astype(np.float32))[0, int(t[b])])
      weights.append((y - yk) / y)
    expected = np.maximum(np.einsum("hwk,k->hw", a[b], np.array(weights)), 0)
    assert_close(out.cam_raw[b], expected, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("method", ["scorecam", "ablationcam"])
def test_chunked_equals_unchunked(method):
  split, params = _split_model()
  x, t = _images(), jnp.array([0, 1, 2])
  ref = jax.jit(gcj.cam(split, params, method=method))(x, t)
  for batch_size in (1, 2, 3, 4):
    out = jax.jit(gcj.cam(split, params, method=method, batch_size=batch_size))(x, t)
    assert_close(out.cam_raw, ref.cam_raw, atol=1e-6)


def test_faster_scorecam_top_n():
  split, params = _split_model()
  x, t = _images(), jnp.array([0, 1, 2])
  full = gcj.cam(split, params, method="scorecam")(x, t)
  same = gcj.cam(split, params, method="scorecam", top_n=4)(x, t)
  assert_close(full.cam_raw, same.cam_raw, atol=1e-6)
  # top_n=2: only the two channels of highest spatial variance carry weight
  a = np.asarray(split.features(params, x))
  top2 = np.argsort(-a.var(axis=(1, 2)), axis=1)[:, :2]
  two = gcj.cam(split, params, method="scorecam", top_n=2)(x, t)
  for b in range(3):
    drop = [k for k in range(4) if k not in top2[b]]
    a_kept = a[b].copy()
    a_kept[..., drop] = 0
    # the map only mixes the kept channels: it lies in their span
    coeffs, *_ = np.linalg.lstsq(a_kept.reshape(-1, 4)[:, top2[b]],
                                 np.asarray(two.cam_raw[b]).ravel(), rcond=None)
    pos = np.asarray(two.cam_raw[b]).ravel() > 0
    resid = a_kept.reshape(-1, 4)[:, top2[b]][pos] @ coeffs - np.asarray(two.cam_raw[b]).ravel()[pos]
    assert np.abs(resid).max() < 1e-4


def _torchcam_mask(a_bk: np.ndarray) -> np.ndarray:
  """torch-cam's mask of one channel (h, w): min-max at the layer's resolution with
  its 1e-8, then bilinear (half-pixel, as cv2.INTER_LINEAR) to 8x8."""
  norm = (a_bk - a_bk.min()) / (a_bk.max() - a_bk.min() + 1e-8)
  return cv2.resize(norm.astype(np.float32), (8, 8),
                    interpolation=cv2.INTER_LINEAR).astype(np.float64)


def _softmax(z):
  e = np.exp(z - z.max())
  return e / e.sum()


def test_iscam_matches_hand_computation():
  """Weights softmax_k(mean_i y(c_i M_k x) - y(x)), c_i = (1 + ... + i) / N (torch-cam's
  code), y the raw logit; the map ReLU(sum_k w_k A_k)."""
  split, params = _split_model()
  x, t, n = _images(), jnp.array([1, 2, 0]), 4
  out = gcj.cam(split, params, method=gcj.ALL_METHODS["iscam"]._replace(
    fn=lambda p: gcj.ALL_METHODS["iscam"].fn(p, num_samples=n)))(x, t)
  a = np.asarray(split.features(params, x), np.float64)
  coeffs = np.cumsum(np.arange(1, n + 1)) / n
  for b in range(3):
    y = float(split(params, x[b:b + 1])[0, int(t[b])])
    gains = []
    for k in range(4):
      m = _torchcam_mask(a[b, :, :, k])[..., None]
      ys = [float(split(params, (c * m * np.asarray(x[b]))[None].astype(np.float32))[
        0, int(t[b])]) for c in coeffs]
      gains.append(np.mean(ys) - y)
    expected = np.maximum(np.einsum("hwk,k->hw", a[b], _softmax(np.array(gains))), 0)
    assert_close(out.cam_raw[b], expected, atol=1e-5, rtol=1e-4)


def test_sscam_matches_hand_computation_with_its_noise():
  """Weights softmax_k(mean_i y(x (M_k + n_ik)) - y(x)), n_ik ~ N(0, std^2) per
  position (shared by the input's channels) from fold_in(fold_in(key, k), i); the
  noise is really there (the map differs from the noiseless one) and comes from the
  key (another key, another map; the same key, the same map)."""
  split, params = _split_model()
  x, t, n, std = _images(), jnp.array([0, 2, 1]), 3, 0.5
  record = gcj.ALL_METHODS["sscam"]
  explain = gcj.cam(split, params, method=record._replace(
    fn=lambda p: record.fn(p, num_samples=n, std=std)))
  key = jax.random.key(11)
  out = explain(x, t, key=key)
  layer_key = jax.random.fold_in(key, 0)  # the first (only) layer's key
  a = np.asarray(split.features(params, x), np.float64)
  for b in range(3):
    y = float(split(params, x[b:b + 1])[0, int(t[b])])
    gains = []
    for k in range(4):
      m = _torchcam_mask(a[b, :, :, k])[..., None]
      ys = []
      for i in range(n):
        draw = jax.random.fold_in(jax.random.fold_in(layer_key, k), i)
        noise = std * np.asarray(jax.random.normal(draw, (3, 8, 8, 1)), np.float64)[b]
        ys.append(float(split(params, (np.asarray(x[b]) * (m + noise))[None].astype(
          np.float32))[0, int(t[b])]))
      gains.append(np.mean(ys) - y)
    expected = np.maximum(np.einsum("hwk,k->hw", a[b], _softmax(np.array(gains))), 0)
    assert_close(out.cam_raw[b], expected, atol=1e-5, rtol=1e-4)
  quiet = gcj.cam(split, params, method=record._replace(
    fn=lambda p: record.fn(p, num_samples=n, std=0.0)))(x, t, key=key)
  assert not np.allclose(out.cam_raw, quiet.cam_raw, atol=1e-6)
  assert_close(explain(x, t, key=key).cam_raw, out.cam_raw, atol=0)
  assert not np.allclose(explain(x, t, key=jax.random.key(12)).cam_raw, out.cam_raw)


def test_randomcam_weights_are_uniform_draws_from_the_key():
  """ReLU(sum_k w_k A_k) with w ~ U(-1, 1)^K drawn per image from split(key, B)."""
  split, params = _split_model()
  x = _images()
  key = jax.random.key(4)
  out = gcj.cam(split, params, method="randomcam")(x, key=key)
  a = np.asarray(split.features(params, x), np.float64)
  keys = jax.random.split(jax.random.fold_in(key, 0), 3)
  for b in range(3):
    w = np.asarray(jax.random.uniform(keys[b], (4,), minval=-1.0, maxval=1.0))
    assert np.all(np.abs(w) <= 1)
    expected = np.maximum(np.einsum("hwk,k->hw", a[b], w), 0)
    assert_close(out.cam_raw[b], expected, atol=1e-5, rtol=1e-4)
  with pytest.raises(gcj.ArgumentError, match="draws at random; expected a PRNG key"):
    gcj.cam(split, params, method="randomcam")(x)
  with pytest.raises(gcj.ArgumentError, match="draws nothing at random"):
    gcj.cam(split, params, method="iscam")(x, key=key)
  guided = gcj.guided_gradcam(split, params, method="randomcam")
  assert guided.takes_key
  assert_close(guided(x, key=key).cam_raw, out.cam_raw, atol=1e-6)  # the same draws


def test_smooth_gradcampp_matches_hand_computation_with_its_noise():
  """torch-cam's Smooth Grad-CAM++ in NumPy on the split model: features and the
  head's gradient written out (ReLU(mean(A) @ v1) @ v2), the noise the method draws
  from its key (the layer's key: fold_in(key, 0); std * N(0, 1) per input element)."""
  split, params = _split_model()
  x, t, n, std = _images(), np.array([2, 0, 1]), 3, 0.3
  record = gcj.ALL_METHODS["smoothgradcam++"]
  record = record._replace(fn=lambda p: gcj.ALL_METHODS["smoothgradcam++"].fn(
    p, num_samples=n, std=std))
  key = jax.random.key(11)
  got = gcj.cam(split, params, method=record)(x, t, key=key)
  p = {k: np.asarray(v, np.float64) for k, v in params.items()}

  def features(x):
    y = np.maximum(np.einsum("bhwc,ck->bhwk", x, p["w"]), 0)
    return y.reshape(y.shape[0], 4, 2, 4, 2, 4).mean(axis=(2, 4))

  def grad(a):  # d y_t / d A, the same at every position: (B, 1, 1, K)
    z = a.mean(axis=(1, 2)) @ p["v1"]
    g = ((z > 0) * p["v2"][:, t].T) @ p["v1"].T / 16
    return g[:, None, None, :] * np.ones_like(a)

  x64 = np.asarray(x, np.float64)
  noise = std * np.asarray(jax.random.normal(jax.random.fold_in(key, 0), (n, *x.shape)))
  acts = [features(x64 + e) for e in noise]
  grads = [grad(a) for a in acts]
  g2, g3 = np.mean([g**2 for g in grads], 0), np.mean([g**3 for g in grads], 0)
  a0 = features(x64)
  alpha = g2 / (2 * g2 + (g3 * a0).sum(axis=(1, 2), keepdims=True) + 1e-8)
  w = (alpha * np.maximum(grads[-1], 0)).sum(axis=(1, 2))
  want = np.maximum(np.einsum("bhwk,bk->bhw", acts[-1], w), 0)
  assert want.max() > 0
  assert_close(got.cam_raw, want, atol=1e-5 * want.max(), rtol=1e-4)
  with pytest.raises(gcj.ArgumentError, match="PRNG"):
    gcj.cam(split, params, method="smoothgradcam++")(x, t)


@pytest.mark.parametrize("name, options, words", [
  ("sscam", {"num_samples": 0}, "sscam: num_samples: expected a whole number >= 1; got 0"),
  ("sscam", {"std": -1.0}, "sscam: std: expected a finite number >= 0; got -1.0"),
  ("iscam", {"num_samples": 2.5}, "iscam: num_samples"),
  ("smoothgradcam++", {"num_samples": -3}, "smoothgradcam++: num_samples"),
  ("smoothgradcam++", {"std": float("nan")}, "smoothgradcam++: std"),
])
def test_sampling_options_are_checked_by_name(name, options, words):
  split, params = _split_model()
  record = gcj.ALL_METHODS[name]
  record = record._replace(fn=lambda p: gcj.ALL_METHODS[name].fn(p, **options))
  key = {"key": jax.random.key(0)} if record.keyed else {}
  with pytest.raises(gcj.ArgumentError, match=words.replace("+", r"\+")):
    gcj.cam(split, params, method=record)(_images(), jnp.array([0, 1, 2]), **key)
