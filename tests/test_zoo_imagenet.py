"""VGG16 and ResNet-50 weight loading: Flax forward == PyTorch forward (torch CPU,
models defined here); Keras' VGG16 .h5 == keras.applications.VGG16 explained through the
Keras adapter."""

import jax
import numpy as np
import pytest

import gradcam_jax as gcj
from gradcam_jax import zoo

torch = pytest.importorskip("torch")
from tests.torch_reference import torch_resnet50, torch_vgg16  # noqa: E402


def _torch_logits(model, x_nhwc):
  with torch.no_grad():
    return model.eval()(torch.from_numpy(np.asarray(x_nhwc).transpose(0, 3, 1, 2))).numpy()


def _assert_logits_close(ours, theirs):
  scale = np.abs(theirs).max()
  np.testing.assert_allclose(np.asarray(ours), theirs, rtol=1e-4, atol=1e-4 * scale)


@pytest.fixture(scope="module")
def vgg_files(tmp_path_factory):
  torch.manual_seed(0)
  model = torch_vgg16()
  folder = tmp_path_factory.mktemp("vgg16")
  state = model.state_dict()
  from safetensors.torch import save_file
  save_file({k: v.contiguous() for k, v in state.items()}, str(folder / "vgg16.safetensors"))
  torch.save(state, str(folder / "vgg16.pth"))
  return model, folder


@pytest.mark.parametrize("suffix", ["safetensors", "pth"])
def test_vgg16_matches_torch(vgg_files, suffix):
  model, folder = vgg_files
  zm = zoo.load("vgg16", folder / f"vgg16.{suffix}")
  x = np.random.default_rng(0).normal(size=(2, 32, 32, 3)).astype(np.float32)
  _assert_logits_close(jax.jit(zm.apply_fn)(zm.variables, x), _torch_logits(model, x))
  assert zm.layer == "features_29" and len(zm.class_names) == 1000
  assert zm.class_names[242] == "boxer" and zm.class_names[281] == "tabby"


def test_resnet50_matches_torch(tmp_path):
  torch.manual_seed(1)
  model = torch_resnet50()
  from safetensors.torch import save_file
  save_file({k: v.contiguous() for k, v in model.state_dict().items()},
            str(tmp_path / "r50.safetensors"))
  zm = zoo.load("resnet50", tmp_path / "r50.safetensors")
  x = np.random.default_rng(1).normal(size=(2, 64, 64, 3)).astype(np.float32)
  _assert_logits_close(jax.jit(zm.apply_fn)(zm.variables, x), _torch_logits(model, x))
  assert zm.layer == "layer4"


@pytest.mark.slow
def test_keras_vgg16_through_the_adapter_equals_the_flax_zoo_vgg16(keras_vgg16_h5):
  """keras.applications.VGG16 (random weights, written by Keras in the legacy .h5
  layout) explained through the Keras adapter, and the same file loaded into the
  Flax zoo VGG16: the same scores and maps."""
  model, path = keras_vgg16_h5
  zm = zoo.load("vgg16", path)
  assert zm.layer == "block5_conv3"
  x = np.random.default_rng(2).normal(size=(2, 224, 224, 3)).astype(np.float32) * 40
  by_keras = gcj.jit(gcj.guided_gradcam(model, layer="block5_conv3"))(x)
  by_flax = gcj.jit(gcj.guided_gradcam(zm.apply_fn, zm.variables, layer=zm.layer))(x)
  _assert_logits_close(by_keras.logits, np.asarray(by_flax.logits))
  np.testing.assert_array_equal(by_keras.targets, by_flax.targets)
  for field in ("cam_raw", "cam", "guided", "guided_gradcam"):
    ours, theirs = np.asarray(getattr(by_keras, field)), np.asarray(getattr(by_flax, field))
    np.testing.assert_allclose(ours, theirs, rtol=1e-4, atol=1e-4 * np.abs(theirs).max(),
                               err_msg=field)
  # Keras' caffe preprocessing: BGR, mean-subtracted, not scaled
  img = np.full((1, 2, 2, 3), [10, 20, 30], np.uint8)
  np.testing.assert_allclose(zm.preprocess(img)[0, 0, 0],
                             [30 - 103.939, 20 - 116.779, 10 - 123.68], rtol=1e-6)


def test_missing_weights_are_a_clear_error(tmp_path):
  with pytest.raises(gcj.WeightsError, match="expected a weights file.*random_init=True"):
    zoo.load("vgg16")
  from safetensors.numpy import save_file
  save_file({"fc.weight": np.zeros((1000, 2048), np.float32)}, str(tmp_path / "x.safetensors"))
  with pytest.raises(gcj.WeightsError, match="(?s)267 arrays expected, 1 found.*missing batch_stats/bn1/mean"):
    zoo.load("resnet50", tmp_path / "x.safetensors")
  with pytest.raises(gcj.ArgumentError, match="expected a name in"):
    zoo.load("alexnet")


def test_decode_predictions():
  names = ("a", "b", "c")
  top = zoo.decode_predictions(np.log(np.array([[0.2, 0.5, 0.3]])), names, top=2)
  assert [(i, n) for i, n, _ in top[0]] == [(1, "b"), (2, "c")]
  np.testing.assert_allclose([p for *_, p in top[0]], [0.5, 0.3])
