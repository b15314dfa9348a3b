"""Bad input gets a clear error: what was expected, what came, the valid choices."""

import jax
import jax.numpy as jnp
import pytest

import gradcam_jax as gcj
from tests import models


@pytest.fixture(scope="module")
def vgg():
  return models.init(models.VggNet)


def test_unknown_layer_lists_valid_paths(vgg):
  model, variables = vgg
  with pytest.raises(gcj.LayerNotFoundError) as err:
    gcj.gradcam(model.apply, variables, layer="conv9")(models.images(2))
  message = str(err.value)
  assert "'conv9'" in message and "conv2/conv" in message and "fc1" in message


def test_non_spatial_layer_lists_spatial_ones(vgg):
  model, variables = vgg
  with pytest.raises(gcj.LayerShapeError) as err:
    gcj.gradcam(model.apply, variables, layer="fc1")(models.images(2))
  assert "(2, 8)" in str(err.value) and "conv2" in str(err.value)


def test_bad_layer_spec():
  # a malformed argument is a LayerSpecError (also a TypeError), not "not found"
  with pytest.raises(gcj.LayerSpecError, match="path tuple") as err:
    gcj.gradcam(lambda v, x: x, None, layer=3)
  assert isinstance(err.value, TypeError)
  assert not isinstance(err.value, gcj.LayerNotFoundError)
  with pytest.raises(gcj.LayerNotFoundError, match="call index"):
    gcj.gradcam(lambda v, x: x, None, layer="a@b")


@pytest.mark.parametrize("images, match", [
    (jnp.ones((8, 8, 3)), "read as a batch of \\(B, L, C\\) signals.*images\\[None\\]"),
    (jnp.ones((2, 8, 8, 3), jnp.uint8), "floating dtype.*uint8"),
    (jnp.ones((2, 8, 8, 5)), "could not run on images of shape \\(2, 8, 8, 5\\)"),
    (jnp.ones((2, 8, 8, 3)).at[1, 0, 0, 0].set(jnp.nan), "NaN or Inf in images \\[1\\]"),
])
def test_bad_images(vgg, images, match):
  model, variables = vgg
  with pytest.raises(gcj.ImageError, match=match):
    gcj.guided_gradcam(model.apply, variables)(images)


@pytest.mark.parametrize("targets, match", [
    (jnp.zeros((2, 2, 1), jnp.int32), "\\(2, T\\).*got shape \\(2, 2, 1\\)"),
    (jnp.zeros((3,), jnp.int32), "shape \\(2,\\).*got shape \\(3,\\)"),
    (jnp.array([[0, 1], [2, 5]]), "0..3; got \\[5\\]"),
    (jnp.zeros((2,)), "integer dtype"),
    (jnp.array([1, 4]), "0..3; got \\[4\\] at positions \\[1\\]"),
    (jnp.array([-1, 0]), "got \\[-1\\] at positions \\[0\\]"),
])
def test_bad_targets(vgg, targets, match):
  model, variables = vgg
  with pytest.raises(gcj.TargetError, match=match):
    gcj.gradcam(model.apply, variables)(models.images(2), targets)


def test_out_of_range_target_under_jit_gives_zero_map(vgg):
  model, variables = vgg
  out = jax.jit(gcj.gradcam(model.apply, variables))(models.images(2), jnp.array([9, 1]))
  assert float(jnp.abs(out.cam_raw[0]).max()) == 0.0
  assert float(out.cam[1].max()) == 1.0


def test_unknown_method(vgg):
  model, variables = vgg
  with pytest.raises(gcj.MethodError, match="(?s)got 'gradcam\\+\\+\\+'.*  layercam"):
    gcj.gradcam(model.apply, variables, method="gradcam+++")


def test_target_function_of_wrong_shape(vgg):
  model, variables = vgg
  with pytest.raises(gcj.TargetError, match="scores of shape \\(2,\\)"):
    gcj.gradcam(model.apply, variables, target=lambda o, t: o)(models.images(2))


def test_errors_are_value_errors():
  assert issubclass(gcj.GradCAMError, ValueError)
  classes = [getattr(gcj, n) for n in gcj.__all__ if n.endswith("Error")]
  assert len(classes) == 12
  for cls in classes:
    assert issubclass(cls, gcj.GradCAMError)


def test_every_raise_in_the_package_is_a_gradcam_error():
  """No bare ValueError/RuntimeError/TypeError/... escapes from the package's own
  code: each raise names a GradCAMError subclass (or re-raises)."""
  import pathlib
  import re
  root = pathlib.Path(gcj.__file__).parent
  allowed = {n for n in gcj.__all__ if n.endswith("Error")} | {
      # the CLI's own control flow, and the environment's failures (a missing
      # optional package; a failed write, which the folder job records per input)
      "UsageError", "KeyboardInterrupt", "argparse", "ImportError", "OSError",
      # SIGTERM during a weights download: unwinds it, then the signal is re-sent
      "_Terminated",
      # an adapter's run restarting through the scan route (caught in the adapter)
      "LoopEdit",
      # a module's __getattr__ (gradcam_jax.io's names kept with the job) must
      # raise AttributeError for a missing name
      "AttributeError"}
  found = []
  for path in root.rglob("*.py"):
    for number, line in enumerate(path.read_text().splitlines(), 1):
      m = re.match(r"\s*raise (\w+)", line)
      if m and m.group(1) not in allowed and m.group(1) != "model_failure":
        found.append(f"{path.relative_to(root)}:{number}: {line.strip()}")
  assert found == []


@pytest.fixture(scope="module")
def train_net():
  import flax.linen as nn

  class Net(nn.Module):
    @nn.compact
    def __call__(self, x, train):
      x = nn.relu(nn.Conv(4, (3, 3), name="conv")(x))
      x = nn.BatchNorm(use_running_average=not train, name="bn")(x)
      return nn.Dense(3, name="fc")(x.mean((1, 2)))

  class DropNet(nn.Module):
    @nn.compact
    def __call__(self, x, train=False):
      x = nn.relu(nn.Conv(4, (3, 3), name="conv")(x))
      x = nn.Dropout(0.5, deterministic=not train)(x)
      return nn.Dense(3, name="fc")(x.mean((1, 2)))

  x = models.images(1)
  net, drop = Net(), DropNet()
  return net, net.init(jax.random.key(0), x, False), drop, drop.init(jax.random.key(0), x)


def test_the_models_own_failures_name_the_missing_piece(train_net):
  """Each was reported as ImageError "could not run on images" before."""
  import functools
  net, v, drop, dv = train_net
  x = models.images(2)
  inference = functools.partial(net.apply, train=False)
  cases = [
      (net.apply, v, "needs an argument.*'train'.*functools.partial"),
      (inference, {"params": v["params"]}, "lack a collection.*batch_stats"),
      (functools.partial(net.apply, train=True), v, "update its variables.*inference"),
      (inference, {"params": {k: p for k, p in v["params"].items() if k != "conv"},
                   "batch_stats": v["batch_stats"]}, "do not match the model.*conv"),
      (functools.partial(drop.apply, train=True), dv, "needs a random key.*rngs="),
  ]
  for apply_fn, variables, match in cases:
    with pytest.raises(gcj.ModelError, match=match):
      gcj.gradcam(apply_fn, variables, layer="conv")(x)
    assert not issubclass(gcj.ModelError, gcj.ImageError)


def test_a_model_that_is_no_model_is_named():
  with pytest.raises(gcj.ArgumentError, match="expected a model.*got dict"):
    gcj.gradcam({"params": {}}, None)


def test_guided_gradcam_lists_only_the_methods_it_runs():
  with pytest.raises(gcj.MethodError) as err:
    gcj.guided_gradcam(lambda v, x: x, {}, method="scorecam")
  message = str(err.value)
  listed = message.split("Methods guided_gradcam runs:")[1].split()
  assert listed == [n for n, m in gcj.ALL_METHODS.items() if m.kind == "gradient"]
  assert "'scorecam' is a perturbation method" in message
  assert "gcj.cam(..., method='scorecam')" in message
  with pytest.raises(gcj.MethodError) as err:
    gcj.cam(lambda v, x: x, {}, method="nope")
  assert str(err.value).split("Methods cam runs:")[1].split() == list(gcj.ALL_METHODS)


def test_method_registry_is_consistent():
  assert set(gcj.ALL_METHODS) == set(gcj.METHODS) | {"scorecam", "ablationcam", "sscam",
                                                     "iscam", "cam", "shapleycam",
                                                     "fullgrad", "smoothgradcam++"}
  for name, m in gcj.ALL_METHODS.items():
    assert m.name == name and m.kind in ("gradient", "perturbation", "model") and m.paper
    if m.kind == "gradient":
      assert gcj.METHODS[name] is m.fn


# --- silent wrong answers turned into errors (each passed silently before) ------------

def test_guided_gradcam_refuses_a_list_of_layers(vgg):
  """It used only the first layer, bit-equal to layer="conv1", without a word."""
  model, _ = vgg
  with pytest.raises(gcj.LayerNotFoundError, match="expected one layer; got a list of 2"):
    gcj.guided_gradcam(model.apply, None, layer=["conv1", "conv2"])


def test_empty_layer_list_is_refused(vgg):
  model, variables = vgg
  with pytest.raises(gcj.LayerNotFoundError, match="non-empty list"):
    gcj.gradcam(model.apply, variables, layer=[])


def test_targets_beyond_int32_do_not_wrap(vgg):
  """2**32 + 2 became class 2."""
  import numpy as np
  model, variables = vgg
  explain = gcj.gradcam(model.apply, variables)
  with pytest.raises(gcj.TargetError, match="fit in int32"):
    explain(models.images(2), np.array([2 ** 32 + 2, 0], np.int64))


@pytest.mark.parametrize("build, match", [
    (lambda e: gcj.noise_tunnel(e, n=0), "n: expected a whole number >= 1"),
    (lambda e: gcj.noise_tunnel(e, n=-1), "n: expected a whole number >= 1"),
    (lambda e: gcj.noise_tunnel(e, sigma=-0.1), "sigma"),
    (lambda e: gcj.augment(e, scales=()), "scales: expected one or more"),
    (lambda e: gcj.augment(e, scales=(1.0, 0.0)), "scales"),
])
def test_smoothing_arguments_are_checked(vgg, build, match):
  """n=0 gave all-NaN maps, n=-1 an MLIR error, scales=() a crash inside."""
  model, variables = vgg
  with pytest.raises(gcj.ArgumentError, match=match):
    build(gcj.gradcam(model.apply, variables))


def test_noise_tunnel_without_a_key_says_so(vgg):
  """It raised TypeError naming an internal function."""
  model, variables = vgg
  smooth = gcj.noise_tunnel(gcj.gradcam(model.apply, variables), n=2)
  with pytest.raises(gcj.ArgumentError, match=r"key=jax.random.key\(0\)"):
    smooth(models.images(2))


@pytest.mark.parametrize("kwargs, name", [
    (dict(method="scorecam", batch_size=-1), "batch_size"),
    (dict(method="scorecam", batch_size=0), "batch_size"),
    (dict(method="scorecam", top_n=0), "top_n"),
])
def test_perturbation_arguments_are_checked(vgg, kwargs, name):
  model, variables = vgg
  with pytest.raises(gcj.ArgumentError, match=f"{name}: expected a whole number >= 1"):
    gcj.cam(model.apply, variables, **kwargs)


def test_default_target_on_a_dict_or_vector_output_says_what_to_do():
  """A dict output raised AttributeError inside class_logit; a (B,) output made
  class_logit read output[t] for every image (targets [0, 0]: both scored output[0])."""
  split = gcj.Split(lambda p, x: jax.nn.relu(x * p),
                    lambda p, a: {"logits": a.mean((1, 2)), "aux": a.sum()})
  with pytest.raises(gcj.TargetError, match=r"keys \['aux', 'logits'\].*out\['logits'\]"):
    gcj.gradcam(split, jnp.float32(2.0))(jnp.ones((2, 4, 4, 3)), jnp.array([0, 1]))
  vector = gcj.Split(lambda p, x: jax.nn.relu(x * p), lambda p, a: a.mean((1, 2, 3)))
  with pytest.raises(gcj.TargetError, match=r"got shape \(2,\)"):
    gcj.gradcam(vector, jnp.float32(2.0))(jnp.ones((2, 4, 4, 3)), jnp.array([0, 0]))


def test_targets_a_custom_target_function_indexes_out_of_range_raise():
  """A dict output with a custom target and targets [0, 9] (3 classes) gave an
  all-zero map with no error: JAX clamps or fills an out-of-range index."""
  split = gcj.Split(lambda p, x: jax.nn.relu(x * p),
                    lambda p, a: {"logits": a.mean((1, 2)), "aux": a.sum()})
  x = models.images(2)
  by_index = lambda o, t: o["logits"][jnp.arange(t.shape[0]), t]  # noqa: E731
  by_take = lambda o, t: jnp.take_along_axis(o["logits"], t[:, None], 1)[:, 0]  # noqa
  for target in (by_index, by_take):
    for explainer in (gcj.gradcam, gcj.guided_gradcam):
      with pytest.raises(gcj.TargetError, match=r"targets \[0, 9\].*out of range"):
        explainer(split, jnp.float32(2.0), target=target)(x, jnp.array([0, 9]))
    with pytest.raises(gcj.TargetError, match="out of range"):
      gcj.guided_backprop(split, jnp.float32(2.0), target=target)(x, jnp.array([[0, 1],
                                                                               [2, 5]]))
    # in range: checked and explained as before
    ok = gcj.gradcam(split, jnp.float32(2.0), target=target)(x, jnp.array([0, 2]))
    assert ok.cam.shape == (2, 8, 8)
  # under jit the targets are traced and cannot be checked (the README says so)
  out = jax.jit(gcj.gradcam(split, jnp.float32(2.0), target=by_index))(
      x, jnp.array([0, 9]))
  assert out.cam.shape == (2, 8, 8)
