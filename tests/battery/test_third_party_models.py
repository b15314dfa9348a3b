"""The battery: models from packages nobody here wrote, built from their constructors
with random weights, explained as a user would, each against a reference computed
here by splitting the model by hand.

These packages pull large dependencies (Keras Hub brings TensorFlow), so the battery
runs in its own environment (the README's "Third-party models" command); in the test
environment every test here is skipped, naming the package it needs.

For a model whose head is a global average pool and one dense layer, Grad-CAM at the
pool's input has a closed form: dA = W[:, t] / (h w) everywhere, so the map is
``relu(A @ W[:, t]) / (h w)``. Other heads are rebuilt from the model's own parts.
"""

from __future__ import annotations

import functools
import os

os.environ.setdefault("KERAS_BACKEND", "jax")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

import gradcam_jax as gcj  # noqa: E402
from tests.models import assert_close  # noqa: E402

T = jnp.array([1, 3])


def _images(size=64, channels_first=False):
  x = jax.random.uniform(jax.random.key(0), (2, size, size, 3))
  return jnp.transpose(x, (0, 3, 1, 2)) if channels_first else x


def _gradcam_by_hand(a, head, targets):
  """Grad-CAM of (B, h, w, C) activations `a` through `head(a) -> logits`."""
  da = jax.grad(lambda a: jnp.take_along_axis(head(a), targets[:, None], 1).sum())(a)
  return jax.nn.relu(jnp.einsum("bhwk,bk->bhw", a, da.mean((1, 2))))


def _closed_form(a, kernel, targets):
  """Grad-CAM at the input of a global average pool + dense head."""
  h, w = a.shape[1:3]
  return jax.nn.relu(jnp.einsum("bhwk,kb->bhw", a, kernel[:, targets])) / (h * w)


def _check(got, want):
  assert float(jnp.abs(want).max()) > 0, "the reference map is blank"
  assert_close(got, want, atol=1e-5 * float(jnp.abs(want).max()) + 1e-7, rtol=1e-4)


# -- Keras Hub (Keras 3 on JAX; a backbone model nested in the classifier) ----------


def _keras_hub():
  return pytest.importorskip("keras_hub", reason="the battery's Keras Hub models")


def _keras_classifier(kind):
  kh = _keras_hub()
  if kind == "resnet":
    backbone = kh.models.ResNetBackbone(
      input_conv_filters=[64], input_conv_kernel_sizes=[7],
      stackwise_num_filters=[64, 32], stackwise_num_blocks=[1, 1],
      stackwise_num_strides=[1, 2], block_type="basic_block",
      image_shape=(64, 64, 3))
    return kh.models.ResNetImageClassifier(backbone=backbone, num_classes=5)
  if kind == "densenet":
    backbone = kh.models.DenseNetBackbone(
      stackwise_num_repeats=[2, 2], image_shape=(64, 64, 3), growth_rate=8)
    return kh.models.DenseNetImageClassifier(backbone=backbone, num_classes=5)
  backbone = kh.models.EfficientNetBackbone(
    stackwise_kernel_sizes=[3, 3], stackwise_num_repeats=[1, 1],
    stackwise_input_filters=[16, 16], stackwise_output_filters=[16, 24],
    stackwise_expansion_ratios=[1, 4], stackwise_squeeze_and_excite_ratios=[0.0, 0.25],
    stackwise_strides=[1, 2], stackwise_block_types=["fused", "unfused"],
    width_coefficient=1.0, depth_coefficient=1.0, input_shape=(64, 64, 3),
    num_features=32)
  return kh.models.EfficientNetImageClassifier(backbone=backbone, num_classes=5)


@pytest.mark.parametrize("kind", ["resnet", "densenet", "efficientnet"])
def test_keras_hub_classifiers(kind):
  import keras

  keras.utils.set_random_seed(0)
  model = _keras_classifier(kind)
  x = _images()
  backbone = model.backbone
  with jax.numpy_rank_promotion("allow"):
    a = jnp.asarray(backbone(x))
    kernel = jnp.asarray(model.get_layer("predictions").kernel)
    # random weights may leave a class's map blank: explain each example's class
    # with the largest map, so the comparison is not between zeros
    t = jnp.argmax(jnp.einsum("bhwk,kc->bhwc", a, kernel).max((1, 2)), -1)
    got = gcj.gradcam(model, layer=backbone.name)(x, t)
    jitted = gcj.jit(gcj.gradcam(model, layer=backbone.name))(x, t)
    automatic = gcj.gradcam(model)(x, t)  # the backbone's last spatial layer
    if kind == "efficientnet":  # swish activations: nothing to guide
      with pytest.raises(gcj.NoReLUError, match="efficient_net_image_classifier"):
        gcj.guided_backprop(model)(x, t)
    else:
      guided = gcj.guided_backprop(model)(x, t).guided
      assert np.isfinite(guided).all() and float(jnp.abs(guided).max()) > 0
  _check(got.cam_raw, _closed_form(a, kernel, t))
  assert_close(jitted.cam_raw, got.cam_raw, atol=1e-6)
  assert automatic.cam_raw.shape == got.cam_raw.shape


# -- flaxmodels (Flax linen ResNet and VGG) -----------------------------------------


def _flaxmodels():
  return pytest.importorskip("flaxmodels", reason="the battery's Flax linen models")


def test_flaxmodels_resnet18():
  fm = _flaxmodels()
  net = fm.ResNet18(output="logits", pretrained=None, num_classes=5)
  x = _images()
  apply = functools.partial(net.apply, train=False)
  with jax.numpy_rank_promotion("allow"):  # flaxmodels' batch norm relies on it
    variables = net.init(jax.random.key(1), x, train=False)
    _, state = apply(variables, x, mutable=["intermediates"],
                     capture_intermediates=lambda m, _: m.name == "BasicBlock_7")
    a = state["intermediates"]["BasicBlock_7"]["__call__"][0]
    got = gcj.jit(gcj.gradcam(apply, variables, layer="BasicBlock_7"))(x, T)
    automatic = gcj.gradcam(apply, variables)(x, T)
  _check(got.cam_raw, _closed_form(a, variables["params"]["Dense_0"]["kernel"], T))
  assert_close(automatic.cam_raw, got.cam_raw)  # layer=None: the last block


def test_flaxmodels_vgg16_with_its_head_and_guided_backprop():
  """VGG16 with its classifier (224 px only); the head rebuilt from its params; guided
  backprop against the model run with flax's relu swapped for the guided one."""
  fm = _flaxmodels()
  net = fm.VGG16(output="logits", pretrained=None, num_classes=5)
  x = _images(224)[:1]
  variables = net.init(jax.random.key(1), x, train=False)
  apply = functools.partial(net.apply, train=False)
  p = variables["params"]
  _, state = apply(variables, x, capture_intermediates=lambda m, _: m.name == "conv5_3",
                   mutable=["intermediates"])
  a = state["intermediates"]["conv5_3"]["__call__"][0]

  def head(a):
    h = jax.nn.relu(a)
    b, hh, ww, c = h.shape
    h = h.reshape(b, hh // 2, 2, ww // 2, 2, c).max((2, 4))
    h = jnp.transpose(h, (0, 3, 1, 2)).reshape(b, -1)
    for name, relu in (("fc6", True), ("fc7", True), ("fc8", False)):
      h = h @ p[name]["kernel"] + p[name]["bias"][None]
      h = jax.nn.relu(h) if relu else h
    return h

  got = gcj.gradcam(apply, variables, layer="conv5_3")(x, T[:1])
  _check(got.cam_raw, _gradcam_by_hand(a, head, T[:1]))
  guided = gcj.guided_backprop(apply, variables)(x, T[:1]).guided
  import flax.linen as nn
  with pytest.MonkeyPatch.context() as mp:
    mp.setattr(nn, "relu", gcj.guided_relu)
    want = jax.grad(lambda x: apply(variables, x)[0, T[0]])(x)
  assert_close(guided, want, atol=1e-6 * float(jnp.abs(want).max()))


# -- equimo (Equinox: MobileNetV3 with GroupNorm and hard-swish; ConvNeXt) ----------


def _equimo():
  return pytest.importorskip("equimo", reason="the battery's Equinox models")


def test_equimo_mobilenetv3_small():
  _equimo()
  import equinox as eqx
  from equimo.models.mobilenet import mobilenetv3_small

  net = eqx.nn.inference_mode(mobilenetv3_small(num_classes=5, key=jax.random.key(0)))
  model = eqx.Partial(net, key=jax.random.key(1))  # its __call__ takes a key
  x = _images(channels_first=True)
  last = len(net.layers) - 1
  select = lambda p: p.func.layers[last]  # noqa: E731
  a = jax.vmap(lambda x: net.features(x, key=jax.random.key(1), inference=True))(x)
  a = jnp.moveaxis(a, 1, -1)
  got = gcj.jit(gcj.gradcam(model, layer=select, image_layout="NCHW"))(x, T)
  _check(got.cam_raw, _closed_form(a, net.classifier.weight.T, T))
  report = gcj.guided_report(jax.vmap(model), x)
  assert report.replaced > 0 and "variance" in str(report)  # GroupNorm's clamps left
  guided = gcj.guided_backprop(model, image_layout="NCHW")(x, T).guided
  plain = jax.grad(lambda x: jax.vmap(model)(x)[jnp.arange(2), T].sum())(x)
  assert np.isfinite(guided).all() and not np.allclose(guided, plain)


def test_equimo_convnext_has_no_relu_and_gradcam_matches():
  _equimo()
  import equinox as eqx
  from equimo.models.convnext import ConvNeXt

  net = eqx.nn.inference_mode(ConvNeXt(depths=[1, 1], dims=[16, 32], num_classes=5,
                                       key=jax.random.key(0)))
  model = eqx.Partial(net, key=jax.random.key(1))
  x = _images(channels_first=True)
  a = jax.vmap(lambda x: net.features(x, inference=True))(x)
  head = lambda a: jax.vmap(lambda v: net.head(net.norm(v.mean((0, 1)))))(a)  # noqa: E731
  got = gcj.gradcam(model, layer=lambda p: p.func.blocks[1], image_layout="NCHW")(x, T)
  _check(got.cam_raw, _gradcam_by_hand(jnp.moveaxis(a, 1, -1), head, T))
  with pytest.raises(gcj.NoReLUError, match=r"ConvNeXt \(in Partial\)"):  # GELU only
    gcj.guided_backprop(model, image_layout="NCHW")(x, T)


# -- jax-image-models (jimm: a Flax NNX ViT, blocks under nnx.scan) -----------------


@pytest.mark.parametrize("remat", [False, True])
def test_jimm_vit_with_scanned_blocks(remat):
  pytest.importorskip("jimm", reason="the battery's Flax NNX ViT")
  from flax import nnx
  from jimm.common.sharding import NoSharding
  from jimm.models.vit.vit_model import VisionTransformer

  with jax.set_mesh(jax.make_mesh((1,), ("data",))):  # jimm builds on a mesh
    vit = VisionTransformer(
      num_classes=5, img_size=32, patch_size=8, num_layers=3, num_heads=2, mlp_dim=32,
      hidden_size=16, dropout_rate=0.0, use_gradient_checkpointing=remat,
      rngs=nnx.Rngs(0), sharding=NoSharding)
    vit.eval()
    x = _images(32)
    enc = vit.encoder
    graphdef, stacked = nnx.split(enc.layers)
    block = [nnx.merge(graphdef, jax.tree.map(lambda v: v[i], stacked)) for i in range(3)]

    def upto(x, k):
      p = enc.patch_embeddings(x)
      p = p.reshape(p.shape[0], -1, p.shape[-1])
      cls = jnp.tile(enc.cls_token[...], [p.shape[0], 1, 1])
      h = jnp.concatenate([cls, p], 1) + enc.position_embeddings[...]
      for i in range(k + 1):
        h = block[i](h)
      return h

    def rest(h, k):
      for i in range(k + 1, 3):
        h = block[i](h)
      return vit.classifier(enc.ln_post(h)[:, 0])

    assert_close(rest(upto(x, 0), 0), vit(x), atol=1e-5)
    grid = gcj.tokens_to_grid()
    for k in (0, 1):
      tokens = upto(x, k)
      want = _gradcam_by_hand(grid(tokens), lambda g: rest(
        jnp.concatenate([tokens[:, :1], g.reshape(2, -1, 16)], 1), k), T)
      got = gcj.gradcam(vit, layer=f"encoder/layers@{k}", reshape=grid)(x, T)
      _check(got.cam_raw, want)
    automatic = gcj.gradcam(vit, reshape=grid)(x, T)  # a layer that reaches the logits
    assert float(automatic.cam_raw.max()) > 0
    with pytest.raises(gcj.NoReLUError):
      gcj.guided_backprop(vit)(x, T)
