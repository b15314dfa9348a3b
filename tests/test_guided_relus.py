"""The guided ReLU and the recognition of ReLUs in a jaxpr (gradcam_jax/_guided/relus.py)."""

from typing import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gradcam_jax as gcj
from tests import models


def test_guided_relu_rule_is_strict_at_zero():
  x = jnp.array([-1.0, 0.0, 2.0, 3.0, 4.0])
  g = jnp.array([1.0, 1.0, 1.0, -1.0, 0.0])
  y, vjp = jax.vjp(gcj.guided_relu, x)
  np.testing.assert_array_equal(y, [0.0, 0.0, 2.0, 3.0, 4.0])
  np.testing.assert_array_equal(vjp(g)[0], [0.0, 0.0, 1.0, 0.0, 0.0])


def test_guided_relu_forward_matches_relu_bitwise():
  x = jax.random.normal(jax.random.key(0), (1000,))
  np.testing.assert_array_equal(gcj.guided_relu(x), jax.nn.relu(x))


def test_max_with_nonzero_or_integer_is_not_a_relu():
  f = lambda x, i: jnp.sum(jnp.maximum(x, 0.5)) + jnp.sum(jnp.maximum(i, 0))
  with pytest.raises(gcj.NoReLUError):
    gcj.guided(f)(jnp.ones(3), jnp.ones(3, jnp.int32))


_RELU_FORMS = {
    "clip": lambda x: jnp.clip(x, 0),
    "clip_min": lambda x: jnp.clip(x, min=0.0),
    "where_gt": lambda x: jnp.where(x > 0, x, 0.0),
    "where_int_zero": lambda x: jnp.where(x > 0, x, 0),
    "where_lt": lambda x: jnp.where(0 < x, x, 0.0),
    "where_ge": lambda x: jnp.where(x >= 0, x, 0.0),
}


@pytest.mark.parametrize("name", sorted(_RELU_FORMS))
def test_relus_written_as_where_or_clip_are_guided(name):
  """Each was left with its plain gradient before (and alone raised NoReLUError)."""
  w = jnp.array([1.0, -1.0, 1.0, -2.0])
  x = jnp.array([-1.0, 2.0, 7.0, 3.0])
  relu = _RELU_FORMS[name]
  mixed = lambda x: jnp.sum(relu(x) * w) + jnp.sum(jax.nn.relu(x) * w)  # noqa: E731
  plain = lambda x: 2 * jnp.sum(jax.nn.relu(x) * w)  # noqa: E731
  np.testing.assert_array_equal(jax.grad(gcj.guided(mixed))(x),
                                jax.grad(gcj.guided(plain))(x))
  np.testing.assert_array_equal(jax.grad(gcj.guided(mixed))(x), [0.0, 0.0, 2.0, 0.0])
  assert gcj.guided_report(mixed, x).replaced == 2


@pytest.mark.parametrize("f", [lambda x: jnp.where(x > 0, 0.0, x),
                               lambda x: jnp.where(x > 1, x, 0.0),
                               lambda x: jnp.clip(x, 1.0)])
def test_lookalikes_that_are_not_relus_are_not_replaced(f):
  with pytest.raises(gcj.NoReLUError, match="guided_report"):
    gcj.guided(f)(jnp.ones(3))


def test_a_linen_model_with_where_relus_equals_its_relu_twin():
  class WhereNet(nn.Module):
    relu: Callable = nn.relu

    @nn.compact
    def __call__(self, x):
      x = self.relu(nn.Conv(4, (3, 3), name="c1")(x))
      x = self.relu(nn.Conv(4, (3, 3), name="c2")(x))
      return nn.Dense(3, name="fc")(x.mean((1, 2)))

  x = models.images(2)
  variables = WhereNet().init(jax.random.key(0), x)
  where = WhereNet(relu=lambda a: jnp.where(a > 0, a, 0.0))
  ours = gcj.guided_backprop(where.apply, variables)(x, jnp.array([0, 2]))
  twin = gcj.guided_backprop(WhereNet().apply, variables)(x, jnp.array([0, 2]))
  np.testing.assert_allclose(ours.guided, twin.guided, atol=1e-6)
