"""Token grids and layouts (gradcam_jax/_reshape.py)."""

import jax.numpy as jnp
import numpy as np
import pytest

import gradcam_jax as gcj

def test_tokens_to_grid_round_trip():
  grid = jnp.arange(2 * 3 * 4 * 5, dtype=jnp.float32).reshape(2, 3, 4, 5)
  tokens = jnp.concatenate([jnp.full((2, 1, 5), -1.0), grid.reshape(2, 12, 5)], axis=1)
  np.testing.assert_array_equal(gcj.tokens_to_grid((3, 4))(tokens), grid)
  assert gcj.tokens_to_grid()(jnp.zeros((1, 1 + 9, 2))).shape == (1, 3, 3, 2)
  with pytest.raises(gcj.LayerShapeError, match="do not fill a 3x3 grid"):
    gcj.tokens_to_grid()(jnp.zeros((1, 1 + 8, 2)))
