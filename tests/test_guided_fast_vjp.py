"""The faster backward rules for max pools and strided convolutions (gradcam_jax/_guided/fast_vjp.py): same forward, XLA's gradient."""


import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax
from jax.sharding import PartitionSpec as P

import gradcam_jax as gcj


@pytest.mark.parametrize("window,strides,padding", [
    ((2, 2), (2, 2), "VALID"),                 # VGG's pools
    ((3, 3), (2, 2), ((1, 1), (1, 1))),        # ResNet's stem pool: overlapping windows
    ((3, 3), (1, 1), "SAME"),
    ((2, 2), (3, 3), "VALID"),                 # gaps between windows
])
def test_max_pool_rewrite_routes_the_cotangent_exactly_as_xla(window, strides, padding):
  # Post-ReLU values rounded to quarters: many ties, where the routing rule matters.
  # Integer-valued cotangents make every sum exact, so any routing change is seen.
  x = jnp.round(jax.nn.relu(jax.random.normal(jax.random.key(0), (2, 9, 11, 3))) * 4) / 4
  pool = lambda x: nn.max_pool(x, window, strides, padding=padding)
  y, vjp = jax.vjp(pool, x)
  y_fast, vjp_fast = jax.vjp(gcj.guided(pool, require_relu=False), x)
  g = jnp.round(jax.random.normal(jax.random.key(1), y.shape) * 8)
  np.testing.assert_array_equal(y_fast, y)
  np.testing.assert_array_equal(vjp_fast(g)[0], vjp(g)[0])
  hlo = lambda v: str(jax.make_jaxpr(v)(g))
  assert "select_and_scatter" in hlo(vjp) and "select_and_scatter" not in hlo(vjp_fast)


def test_max_pool_rewrite_in_bfloat16_and_under_shard_map():
  mesh = jax.make_mesh((4,), ("b",), axis_types=(jax.sharding.AxisType.Auto,))
  body = lambda x: nn.max_pool(jax.nn.relu(x), (3, 3), (2, 2), padding="SAME")
  x = jax.random.normal(jax.random.key(2), (8, 8, 8, 2), jnp.bfloat16)
  sharded = jax.shard_map(body, mesh=mesh, in_specs=P("b"), out_specs=P("b"))
  g = jnp.ones((8, 4, 4, 2), jnp.bfloat16)
  explicit = lambda x: nn.max_pool(gcj.guided_relu(x), (3, 3), (2, 2), padding="SAME")
  expected = jax.vjp(explicit, x)[1](g)[0]
  for f in (body, sharded):
    np.testing.assert_array_equal(jax.vjp(gcj.guided(f), x)[1](g)[0], expected)


_NHWC = ("NHWC", "HWIO", "NHWC")


@pytest.mark.parametrize("dn,kernel,strides,padding,channels", [
    (_NHWC, (7, 7), (2, 2), ((3, 3), (3, 3)), 3),        # ResNet's stem
    (_NHWC, (3, 3), (2, 2), ((1, 1), (1, 1)), 3),
    (_NHWC, (1, 1), (2, 2), ((0, 0), (0, 0)), 3),        # ResNet's downsampling shortcut
    (_NHWC, (3, 2), (3, 2), ((0, 1), (2, 0)), 3),        # uneven strides and padding
    (_NHWC, (2, 2), (3, 3), ((0, 0), (0, 0)), 3),        # kernel smaller than the stride
    (("NCHW", "OIHW", "NCHW"), (3, 3), (2, 2), ((1, 1),) * 2, 3),  # channels first
    (("NWC", "WIO", "NWC"), (7,), (2,), ((3, 3),), 3),   # signals
    (("NWC", "WIO", "NWC"), (2,), (3,), ((0, 1),), 3),
    (("NCW", "OIW", "NCW"), (3,), (2,), ((1, 1),), 3),
    (("NDHWC", "DHWIO", "NDHWC"), (7, 7, 7), (2, 2, 2), ((3, 3),) * 3, 1),  # a 3-D stem
    (("NDHWC", "DHWIO", "NDHWC"), (3, 1, 2), (2, 1, 3), ((1, 0), (0, 0), (2, 1)), 3),
    (("NCDHW", "OIDHW", "NCDHW"), (3, 3, 3), (2, 2, 2), ((1, 1),) * 3, 3),
    # 16 input channels and more: one convolution per phase, with its exact taps
    (_NHWC, (3, 3), (2, 2), ((1, 1), (1, 1)), 16),
    (_NHWC, (2, 2), (3, 3), ((0, 0), (0, 0)), 16),
    (("NCW", "OIW", "NCW"), (3,), (2,), ((1, 1),), 16),
    (("NDHWC", "DHWIO", "NDHWC"), (3, 1, 2), (2, 1, 3), ((1, 0), (0, 0), (2, 1)), 16),
])
def test_strided_conv_rewrite_gives_xlas_input_gradient(dn, kernel, strides, padding,
                                                        channels):
  """Any spatial rank and dimension numbers, both ways of running the phases (one
  convolution for inputs of few channels, one per phase otherwise). Small integers
  everywhere: every sum is exact, so the phase-split gradient must equal XLA's bit
  for bit, and the kernel gradient (XLA's own rule) too; XLA's dilated convolution is
  gone from the backward pass (in 3-D it took 200x the forward for a 7^3 stride-2
  stem on 64^3 volumes)."""
  ints = lambda k, shape: jnp.round(jax.random.normal(jax.random.key(k), shape) * 2)
  spatial = {1: (13,), 2: (13, 12), 3: (7, 9, 8)}[len(kernel)]
  x_shape = (2, *spatial, channels) if dn[0].endswith("C") else (2, channels, *spatial)
  w_shape = (*kernel, channels, 4) if dn[1].endswith("O") else (4, channels, *kernel)
  x, w = ints(0, x_shape), ints(1, w_shape)
  conv = lambda x, w: lax.conv_general_dilated(x, w, strides, padding,
                                               dimension_numbers=dn)
  y, vjp = jax.vjp(conv, x, w)
  y_fast, vjp_fast = jax.vjp(gcj.guided(conv, require_relu=False), x, w)
  g = ints(2, y.shape)
  np.testing.assert_array_equal(y_fast, y)
  for fast, plain in zip(vjp_fast(g), vjp(g)):
    np.testing.assert_array_equal(fast, plain)
  dilated = f"lhs_dilation={tuple(strides)}"
  jaxpr = lambda v: str(jax.make_jaxpr(v)(g))
  assert dilated in jaxpr(vjp) and dilated not in jaxpr(vjp_fast)


def test_strided_conv_rewrite_in_bfloat16():
  """The phase-split input gradient in bfloat16 equals XLA's to bfloat16 precision
  (summation order differs), and both equal the float32 gradient to that precision."""
  ints = lambda k, shape: jnp.round(jax.random.normal(jax.random.key(k), shape) * 2)
  x, w = ints(0, (2, 13, 12, 3)), ints(1, (3, 3, 3, 4))
  conv = lambda x, w: lax.conv_general_dilated(x, w, (2, 2), ((1, 1), (1, 1)),
                                               dimension_numbers=("NHWC", "HWIO", "NHWC"))
  g = ints(2, conv(x, w).shape)
  exact = jax.vjp(conv, x, w)[1](g)[0]  # float32: integer sums, exact
  bf = lambda a: a.astype(jnp.bfloat16)
  plain = jax.vjp(conv, bf(x), bf(w))[1](bf(g))[0]
  y_fast, vjp_fast = jax.vjp(gcj.guided(conv, require_relu=False), bf(x), bf(w))
  fast = vjp_fast(bf(g))[0]
  assert fast.dtype == jnp.bfloat16 and y_fast.dtype == jnp.bfloat16
  scale = float(jnp.abs(exact).max())
  for got in (fast, plain):
    np.testing.assert_allclose(np.asarray(got, np.float32), exact, atol=scale * 2 ** -7)
