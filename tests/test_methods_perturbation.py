"""Score-CAM and Ablation-CAM (gradcam_jax/_methods/perturbation.py) on a tiny split model with hand-computed answers; chunking and Faster Score-CAM."""


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
