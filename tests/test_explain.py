"""The explainers (gradcam_jax/_explain.py) under JAX's transforms: eager == jit ==
vmap, batch == per-example, one compile per shape, sharded == single device, one
forward pass; and explanations that are themselves differentiable."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding, PartitionSpec as P

import gradcam_jax as gcj
from tests import models
from tests.models import assert_close

FIELDS = ("cam", "cam_raw", "guided", "guided_gradcam", "logits", "targets")

def _assert_explanations_close(a, b, atol=1e-5):
  for field in FIELDS:
    assert_close(getattr(a, field), getattr(b, field), atol=atol, rtol=1e-5)

@functools.lru_cache(maxsize=None)
def _vgg_explainer():
  model, variables = models.init(models.VggNet)
  return gcj.guided_gradcam(model.apply, variables), jax.jit(
      gcj.guided_gradcam(model.apply))

def test_eager_equals_jit():
  explain, _ = _vgg_explainer()
  x = models.images()
  _assert_explanations_close(explain(x), jax.jit(explain)(x))

def test_closure_form_equals_params_as_argument_form():
  explain, explain_p = _vgg_explainer()
  _, variables = models.init(models.VggNet)
  x, t = models.images(), jnp.array([3, 2, 1, 0])
  _assert_explanations_close(jax.jit(explain)(x, t), explain_p(variables, x, t))

def test_vmap_of_single_examples_equals_batch():
  explain, _ = _vgg_explainer()
  x, t = models.images(), jnp.array([0, 1, 2, 3])
  single = jax.vmap(lambda im, c: explain(im[None], c[None]))(x, t)
  single = jax.tree_util.tree_map(lambda a: a[:, 0], single)
  _assert_explanations_close(single, jax.jit(explain)(x, t))

def test_heterogeneous_targets_batch_equals_per_example_loop():
  explain, _ = _vgg_explainer()
  jitted = jax.jit(explain)
  x, t = models.images(), jnp.array([3, 0, 2, 1])
  batch = jitted(x, t)
  for i in range(4):
    one = jitted(x[i:i + 1], t[i:i + 1])
    _assert_explanations_close(jax.tree_util.tree_map(lambda a: a[i:i + 1], batch), one)

def test_one_compilation_per_shape():
  explain, _ = _vgg_explainer()
  traces = []

  @jax.jit
  def counted(x):
    traces.append(x.shape)
    return explain(x)

  for seed in range(3):
    counted(models.images(seed=seed)).cam.block_until_ready()
  assert traces == [(4, 8, 8, 3)]
  counted(models.images(batch=2))
  assert traces == [(4, 8, 8, 3), (2, 8, 8, 3)]

def test_batchnorm_model_batch_of_one_equals_batch_of_eight():
  model, variables = models.init(models.BNNet)
  stats = variables["batch_stats"]["bn"]
  variables = {"params": variables["params"],
               "batch_stats": {"bn": {"mean": stats["mean"] + 0.3,
                                      "var": stats["var"] * 2.0}}}
  explain = jax.jit(gcj.guided_gradcam(functools.partial(model.apply, train=False),
                                       variables, layer="bn"))
  x = models.images(8)
  batch = explain(x)
  for i in (0, 5):
    _assert_explanations_close(jax.tree_util.tree_map(lambda a: a[i:i + 1], batch),
                               explain(x[i:i + 1]))

def _mesh():
  if jax.device_count() < 4:
    pytest.skip("needs 4 devices (XLA_FLAGS=--xla_force_host_platform_device_count=4)")
  return jax.make_mesh((4,), ("batch",), axis_types=(jax.sharding.AxisType.Auto,))

def test_sharded_over_four_devices_equals_single_device():
  mesh = _mesh()
  explain, explain_p = _vgg_explainer()
  _, variables = models.init(models.VggNet)
  x, t = models.images(8), jnp.arange(8) % 4
  reference = jax.jit(explain)(x, t)
  xs = jax.device_put(x, NamedSharding(mesh, P("batch")))
  ts = jax.device_put(t, NamedSharding(mesh, P("batch")))
  vs = jax.device_put(variables, NamedSharding(mesh, P()))
  sharded = explain_p(vs, xs, ts)
  assert len(sharded.cam.sharding.device_set) == 4
  _assert_explanations_close(sharded, reference)

def test_shard_map_over_four_devices_equals_single_device():
  """Under shard_map each device explains its own examples; the guided rewrite must
  still find every ReLU (their zero is a `pvary`) and maps stay per-image."""
  mesh = _mesh()
  explain, _ = _vgg_explainer()
  x, t = models.images(8), jnp.arange(8) % 4
  reference = jax.jit(explain)(x, t)
  per_device = jax.jit(jax.shard_map(explain, mesh=mesh, in_specs=(P("batch"), P("batch")),
                                     out_specs=P("batch")))
  _assert_explanations_close(per_device(x, t), reference)

def test_gradcam_under_shard_map_keeps_examples_apart():
  mesh = _mesh()
  model, variables = models.init(models.VggNet)
  explain = gcj.gradcam(model.apply, variables)
  x = models.images(8)
  reference = jax.jit(explain)(x)
  per_device = jax.jit(jax.shard_map(explain, mesh=mesh, in_specs=P("batch"),
                                     out_specs=P("batch")))
  out = per_device(x)
  assert_close(out.cam_raw, reference.cam_raw)
  assert_close(out.cam, reference.cam, atol=1e-5)

def _convolutions(fn, *args) -> int:
  return jax.jit(fn).lower(*args).compile().as_text().count(" convolution(")

def test_guided_gradcam_runs_one_forward_pass():
  """In the compiled program, Guided Grad-CAM has exactly the convolutions of guided
  backprop (forward + input-gradient backward): the Grad-CAM half adds none, and
  Grad-CAM at the last conv block adds no convolution to the forward's."""
  model, variables = models.init(models.VggNet)
  x = models.images(2)
  forward = _convolutions(lambda x: model.apply(variables, x), x)
  assert forward == 2
  assert _convolutions(gcj.gradcam(model.apply, variables), x) == forward
  guided = _convolutions(gcj.guided_backprop(model.apply, variables), x)
  assert guided == 2 * forward
  assert _convolutions(gcj.guided_gradcam(model.apply, variables), x) == guided

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
