"""The tiny ViT (gradcam_jax/zoo/vit.py): every method on a token grid, and Grad-CAM
on blocks_0's grid against the network rebuilt from its parts."""

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
