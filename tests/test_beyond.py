"""Beyond linen CNN classifiers: transformers (token grids), dense targets, and
explanations that are themselves differentiable."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gradcam_jax as gcj
from gradcam_jax.zoo.vit import init_tiny_vit
from tests import models
from tests.models import assert_close


def test_tokens_to_grid_round_trip():
  grid = jnp.arange(2 * 3 * 4 * 5, dtype=jnp.float32).reshape(2, 3, 4, 5)
  tokens = jnp.concatenate([jnp.full((2, 1, 5), -1.0), grid.reshape(2, 12, 5)], axis=1)
  np.testing.assert_array_equal(gcj.tokens_to_grid((3, 4))(tokens), grid)
  assert gcj.tokens_to_grid()(jnp.zeros((1, 1 + 9, 2))).shape == (1, 3, 3, 2)
  with pytest.raises(gcj.LayerShapeError, match="do not fill a 3x3 grid"):
    gcj.tokens_to_grid()(jnp.zeros((1, 1 + 8, 2)))


def test_vit_gradcam_and_guided_gradcam():
  vit, variables = init_tiny_vit()
  x = models.images(2, size=32)
  reshape = gcj.tokens_to_grid()
  out = jax.jit(gcj.guided_gradcam(vit.apply, variables, layer="blocks_1",
                                   reshape=reshape))(x, jnp.array([1, 2]))
  assert out.cam.shape == (2, 32, 32) and out.cam_raw.shape == (2, 8, 8)
  assert out.guided.shape == (2, 32, 32, 3) and np.isfinite(out.guided_gradcam).all()
  # the automatic layer with a reshape: the last activation that becomes a grid
  auto = gcj.gradcam(vit.apply, variables, reshape=reshape)(x, jnp.array([1, 2]))
  assert auto.cam_raw.shape == (2, 8, 8)
  for method in ("scorecam", "ablationcam", "eigencam", "layercam"):
    o = gcj.cam(vit.apply, variables, method=method, layer="blocks_1", reshape=reshape,
                batch_size=8)(x, jnp.array([1, 2]))
    assert o.cam.shape == (2, 32, 32) and np.isfinite(o.cam).all(), method
  with pytest.raises(gcj.LayerShapeError, match="after the reshape"):
    gcj.gradcam(vit.apply, variables, layer="head", reshape=reshape)(x)


def test_vit_gradcam_by_hand():
  """Grad-CAM on the grid of blocks_0's tokens, computed here from the tokens and the
  rest of the network rebuilt from its parts (blocks_1, norm, head on the class
  token). At the last block the grid tokens never reach the logits: all zeros."""
  import flax.linen as nn
  from gradcam_jax.zoo.vit import Block, init_tiny_vit
  vit, variables = init_tiny_vit()
  x, t = models.images(2, size=32), jnp.array([1, 2])
  p = variables["params"]
  _, state = vit.apply(variables, x, capture_intermediates=True, mutable=["intermediates"])
  tokens = state["intermediates"]["blocks_0"]["__call__"][0]  # (2, 1 + 64, 32)

  def logits(tok):
    tok = Block(vit.dim, vit.heads, vit.mlp).apply({"params": p["blocks_1"]}, tok)
    cls = nn.LayerNorm().apply({"params": p["norm"]}, tok)[:, 0]
    return nn.Dense(vit.num_classes).apply({"params": p["head"]}, cls)

  assert_close(logits(tokens), vit.apply(variables, x), atol=1e-5)
  d = jax.grad(lambda tok: jnp.sum(logits(tok)[jnp.arange(2), t]))(tokens)
  a, da = tokens[:, 1:].reshape(2, 8, 8, 32), d[:, 1:].reshape(2, 8, 8, 32)
  by_hand = jax.nn.relu(jnp.einsum("bhwk,bk->bhw", a, da.mean((1, 2))))
  out = gcj.gradcam(vit.apply, variables, layer="blocks_0",
                    reshape=gcj.tokens_to_grid())(x, t)
  assert float(by_hand.max()) > 0
  assert_close(out.cam_raw, by_hand, atol=1e-6)
  last = gcj.gradcam(vit.apply, variables, layer="blocks_1",
                     reshape=gcj.tokens_to_grid())(x, t)
  assert float(jnp.abs(last.cam_raw).max()) == 0.0


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


def test_gradient_through_gradcam_matches_finite_differences():
  """d/dparams of a loss on the explanation, by jax.grad and by central differences
  along a unit direction, in float64 (float32 differences are too coarse)."""
  model, variables = models.init(models.GapNet)
  with jax.enable_x64(True):
    params = jax.tree_util.tree_map(lambda a: jnp.asarray(a, jnp.float64),
                                    variables["params"])
    x, t = models.images(2).astype(jnp.float64), jnp.array([0, 2])
    weights = jax.random.uniform(jax.random.key(3), (2, 8, 8), dtype=jnp.float64)

    def loss(params):
      out = gcj.gradcam(model.apply, {"params": params}, layer="block2")(x, t)
      assert out.cam_raw.dtype == jnp.float64
      return jnp.sum(out.cam_raw * weights)

    g = jax.jit(jax.grad(loss))(params)
    direction = jax.tree_util.tree_map(
        lambda p: jax.random.normal(jax.random.key(p.size), p.shape, jnp.float64), params)
    norm = jnp.sqrt(sum(jnp.sum(d * d) for d in jax.tree_util.tree_leaves(direction)))
    direction = jax.tree_util.tree_map(lambda d: d / norm, direction)
    analytic = sum(jnp.vdot(a, b) for a, b in zip(jax.tree_util.tree_leaves(g),
                                                  jax.tree_util.tree_leaves(direction)))
    eps = 1e-5
    plus = loss(jax.tree_util.tree_map(lambda p, d: p + eps * d, params, direction))
    minus = loss(jax.tree_util.tree_map(lambda p, d: p - eps * d, params, direction))
    numeric = (plus - minus) / (2 * eps)
  assert abs(float(analytic)) > 1e-4
  np.testing.assert_allclose(float(analytic), float(numeric), rtol=1e-6)
