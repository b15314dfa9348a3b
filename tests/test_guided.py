"""guided_relu and the guided(fn) rewrite."""

from typing import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax
from jax.sharding import NamedSharding, PartitionSpec as P

import gradcam_jax as gcj
from tests import models
from tests.models import assert_close


def test_guided_relu_rule_is_strict_at_zero():
  x = jnp.array([-1.0, 0.0, 2.0, 3.0, 4.0])
  g = jnp.array([1.0, 1.0, 1.0, -1.0, 0.0])
  y, vjp = jax.vjp(gcj.guided_relu, x)
  np.testing.assert_array_equal(y, [0.0, 0.0, 2.0, 3.0, 4.0])
  np.testing.assert_array_equal(vjp(g)[0], [0.0, 0.0, 1.0, 0.0, 0.0])


def test_guided_relu_forward_matches_relu_bitwise():
  x = jax.random.normal(jax.random.key(0), (1000,))
  np.testing.assert_array_equal(gcj.guided_relu(x), jax.nn.relu(x))


def _chain(relu):
  """A function exercising every place a ReLU can hide; relu is injected."""
  def f(x):
    h = relu(x) - 0.3
    h = jax.jit(relu)(h) - 0.2
    h = jax.checkpoint(lambda t: relu(t) * 1.5)(h) - 0.1
    h, _ = lax.scan(lambda c, t: (relu(c * t) - 0.05, None), h, jnp.linspace(0.9, 1.1, 3))
    h = lax.cond(jnp.sum(h) > -1e9, relu, lambda t: t, h)
    h = lax.fori_loop(0, 2, lambda i, c: relu(c - 0.01), h)
    return h
  return f


_CONSTRUCTS = {
    "nn.relu": lambda relu: relu,
    "jnp.maximum": None,  # handled below: max(x, 0.) written out
    "jit": lambda relu: jax.jit(relu),
    "remat": lambda relu: jax.checkpoint(relu),
    "scan": lambda relu: (lambda x: lax.scan(lambda c, _: (relu(c), None), x, None,
                                             length=1)[0]),
    "cond": lambda relu: (lambda x: lax.cond(True, relu, relu, x)),
    "while": lambda relu: (lambda x: lax.while_loop(lambda c: c[1] < 1,
                                                    lambda c: (relu(c[0]), c[1] + 1),
                                                    (x, 0))[0]),
}


def _score(act):
  w = jnp.linspace(-1.0, 1.0, 12)
  v = jnp.linspace(1.0, -2.0, 12)
  return lambda x: jnp.sum(v * act(w * x + 0.1))


@pytest.mark.parametrize("construct", sorted(_CONSTRUCTS))
def test_rewrite_equals_explicit_guided_relu(construct):
  x = jnp.linspace(-2.0, 2.0, 12)
  if construct == "jnp.maximum":
    plain = _score(lambda t: jnp.maximum(t, 0.0))
  else:
    plain = _score(_CONSTRUCTS[construct](jax.nn.relu))
  explicit = _score(gcj.guided_relu if construct == "jnp.maximum"
                    else _CONSTRUCTS[construct](gcj.guided_relu))
  np.testing.assert_array_equal(gcj.guided(plain)(x), plain(x))
  rewritten = jax.make_jaxpr(gcj.guided(plain))(x)
  assert gcj._guided.relu_count(rewritten) == 0  # every ReLU was replaced
  assert "guided_relu" in str(rewritten)
  if construct == "while":
    return  # reverse mode does not exist for while loops; forward checked above
  g_rewrite = jax.grad(gcj.guided(plain))(x)
  np.testing.assert_array_equal(g_rewrite, jax.grad(explicit)(x))
  # the guided gradient really differs from the plain one here
  assert not np.allclose(g_rewrite, jax.grad(plain)(x))


def test_rewrite_of_all_constructs_together_under_jit():
  x = jnp.linspace(-2.0, 2.0, 12)
  plain = lambda x: jnp.sum(_chain(jax.nn.relu)(x) * jnp.linspace(-1, 1, 12))
  explicit = lambda x: jnp.sum(_chain(gcj.guided_relu)(x) * jnp.linspace(-1, 1, 12))
  np.testing.assert_array_equal(jax.jit(jax.grad(gcj.guided(plain)))(x),
                                jax.jit(jax.grad(explicit))(x))


@pytest.mark.parametrize("relu", [nn.relu, lambda t: jnp.maximum(t, 0.0),
                                  jax.jit(nn.relu)], ids=["nn.relu", "maximum", "jit"])
def test_rewrite_of_flax_model_equals_model_with_guided_relu(relu):
  model, variables = models.init(models.VggNet, relu=relu)
  explicit = models.VggNet(relu=gcj.guided_relu)
  x = models.images()
  w = jnp.array([1.0, -2.0, 0.5, -0.5])
  rewritten = gcj.guided(model.apply)
  np.testing.assert_array_equal(rewritten(variables, x), model.apply(variables, x))
  g1 = jax.grad(lambda x: jnp.sum(rewritten(variables, x) @ w))(x)
  g2 = jax.grad(lambda x: jnp.sum(explicit.apply(variables, x) @ w))(x)
  np.testing.assert_array_equal(g1, g2)


def test_rewrite_of_remat_and_scan_flax_modules():
  class Body(nn.Module):
    @nn.compact
    def __call__(self, c, _):
      return nn.relu(nn.Dense(5)(c)), None

  class Net(nn.Module):
    relu_block: type = None

    @nn.compact
    def __call__(self, x):
      x = nn.remat(models.ConvReLU)(3)(x).mean((1, 2))
      x = nn.Dense(5)(x)
      x, _ = nn.scan(Body, variable_broadcast="params", split_rngs={"params": False},
                     length=3)()(x, None)
      return nn.Dense(2)(x)

  net = Net()
  x = models.images(2)
  variables = net.init(jax.random.key(0), x)
  score = lambda f: (lambda x: jnp.sum(f(variables, x) @ jnp.array([1.0, -1.0])))
  jaxpr = jax.make_jaxpr(net.apply)(variables, x)
  assert gcj._guided.relu_count(jaxpr) == 2  # one in the remat block, one in scan
  g = jax.grad(score(gcj.guided(net.apply)))(x)
  assert np.isfinite(g).all()
  assert not np.allclose(g, jax.grad(score(net.apply))(x))


def test_rewrite_under_shard_map_finds_pvary_zero():
  mesh = jax.make_mesh((4,), ("b",), axis_types=(jax.sharding.AxisType.Auto,))
  body = lambda x: 2.0 * jnp.maximum(x, 0.0) - jax.nn.relu(x)
  f = jax.shard_map(body, mesh=mesh, in_specs=P("b"), out_specs=P("b"))
  x = jax.device_put(jnp.linspace(-1.0, 1.0, 8), NamedSharding(mesh, P("b")))
  jaxpr = jax.make_jaxpr(f)(x)
  assert "pvary" in str(jaxpr)
  assert gcj._guided.relu_count(jaxpr) == 2
  g = jax.grad(lambda x: jnp.sum(gcj.guided(f)(x)))(x)
  # plain: 2 - 1 = 1 where x > 0; guided: the -1 branch has a negative cotangent
  np.testing.assert_array_equal(g, np.where(np.linspace(-1, 1, 8) > 0, 2.0, 0.0))
  np.testing.assert_array_equal(jax.grad(lambda x: jnp.sum(f(x)))(x),
                                np.where(np.linspace(-1, 1, 8) > 0, 1.0, 0.0))


def test_no_relu_is_refused_and_optional():
  f = lambda x: jnp.sum(jnp.tanh(x) * jnp.arange(3.0))
  with pytest.raises(gcj.NoReLUError, match="found no ReLU"):
    gcj.guided(f)(jnp.ones(3))
  x = jnp.array([0.1, -0.2, 0.3])
  np.testing.assert_array_equal(jax.grad(gcj.guided(f, require_relu=False))(x),
                                jax.grad(f)(x))


def test_relu_free_model_guided_equals_plain_gradient():
  model, variables = models.init(models.NoReLUNet)
  x = models.images(2)
  score = lambda f: (lambda x: jnp.sum(f(variables, x)[:, 1]))
  np.testing.assert_allclose(jax.grad(score(gcj.guided(model.apply, require_relu=False)))(x),
                             jax.grad(score(model.apply))(x), rtol=0, atol=0)
  with pytest.raises(gcj.NoReLUError):
    gcj.guided_backprop(model.apply, variables)(x)


def test_max_with_nonzero_or_integer_is_not_a_relu():
  f = lambda x, i: jnp.sum(jnp.maximum(x, 0.5)) + jnp.sum(jnp.maximum(i, 0))
  with pytest.raises(gcj.NoReLUError):
    gcj.guided(f)(jnp.ones(3), jnp.ones(3, jnp.int32))


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


@pytest.mark.parametrize("kernel,strides,padding", [
    ((7, 7), (2, 2), ((3, 3), (3, 3))),        # ResNet's stem
    ((3, 3), (2, 2), ((1, 1), (1, 1))),
    ((1, 1), (2, 2), ((0, 0), (0, 0))),        # ResNet's downsampling shortcut
    ((3, 2), (3, 2), ((0, 1), (2, 0))),        # uneven strides and padding
    ((2, 2), (3, 3), ((0, 0), (0, 0))),        # kernel smaller than the stride
])
def test_strided_conv_rewrite_gives_xlas_input_gradient(kernel, strides, padding):
  # Small integers everywhere: every sum is exact, so the phase-split gradient must
  # equal XLA's bit for bit, and the kernel gradient (XLA's own rule) too.
  ints = lambda k, shape: jnp.round(jax.random.normal(jax.random.key(k), shape) * 2)
  x, w = ints(0, (2, 13, 12, 3)), ints(1, (*kernel, 3, 4))
  conv = lambda x, w: lax.conv_general_dilated(x, w, strides, padding,
                                               dimension_numbers=("NHWC", "HWIO", "NHWC"))
  y, vjp = jax.vjp(conv, x, w)
  y_fast, vjp_fast = jax.vjp(gcj.guided(conv, require_relu=False), x, w)
  g = ints(2, y.shape)
  np.testing.assert_array_equal(y_fast, y)
  for fast, plain in zip(vjp_fast(g), vjp(g)):
    np.testing.assert_array_equal(fast, plain)
  dilated = f"lhs_dilation=({strides[0]}, {strides[1]})"
  jaxpr = lambda v: str(jax.make_jaxpr(v)(g))
  assert dilated in jaxpr(vjp) and dilated not in jaxpr(vjp_fast)


def test_guided_functions_are_reverse_mode_only():
  """The docstring's promise: values and jax.grad kept without ReLUs (a max pool here,
  whose faster rule is a custom_vjp), and jax.jvp refused with TypeError."""
  pool = lambda x: jax.lax.reduce_window(x, -jnp.inf, jax.lax.max, (1, 2, 2, 1),
                                         (1, 2, 2, 1), "VALID")
  f = lambda x: jnp.sum(pool(x) * jnp.arange(4.0).reshape(1, 2, 2, 1))
  x = jnp.asarray(np.random.default_rng(0).normal(size=(1, 4, 4, 1)), jnp.float32)
  g = gcj.guided(f, require_relu=False)
  assert g(x) == f(x)
  np.testing.assert_array_equal(jax.grad(g)(x), jax.grad(f)(x))
  with pytest.raises(TypeError, match="forward-mode"):
    jax.jvp(g, (x,), (jnp.ones_like(x),))
  with pytest.raises(TypeError, match="forward-mode"):
    jax.jvp(gcj.guided(lambda x: jnp.sum(jax.nn.relu(x))), (x,), (x,))


def test_relus_inside_custom_derivative_bodies_are_guided():
  """A custom_jvp or custom_vjp function with a ReLU inside is evaluated through its
  body: its own (here deliberately wrong) derivative rule gives way to the guided
  derivative of the body, 2 * [g > 0] * [x > 0]."""
  @jax.custom_jvp
  def f_jvp(x):
    return 2.0 * jax.nn.relu(x)
  f_jvp.defjvp(lambda p, t: (f_jvp(p[0]), 100.0 * t[0]))

  @jax.custom_vjp
  def f_vjp(x):
    return 2.0 * jax.nn.relu(x)
  f_vjp.defvjp(lambda x: (f_vjp(x), None), lambda _, g: (100.0 * g,))

  x = jnp.array([-1.0, 2.0, 3.0, 0.5])
  weights = jnp.array([1.0, 1.0, -1.0, 2.0])  # a negative upstream gradient at 3.0
  for f in (f_jvp, f_vjp):
    loss = lambda x: jnp.sum(f(x) * weights)
    assert_close(jax.grad(loss)(x), 100.0 * weights)  # the custom rule, unguided
    assert_close(jax.grad(gcj.guided(loss))(x), [0.0, 2.0, 0.0, 4.0])


def test_relu_inside_an_unknown_higher_order_primitive_raises():
  """Skipping it would silently leave that ReLU unguided."""
  def f(b):
    matvec = lambda v: 2.0 * v + 0.0 * jax.nn.relu(v)
    return jnp.sum(lax.custom_linear_solve(matvec, b, lambda mv, r: r / 2.0))
  with pytest.raises(gcj.UnsupportedError, match="custom_linear_solve"):
    jax.grad(gcj.guided(f))(jnp.ones(3))


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


# --- ReLUs written as where/clip, and what is left unguided --------------------------

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


def test_guided_report_counts_what_is_left():
  x = jnp.ones(3)
  leaky_and_relu6 = lambda x: jax.nn.relu6(x) + jnp.maximum(x, 0.1 * x)  # noqa: E731
  report = gcj.guided_report(leaky_and_relu6, x)
  # relu6's max(x, 0) is guided; its cap (min) and the leaky max are left, and said
  assert report == gcj.GuidedReport(1, {"max": 1, "min": 1})
  assert str(report) == "guided replaces 1 ReLU(s); left unguided: 1 max, 1 min"
  model, variables = models.init(models.VggNet)
  clean = gcj.guided_report(model.apply, variables, models.images(1))
  assert clean.replaced == 3 and clean.left == {}  # conv1, conv2, fc1


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
