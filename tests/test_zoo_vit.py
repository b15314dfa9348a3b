"""The tiny ViT (gradcam_jax/zoo/vit.py): every method on a token grid, and Grad-CAM
on blocks_0's grid against the network rebuilt from its parts."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gradcam_jax as gcj
from gradcam_jax.zoo.vit import init_tiny_vit
from tests import models
from tests.models import assert_close

@pytest.mark.slow
def test_vit_gradcam_and_guided_gradcam():
  vit, variables = init_tiny_vit()
  x = models.images(2, size=32)
  reshape = gcj.tokens_to_grid()
  out = jax.jit(gcj.guided_gradcam(vit.apply, variables, layer="blocks_1",
                                   reshape=reshape))(x, jnp.array([1, 2]))
  assert out.cam.shape == (2, 32, 32) and out.cam_raw.shape == (2, 8, 8)
  assert out.guided.shape == (2, 32, 32, 3) and np.isfinite(out.guided_gradcam).all()
  # the automatic layer with a reshape: the last one whose grid reaches the logits
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


class _PooledViT(nn.Module):
  """No class token: the head reads the mean of the tokens, so every block's tokens
  reach the logits."""

  @nn.compact
  def __call__(self, images):
    from gradcam_jax.zoo.vit import Block
    x = nn.Conv(32, (4, 4), strides=4, name="patch_embed")(images)
    x = x.reshape(x.shape[0], -1, 32)
    for i in range(2):
      x = Block(32, 2, 64, name=f"blocks_{i}")(x)
    return nn.Dense(10, name="head")(nn.LayerNorm(name="norm")(x).mean(1))


class _ClassTokenOnly(nn.Module):
  """A head that reads a learned token that never meets the patches."""

  @nn.compact
  def __call__(self, images):
    x = nn.Conv(8, (4, 4), strides=4, name="patch_embed")(images)
    x = nn.LayerNorm(name="norm")(x.reshape(x.shape[0], -1, 8))
    token = self.param("cls", nn.initializers.normal(0.02), (1, 8))
    del x  # computed, but never used by the head
    return nn.Dense(3, name="head")(jnp.broadcast_to(token, (images.shape[0], 8)))


def test_layer_none_picks_a_layer_that_reaches_the_logits():
  """The last block of a class-token ViT (and the final norm) never pass their patch
  tokens to the logits; layer=None chose the norm and every map was zero. Now it
  picks blocks_1/norm1 (pytorch-grad-cam's advice for ViTs), with known weights and
  with traced ones (gcj.jit passes the params as arguments)."""
  vit, variables = init_tiny_vit()
  x, t = models.images(2, size=32), jnp.array([1, 2])
  grid = gcj.tokens_to_grid()
  want = gcj.gradcam(vit.apply, variables, layer="blocks_1/norm1", reshape=grid)(x, t)
  assert float(want.cam_raw.max()) > 0
  for explain in (gcj.gradcam, lambda *a, **k: gcj.jit(gcj.gradcam(*a, **k))):
    got = explain(vit.apply, variables, reshape=grid)(x, t)
    assert_close(got.cam_raw, want.cam_raw, atol=1e-6)


def test_layer_none_on_a_pooled_token_vit_is_the_last_grid():
  net = _PooledViT()
  x, t = models.images(2, size=32), jnp.array([1, 2])
  v = net.init(jax.random.key(0), x)
  grid = gcj.tokens_to_grid(prefix=0)
  got = gcj.gradcam(net.apply, v, reshape=grid)(x, t)
  assert_close(got.cam_raw, gcj.gradcam(net.apply, v, layer="norm", reshape=grid)(x, t).cam_raw)
  assert float(got.cam_raw.max()) > 0


def test_layer_none_when_no_layer_reaches_the_logits():
  net = _ClassTokenOnly()
  x = models.images(2, size=32)
  v = net.init(jax.random.key(0), x)
  with pytest.raises(gcj.LayerShapeError, match="no candidate layer's activation reaches"):
    gcj.gradcam(net.apply, v, reshape=gcj.tokens_to_grid(prefix=0))(x)
