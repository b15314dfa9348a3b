"""The explainer as a value (gradcam_jax/_forms.py): both API forms, wrappers that
keep the form whatever they wrap, a pytree whose leaves are the params, gcj.jit."""

import jax
import jax.numpy as jnp
import pytest

import gradcam_jax as gcj
from tests import models
from tests.models import assert_close


@pytest.fixture(scope="module")
def vgg():
  return models.init(models.VggNet)


def _close(a, b, atol=1e-6):
  for field in ("cam", "cam_raw", "guided", "guided_gradcam", "logits"):
    x, y = getattr(a, field), getattr(b, field)
    assert (x is None) == (y is None), field
    if x is not None:
      assert_close(x, y, atol=atol)


def test_wrappers_compose_in_either_form(vgg):
  """noise_tunnel(augment(closure)) raised IndexError before (and with targets took
  the targets for images): a wrapped closure lost its form."""
  model, variables = vgg
  x, t, key = models.images(2), jnp.array([1, 3]), jax.random.key(0)
  # (flips only: this model's dense head fixes the input size)
  closure = gcj.noise_tunnel(gcj.augment(gcj.gradcam(model.apply, variables)), n=2)
  by_arg = gcj.noise_tunnel(gcj.augment(gcj.gradcam(model.apply)), n=2)
  _close(closure(x, key=key), by_arg(variables, x, key=key))
  _close(closure(x, t, key=key), by_arg(variables, x, t, key=key))
  assert closure.name == "noise_tunnel(augment(gradcam))" and by_arg.params is None
  # the smoothing is real: not the plain map
  plain = gcj.gradcam(model.apply, variables)(x, t)
  assert float(jnp.abs(closure(x, t, key=key).cam_raw - plain.cam_raw).max()) > 1e-3


def test_wrappers_accept_jitted_explainers_and_plain_functions(vgg):
  model, variables = vgg
  x, key = models.images(2), jax.random.key(1)
  explain = gcj.gradcam(model.apply, variables)
  reference = gcj.noise_tunnel(explain, n=2)(x, key=key)
  _close(gcj.noise_tunnel(jax.jit(explain), n=2)(x, key=key), reference, atol=1e-5)
  by_arg = jax.jit(gcj.gradcam(model.apply))  # a jitted params-as-argument form
  _close(gcj.noise_tunnel(by_arg, n=2)(variables, x, key=key), reference, atol=1e-5)
  mine = lambda images, targets=None: explain(images, targets)  # noqa: E731
  _close(gcj.noise_tunnel(mine, n=2)(x, key=key), reference)


def test_the_params_are_the_leaves(vgg):
  model, variables = vgg
  explain = gcj.guided_gradcam(model.apply, variables)
  assert isinstance(explain, gcj.Explainer)
  leaves = jax.tree_util.tree_leaves(explain)
  assert len(leaves) == len(jax.tree_util.tree_leaves(variables))
  half = jax.tree_util.tree_map(lambda p: p.astype(jnp.bfloat16), explain)
  assert half.name == "guided_gradcam" and half.with_params is explain.with_params
  x = models.images(2)
  out = half(x)
  assert jax.tree_util.tree_leaves(half.params)[0].dtype == jnp.bfloat16
  assert_close(out.logits, model.apply(half.params, x), atol=1e-6)  # the cast params
  assert float(jnp.abs(out.logits - explain(x).logits).max()) > 1e-4  # ran
  assert jax.tree_util.tree_leaves(gcj.gradcam(model.apply)) == []


def test_passed_as_an_argument_the_params_stay_out_of_the_program(vgg):
  """jax.jit(explain) embeds the params as constants; an Explainer passed as an
  argument brings them in as arguments (and gcj.jit does the same)."""
  model, variables = vgg
  explain = gcj.guided_gradcam(model.apply, variables)
  x = models.images(2)
  def main_arguments(hlo):  # the compiled program's entry signature
    return next(line for line in hlo.splitlines() if "func.func public @main(" in line)

  kernel = variables["params"]["conv1"]["conv"]["kernel"]
  kernel_type = "tensor<" + "x".join(map(str, kernel.shape)) + "xf32>"
  closure = main_arguments(jax.jit(explain).lower(x).as_text())
  argument = main_arguments(jax.jit(lambda e, x: e(x)).lower(explain, x).as_text())
  assert kernel_type not in closure and kernel_type in argument
  assert argument.count("%arg") == len(jax.tree_util.tree_leaves(variables)) + 1
  _close(jax.jit(lambda e, x: e(x))(explain, x), explain(x), atol=1e-5)
  fast = gcj.jit(explain)
  assert isinstance(fast, gcj.Explainer) and fast.params is variables
  _close(fast(x), explain(x), atol=1e-5)


def test_repr_is_short(vgg):
  model, variables = vgg
  text = repr(gcj.gradcam(model.apply, variables))
  assert text.startswith("Explainer('gradcam', params: ") and len(text) < 80
  assert "params-as-argument" in repr(gcj.guided_backprop(model.apply))


def test_gcj_jit_equals_jax_jit_and_keeps_params_out_of_the_program(vgg):
  model, variables = vgg
  explain = gcj.guided_gradcam(model.apply, variables)
  x, t = models.images(), jnp.array([1, 0, 3, 2])
  fast = gcj.jit(explain)
  _close(fast(x, t), jax.jit(explain)(x, t), atol=1e-6)
  _close(fast(x), jax.jit(explain)(x), atol=1e-6)
  # the closure form embeds the params as constants; gcj.jit passes them as arguments
  closure_hlo = jax.jit(explain).lower(x).as_text()
  arg_hlo = jax.jit(explain.with_params).lower(variables, x).as_text()
  assert len(arg_hlo) < len(closure_hlo)
