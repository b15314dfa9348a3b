"""PyTorch definitions of torchvision's VGG16 and ResNet-50 (torchvision itself does not
install beside the CPU torch pin here), for parity tests and peer benchmarks."""

import importlib
import sys
import types

import torch

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


class TorchNet(tnn.Module):
  """``tests.media_models.Net`` in PyTorch, channels first, with its weights: two
  conv blocks (the first and second ReLU'd), a global average pool and a Linear, in
  1-D, 2-D or 3-D as the Flax variables are."""

  def __init__(self, variables):
    super().__init__()
    import jax
    import numpy as np
    p = jax.tree.map(np.asarray, variables["params"])
    rank = p["conv1"]["kernel"].ndim - 2
    conv = {1: tnn.Conv1d, 2: tnn.Conv2d, 3: tnn.Conv3d}[rank]
    cin = p["conv1"]["kernel"].shape[-2]
    self.conv1 = conv(cin, p["conv1"]["kernel"].shape[-1], 3, padding=1)
    self.conv2 = conv(p["conv2"]["kernel"].shape[-2], p["conv2"]["kernel"].shape[-1], 3,
                      padding=1)
    self.fc = tnn.Linear(*p["fc"]["kernel"].shape)
    self.space = tuple(range(2, 2 + rank))
    order = (rank + 1, rank, *range(rank))  # (*spatial, I, O) -> (O, I, *spatial)
    with torch.no_grad():
      for name in ("conv1", "conv2"):
        getattr(self, name).weight.copy_(
          torch.from_numpy(p[name]["kernel"].transpose(order).copy()))
        getattr(self, name).bias.copy_(torch.from_numpy(p[name]["bias"].copy()))
      self.fc.weight.copy_(torch.from_numpy(p["fc"]["kernel"].T.copy()))
      self.fc.bias.copy_(torch.from_numpy(p["fc"]["bias"].copy()))

  def forward(self, x):
    x = torch.relu(self.conv1(x))
    x = torch.relu(self.conv2(x))
    return self.fc(x.mean(dim=self.space))


def _unavailable(*args, **kwargs):
  raise RuntimeError("torchvision stand-in: not part of the Grad-CAM path")


def import_pytorch_grad_cam():
  """``(pytorch_grad_cam, pytorch_grad_cam.base_cam, its model_targets)``, with a
  torchvision stand-in (every function raises) only while it is imported and only
  where the real one does not import: pytorch-grad-cam imports torchvision for image
  utilities and detection targets that no CAM method uses."""
  try:
    import torchvision  # noqa: F401
    stand_in = {}
  except Exception:  # noqa: BLE001 (missing, or a build that fails to load)
    names = ("torchvision", "torchvision.transforms", "torchvision.transforms.functional",
             "torchvision.ops")
    stand_in = {n: types.ModuleType(n) for n in names}
    for module in stand_in.values():
      for attr in ("resize", "Compose", "Normalize", "ToTensor", "box_iou"):
        setattr(module, attr, _unavailable)
    stand_in["torchvision"].transforms = stand_in["torchvision.transforms"]
    stand_in["torchvision"].ops = stand_in["torchvision.ops"]
    stand_in["torchvision.transforms"].functional = stand_in[
      "torchvision.transforms.functional"]
    for n in names:
      sys.modules.pop(n, None)
    sys.modules.update(stand_in)
  try:
    pgc = importlib.import_module("pytorch_grad_cam")
    base = importlib.import_module("pytorch_grad_cam.base_cam")
    targets = importlib.import_module("pytorch_grad_cam.utils.model_targets")
  finally:
    for n in stand_in:
      sys.modules.pop(n, None)
  return pgc, base, targets
