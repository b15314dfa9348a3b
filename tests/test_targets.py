"""Targets beyond one class (gradcam_jax/_targets.py): segmentation, detection and
embedding targets, by hand."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gradcam_jax as gcj
from tests import models
from tests.models import assert_close

def test_segmentation_target():
  def seg(v, x):  # a per-pixel classifier: 1x1 conv to 3 classes
    return jnp.einsum("bhwc,ck->bhwk", jax.nn.relu(x @ v["w"]), v["k"])
  split = gcj.Split(lambda p, x: jax.nn.relu(x @ p["w"]),
                    lambda p, a: jnp.einsum("bhwc,ck->bhwk", a, p["k"]))
  rng = np.random.default_rng(0)
  params = {"w": jnp.asarray(rng.normal(size=(3, 4)), jnp.float32),
            "k": jnp.asarray(rng.normal(size=(4, 3)), jnp.float32)}
  x = models.images(2)
  mask = jnp.zeros((8, 8)).at[2:5, 3:6].set(1.0)
  target = gcj.segmentation_target(mask)
  scores = target(seg(params, x), jnp.array([0, 2]))
  by_hand = jnp.array([seg(params, x)[0, 2:5, 3:6, 0].sum(), seg(params, x)[1, 2:5, 3:6, 2].sum()])
  assert_close(scores, by_hand, atol=1e-5)
  out = gcj.gradcam(split, params, target=target)(x, jnp.array([0, 2]))
  # by hand: dy/dA_ij = mask_ij * k[:, c], so alpha = mean(mask) * k[:, c]
  a = jax.nn.relu(x @ params["w"])
  alpha = mask.mean() * params["k"][:, jnp.array([0, 2])].T  # (2, 4)
  by_hand = jax.nn.relu(jnp.einsum("bhwk,bk->bhw", a, alpha))
  assert float(by_hand.max()) > 0
  assert_close(out.cam_raw, by_hand, atol=1e-6)

def test_detection_and_embedding_targets():
  boxes = jnp.zeros((2, 3, 4))
  scores = jnp.arange(2 * 3 * 4, dtype=jnp.float32).reshape(2, 3, 4)
  t = gcj.detection_target(jnp.array([2, 0]))((boxes, scores), jnp.array([1, 3]))
  assert_close(t, [scores[0, 2, 1], scores[1, 0, 3]])
  ref = jnp.array([1.0, 0.0])
  emb = gcj.embedding_target(ref)(jnp.array([[2.0, 0.0], [1.0, 1.0]]), None)
  assert_close(emb, [1.0, 2 ** -0.5], atol=1e-6)
  # an embedding model needs no targets: the explainer runs with targets=None
  model, variables = models.init(models.VggNet)
  out = gcj.gradcam(model.apply, variables, target=gcj.embedding_target(jnp.ones(4)))(
      models.images(2))
  assert out.targets is None and out.cam.shape == (2, 8, 8)


def test_finer_target_by_hand():
  """sum_j p_j (y_t - alpha y_j) / (sum_j p_j + 1e-9) over the classes at ranks
  (1, 2, 3) of |y_j - y_t|, p the softmax; ranks past the classes dropped."""
  y = np.array([[2.0, 0.5, 1.9, -1.0, 2.4], [0.0, 3.0, 1.0, 2.5, -2.0]], np.float32)
  t = np.array([0, 3])
  for alpha, ranks in ((1.0, (1, 2, 3)), (0.3, (1,)), (2.0, (2, 4, 9))):
    got = np.asarray(gcj.finer_target(alpha=alpha, comparison=ranks)(jnp.asarray(y),
                                                                     jnp.asarray(t)))
    p = np.exp(y) / np.exp(y).sum(1, keepdims=True)
    for b in range(2):
      order = np.argsort(np.abs(y[b] - y[b, t[b]]), kind="stable")
      js = [order[r] for r in ranks if r < 5]
      want = sum(p[b, j] * (y[b, t[b]] - alpha * y[b, j]) for j in js) / (
        sum(p[b, j] for j in js) + 1e-9)
      np.testing.assert_allclose(got[b], want, rtol=1e-5)
  with pytest.raises(gcj.ArgumentError, match="comparison: expected ranks >= 1"):
    gcj.finer_target(comparison=(0, 1))
  with pytest.raises(gcj.ArgumentError, match="all exceed the output's 5 classes"):
    gcj.finer_target(comparison=(7,))(jnp.asarray(y), jnp.asarray(t))
