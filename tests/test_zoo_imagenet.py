"""VGG16 and ResNet-50 weight loading: Flax forward == PyTorch forward (torch CPU,
models defined here), and the Keras VGG16 layout == the torchvision layout."""

import jax
import numpy as np
import pytest

from gradcam_jax import zoo

torch = pytest.importorskip("torch")
tnn = torch.nn


def torch_vgg16():
  layers, c = [], 3
  for v in (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M",
            512, 512, 512, "M"):
    if v == "M":
      layers.append(tnn.MaxPool2d(2, 2))
    else:
      layers += [tnn.Conv2d(c, v, 3, padding=1), tnn.ReLU(inplace=True)]
      c = v

  class VGG(tnn.Module):
    def __init__(self):
      super().__init__()
      self.features = tnn.Sequential(*layers)
      self.avgpool = tnn.AdaptiveAvgPool2d((7, 7))
      self.classifier = tnn.Sequential(
          tnn.Linear(25088, 4096), tnn.ReLU(True), tnn.Dropout(),
          tnn.Linear(4096, 4096), tnn.ReLU(True), tnn.Dropout(), tnn.Linear(4096, 1000))

    def forward(self, x):
      return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))

  return VGG()


class Bottleneck(tnn.Module):
  def __init__(self, cin, width, stride):
    super().__init__()
    self.conv1 = tnn.Conv2d(cin, width, 1, bias=False)
    self.bn1 = tnn.BatchNorm2d(width)
    self.conv2 = tnn.Conv2d(width, width, 3, stride, 1, bias=False)
    self.bn2 = tnn.BatchNorm2d(width)
    self.conv3 = tnn.Conv2d(width, width * 4, 1, bias=False)
    self.bn3 = tnn.BatchNorm2d(width * 4)
    self.relu = tnn.ReLU(inplace=True)
    self.downsample = None
    if stride != 1 or cin != width * 4:
      self.downsample = tnn.Sequential(tnn.Conv2d(cin, width * 4, 1, stride, bias=False),
                                       tnn.BatchNorm2d(width * 4))

  def forward(self, x):
    y = self.relu(self.bn1(self.conv1(x)))
    y = self.relu(self.bn2(self.conv2(y)))
    y = self.bn3(self.conv3(y))
    return self.relu(y + (x if self.downsample is None else self.downsample(x)))


def torch_resnet50():
  class ResNet(tnn.Module):
    def __init__(self):
      super().__init__()
      self.conv1 = tnn.Conv2d(3, 64, 7, 2, 3, bias=False)
      self.bn1 = tnn.BatchNorm2d(64)
      self.relu = tnn.ReLU(inplace=True)
      self.maxpool = tnn.MaxPool2d(3, 2, 1)
      cin = 64
      for i, (width, blocks, stride) in enumerate(((64, 3, 1), (128, 4, 2), (256, 6, 2),
                                                   (512, 3, 2)), start=1):
        mods = []
        for b in range(blocks):
          mods.append(Bottleneck(cin, width, stride if b == 0 else 1))
          cin = width * 4
        setattr(self, f"layer{i}", tnn.Sequential(*mods))
      self.avgpool = tnn.AdaptiveAvgPool2d(1)
      self.fc = tnn.Linear(2048, 1000)

    def forward(self, x):
      x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
      x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
      return self.fc(torch.flatten(self.avgpool(x), 1))

  model = ResNet()
  gen = torch.Generator().manual_seed(0)
  for m in model.modules():  # non-trivial running statistics
    if isinstance(m, tnn.BatchNorm2d):
      m.running_mean.copy_(torch.randn(m.num_features, generator=gen) * 0.1)
      m.running_var.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
      m.weight.data.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
      m.bias.data.copy_(torch.randn(m.num_features, generator=gen) * 0.1)
  return model


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
  with pytest.raises(ValueError, match="expected a weights file.*random_init=True"):
    zoo.load("vgg16")
  from safetensors.numpy import save_file
  save_file({"fc.weight": np.zeros((1000, 2048), np.float32)}, str(tmp_path / "x.safetensors"))
  with pytest.raises(ValueError, match="(?s)267 arrays expected, 1 found.*missing batch_stats/bn1/mean"):
    zoo.load("resnet50", tmp_path / "x.safetensors")
  with pytest.raises(ValueError, match="expected a name in"):
    zoo.load("alexnet")


def test_decode_predictions():
  names = ("a", "b", "c")
  top = zoo.decode_predictions(np.log(np.array([[0.2, 0.5, 0.3]])), names, top=2)
  assert [(i, n) for i, n, _ in top[0]] == [(1, "b"), (2, "c")]
  np.testing.assert_allclose([p for *_, p in top[0]], [0.5, 0.3])
