"""The linen adapter (gradcam_jax/_adapters/linen.py) and Split (split.py): module
paths, setup lists, remat, repeated calls, BatchNorm, the explicit Split, params
forms; nothing of the user's is modified."""

import copy

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gradcam_jax as gcj
from tests import models
from tests.models import assert_close


def test_layer_forms_are_equivalent():
  model, variables = models.init(models.VggNet)
  x = models.images(2)
  by_tuple = gcj.gradcam(model.apply, variables, layer=("conv2", "conv"))(x)
  by_string = gcj.gradcam(model.apply, variables, layer="conv2/conv")(x)
  by_ref = gcj.gradcam(model.apply, variables, layer=gcj.LayerRef(("conv2", "conv")))(x)
  np.testing.assert_array_equal(by_tuple.cam_raw, by_string.cam_raw)
  np.testing.assert_array_equal(by_tuple.cam_raw, by_ref.cam_raw)


def test_automatic_layer_is_last_spatial_activation():
  model, variables = models.init(models.VggNet)
  x = models.images(2)
  auto = gcj.gradcam(model.apply, variables)(x)
  explicit = gcj.gradcam(model.apply, variables, layer="conv2")(x)
  np.testing.assert_array_equal(auto.cam_raw, explicit.cam_raw)


def test_pre_and_post_activation_layers_differ():
  """conv2/conv is the convolution's output (pre-ReLU), conv2 the block's (post)."""
  model, variables = models.init(models.VggNet)
  x = models.images(4)
  pre = gcj.gradcam(model.apply, variables, layer="conv2/conv")(x)
  post = gcj.gradcam(model.apply, variables, layer="conv2")(x)
  assert not np.allclose(pre.cam_raw, post.cam_raw, atol=1e-5)


def test_setup_list_remat_and_repeated_calls():
  model, variables = models.init(models.SetupNet)
  x = models.images(2)
  infos, _ = gcj.list_layers(model.apply, variables, x)
  names = {str(i.ref(2 if i.path == ("shared",) else 1)) for i in infos}
  assert {"layers_0", "layers_1", "shared@0", "shared@1", "remat_block",
          "remat_block/conv"} <= names
  for layer in ("layers_1", "remat_block", "remat_block/conv", "shared@0", "shared@1"):
    out = jax.jit(gcj.guided_gradcam(model.apply, variables, layer=layer))(x)
    assert out.cam.shape == (2, 8, 8) and np.isfinite(out.cam).all()
  first = gcj.gradcam(model.apply, variables, layer="shared@0")(x)
  second = gcj.gradcam(model.apply, variables, layer=gcj.LayerRef(("shared",), call=1))(x)
  assert not np.allclose(first.cam_raw, second.cam_raw)
  with pytest.raises(gcj.LayerNotFoundError, match="called 2 times"):
    gcj.gradcam(model.apply, variables, layer="shared")(x)


def test_remat_layer_equals_same_model_without_remat():
  """The activation inside nn.remat is read through the tap, not leaked: the same
  network without remat (same parameter tree) gives the same maps."""
  import flax.linen as nn

  class NoRemat(models.SetupNet):
    def setup(self):
      self.layers = [nn.Conv(4, (3, 3)), nn.Conv(4, (3, 3))]
      self.shared = nn.Conv(4, (1, 1))
      self.remat_block = models.ConvReLU(4)
      self.fc = nn.Dense(3)

  model, variables = models.init(models.SetupNet)
  x = models.images(2)
  for layer in ("remat_block", "remat_block/conv"):
    with_remat = gcj.guided_gradcam(model.apply, variables, layer=layer)(x)
    without = gcj.guided_gradcam(NoRemat().apply, variables, layer=layer)(x)
    assert float(with_remat.cam_raw.max()) > 0
    for field in ("cam_raw", "cam", "guided", "logits"):
      assert_close(getattr(with_remat, field), getattr(without, field), atol=1e-6)


def _raw_model():
  """The same network as raw JAX (for Split) and as linen (for paths)."""
  import flax.linen as nn

  class Linen(nn.Module):
    @nn.compact
    def __call__(self, x):
      a = models.ConvReLU(4, name="block")(x)
      return nn.Dense(3, name="fc")(a.mean(axis=(1, 2)))

  linen = Linen()
  variables = linen.init(jax.random.key(3), jnp.ones((1, 8, 8, 3)))
  p = variables["params"]

  def features(params, x):
    k, b = params["block"]["conv"]["kernel"], params["block"]["conv"]["bias"]
    y = jax.lax.conv_general_dilated(x, k, (1, 1), "SAME",
                                     dimension_numbers=("NHWC", "HWIO", "NHWC"))
    return jax.nn.relu(y + b[None, None, None, :])

  def head(params, a):
    return a.mean(axis=(1, 2)) @ params["fc"]["kernel"] + params["fc"]["bias"][None, :]

  return linen, variables, gcj.Split(features, head), p


def test_split_equals_linen_adapter():
  linen, variables, split, p = _raw_model()
  x = models.images(3)
  a = jax.jit(gcj.guided_gradcam(linen.apply, variables, layer="block"))(x)
  b = jax.jit(gcj.guided_gradcam(split, p))(x)
  for field in ("cam", "cam_raw", "guided", "guided_gradcam", "logits", "targets"):
    assert_close(getattr(a, field), getattr(b, field), atol=1e-5)


def test_bare_params_tree_equals_variables_dict():
  model, variables = models.init(models.GapNet)
  x = models.images(2)
  a = gcj.guided_gradcam(model.apply, variables)(x)
  b = gcj.guided_gradcam(model.apply, variables["params"])(x)
  np.testing.assert_array_equal(a.guided_gradcam, b.guided_gradcam)


def test_user_objects_are_not_modified():
  model, variables = models.init(models.BNNet)
  before_vars = jax.tree_util.tree_map(np.array, variables)
  before_model = (type(model), copy.copy(vars(model)), repr(model))
  x = models.images(2)
  x_before = np.array(x)
  import functools
  apply = functools.partial(model.apply, train=False)
  jax.jit(gcj.guided_gradcam(apply, variables))(x)
  gcj.gradcam(apply, variables, layer="conv")(x)
  with pytest.raises(gcj.LayerNotFoundError):
    gcj.gradcam(apply, variables, layer="missing")(x)
  jax.tree_util.tree_map(np.testing.assert_array_equal, variables, before_vars)
  assert jax.tree_util.tree_structure(variables) == jax.tree_util.tree_structure(
      before_vars)
  assert (type(model), vars(model), repr(model)) == before_model
  np.testing.assert_array_equal(x, x_before)


def test_custom_target_function_on_pytree_output():
  """A target function reads any output structure; here a dict with two heads."""
  model, variables = models.init(models.VggNet)
  apply = lambda v, x: {"cls": model.apply(v, x), "aux": jnp.zeros(x.shape[0])}
  target = lambda out, t: gcj.class_logit(out["cls"], t)
  x, t = models.images(2), jnp.array([1, 2])
  a = gcj.guided_gradcam(apply, variables, target=target, layer="conv2")(x, t)
  b = gcj.guided_gradcam(model.apply, variables, layer="conv2")(x, t)
  np.testing.assert_array_equal(a.cam, b.cam)
  np.testing.assert_array_equal(a.guided, b.guided)
  with pytest.raises(gcj.TargetError, match="argmax"):
    gcj.gradcam(apply, variables, target=target)(x)
