"""The guided(fn) rewrite (gradcam_jax/_guided/transform.py): every construct it rewrites inside, what it refuses."""


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


# --- ReLUs written as where/clip, and what is left unguided --------------------------


