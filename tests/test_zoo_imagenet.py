"""VGG16 and ResNet-50 weight loading: Flax forward == PyTorch forward (torch CPU,
models defined here), and the Keras VGG16 layout == the torchvision layout."""

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


def _write_keras_h5(path, state):
  """The Keras VGG16 file layout: layer groups, weight_names attributes, HWIO
  kernels, fc1 rows in (7, 7, 512) order."""
  h5py = pytest.importorskip("h5py")
  from gradcam_jax.zoo.vgg import KERAS_CONV_NAMES
  with h5py.File(path, "w") as f:
    names = []
    for index, name in KERAS_CONV_NAMES.items():
      k = state[f"features.{index}.weight"].numpy().transpose(2, 3, 1, 0)
      names.append((name, k, state[f"features.{index}.bias"].numpy()))
    fc1 = state["classifier.0.weight"].numpy().T.reshape(512, 7, 7, 4096)
    names.append(("fc1", fc1.transpose(1, 2, 0, 3).reshape(25088, 4096),
                  state["classifier.0.bias"].numpy()))
    names.append(("fc2", state["classifier.3.weight"].numpy().T,
                  state["classifier.3.bias"].numpy()))
    names.append(("predictions", state["classifier.6.weight"].numpy().T,
                  state["classifier.6.bias"].numpy()))
    layer_names = ["input_1"] + [n for n, _, _ in names] + ["flatten"]
    f.attrs["layer_names"] = [n.encode() for n in layer_names]
    f.create_group("input_1").attrs["weight_names"] = []
    f.create_group("flatten").attrs["weight_names"] = []
    for n, k, b in names:
      g = f.create_group(n)
      g.attrs["weight_names"] = [f"{n}/kernel:0".encode(), f"{n}/bias:0".encode()]
      g.create_dataset(f"{n}/kernel:0", data=k)
      g.create_dataset(f"{n}/bias:0", data=b)


def test_keras_vgg16_file_equals_torchvision_file(vgg_files, tmp_path):
  model, folder = vgg_files
  _write_keras_h5(tmp_path / "vgg16_weights_tf_dim_ordering_tf_kernels.h5",
                  model.state_dict())
  keras = zoo.load("vgg16", tmp_path / "vgg16_weights_tf_dim_ordering_tf_kernels.h5")
  tv = zoo.load("vgg16", folder / "vgg16.safetensors")
  x = np.random.default_rng(2).normal(size=(2, 32, 32, 3)).astype(np.float32)
  np.testing.assert_allclose(keras.apply_fn(keras.variables, x),
                             tv.apply_fn(tv.variables, x), rtol=1e-5, atol=1e-5)
  assert keras.layer == "block5_conv3"
  # Keras' caffe preprocessing: BGR, mean-subtracted, not scaled
  img = np.full((1, 2, 2, 3), [10, 20, 30], np.uint8)
  np.testing.assert_allclose(keras.preprocess(img)[0, 0, 0],
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
