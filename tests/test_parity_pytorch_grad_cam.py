"""Against pytorch-grad-cam 1.5.7: Deep Feature Factorization (its ``dff`` on the
same activations); FinerCAM, ShapleyCAM, FEM and KPCA-CAM on a 2-D network and FullGrad
on one with batch norms, each with the same weights in PyTorch; and 3-D Grad-CAM (its
3-D support, contributed for medical volumes): a small Conv3d network with the same weights in Flax and in PyTorch, the raw
maps compared before pytorch-grad-cam's resize (``scipy.ndimage.zoom``, a cubic spline:
not our trilinear upsampling, so the resized maps are not compared).

Runs where pytorch-grad-cam and torch import; skipped with the reason elsewhere (the
test environment has torch but not pytorch-grad-cam, which pulls torchvision). To run
it beside the test environment (as ``.ci/run`` does, with
``GRADCAM_JAX_REQUIRE_PEERS=1`` so that a missing peer fails instead of skipping)::

    pip install --target /tmp/pgc --no-deps grad-cam==1.5.7 ttach
    PYTHONPATH=/tmp/pgc python -m pytest tests/test_parity_pytorch_grad_cam.py

pytorch-grad-cam imports torchvision at import time for its image utilities and its
detection targets, none of which Grad-CAM uses; where torchvision cannot be imported
(PyPI's build for torch 2.13 fails to load beside it), an import stand-in whose every
function raises is put in its place while pytorch-grad-cam is imported, then removed
(``tests.torch_reference.import_pytorch_grad_cam``, which benchmarks/peers.py uses too).
"""

from __future__ import annotations

import importlib
import importlib.util
import os

import jax
import numpy as np
import pytest

import gradcam_jax as gcj
from tests import media_models, torch_reference

if importlib.util.find_spec("pytorch_grad_cam") is None:
  if os.environ.get("GRADCAM_JAX_REQUIRE_PEERS"):  # CI: installed, so it must run
    raise ImportError("GRADCAM_JAX_REQUIRE_PEERS is set but pytorch_grad_cam is missing")
  pytest.skip("pytorch-grad-cam is not installed (see this file's docstring to run it)",
              allow_module_level=True)
torch = pytest.importorskip("torch", reason="needs torch")


def _import_pytorch_grad_cam():
  return torch_reference.import_pytorch_grad_cam()


def _raw_maps(monkeypatch, base) -> list:
  """pytorch-grad-cam's per-layer maps as they reach its resize (ReLU'd, before
  ``scale_cam_image`` resizes and normalises them), appended to the list returned."""
  raw = []
  real = base.scale_cam_image

  def keep(cam, target_size=None):
    if target_size is not None:  # the per-layer call, not the final aggregation
      raw.append(np.array(cam))
    return real(cam, target_size)

  monkeypatch.setattr(base, "scale_cam_image", keep)
  return raw


def _twin_2d(init_seed: int, data_seed: int):
  """``media_models.Net`` in 2-D with 5 classes, its PyTorch twin (same weights), and
  3 images: ``(module, variables, x, net)``."""
  from tests.torch_reference import TorchNet
  module = media_models.Net(2, classes=5)
  variables = module.init(jax.random.key(init_seed), np.zeros((1, 8, 8, 3), np.float32))
  x = np.asarray(jax.random.normal(jax.random.key(data_seed), (3, 8, 8, 3)), np.float32)
  return module, variables, x, TorchNet(variables).eval()


def test_3d_gradcam_raw_maps_equal_pytorch_grad_cams(monkeypatch):
  pgc, base, targets = _import_pytorch_grad_cam()
  model = media_models.video()  # a (4, 16, 16) clip of 3 channels: a 3-D CNN
  x = np.asarray(jax.random.normal(jax.random.key(5), (2, 4, 16, 16, 3)), np.float32)
  from tests.torch_reference import TorchNet
  net = TorchNet(model.variables).eval()
  want_logits = net(torch.from_numpy(x.transpose(0, 4, 1, 2, 3))).detach().numpy()
  ours = gcj.gradcam(model.apply_fn, model.variables, layer="conv2")(
    x, np.array([0, 2]))
  np.testing.assert_allclose(ours.logits, want_logits, atol=1e-5)  # one network

  raw = _raw_maps(monkeypatch, base)
  with pgc.GradCAM(model=net, target_layers=[net.conv2]) as cam:
    resized = cam(torch.from_numpy(x.transpose(0, 4, 1, 2, 3)),
                  [targets.ClassifierOutputTarget(0), targets.ClassifierOutputTarget(2)])
  assert resized.shape == (2, 4, 16, 16) and len(raw) == 1
  assert raw[0].shape == ours.cam_raw.shape == (2, 4, 16, 16)
  assert raw[0].max() > 0  # a map, not zeros
  np.testing.assert_allclose(np.asarray(ours.cam_raw), raw[0], rtol=1e-4, atol=1e-6)


def test_feature_factorization_matches_pytorch_grad_cams_dff():
  """Deep Feature Factorization on the same activations: pytorch-grad-cam's ``dff``
  (scikit-learn's NMF) and ours factorise the same offset matrix, with shapes alike
  and our reconstruction error within 1.2x of theirs; concept scores through the
  head equal its classifier applied to our concepts."""
  _import_pytorch_grad_cam()
  dff = importlib.import_module(
    "pytorch_grad_cam.feature_factorization.deep_feature_factorization").dff
  from tests import models
  module, variables = models.init(models.GapNet)
  x = models.images(batch=4, size=8)
  ours = gcj.jit(gcj.feature_factorization(module.apply, variables, layer="block2",
                                           n_components=3))(x)
  a = module.apply(variables, x, capture_intermediates=True, mutable=["intermediates"])[1]
  a = np.asarray(a["intermediates"]["block2"]["__call__"][0], np.float64)
  concepts, maps = dff(a.transpose(0, 3, 1, 2).copy(), n_components=3)
  assert concepts.shape == ours.concepts.shape and maps.shape == ours.maps_raw.shape
  v = a.reshape(-1, a.shape[-1]).T
  offset = v.min(axis=1, keepdims=True)
  h = maps.transpose(1, 0, 2, 3).reshape(3, -1)
  theirs = np.linalg.norm(v - offset - (concepts - offset) @ h) / np.linalg.norm(v - offset)
  assert float(ours.error) <= 1.2 * theirs, (float(ours.error), theirs)
  fc = variables["params"]["fc"]
  head = np.asarray(ours.concepts).T @ np.asarray(fc["kernel"]) + np.asarray(fc["bias"])
  np.testing.assert_allclose(ours.scores, head, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("alpha", [1.0, 0.6])
def test_finercam_raw_maps_equal_pytorch_grad_cams(monkeypatch, alpha):
  """FinerCAM: Grad-CAM of the target's logit against its most similar classes
  (softmax-weighted), on a 2-D network of 5 classes with pytorch-grad-cam's default
  comparison ranks (1, 2, 3) and the predicted class as the main one."""
  pgc, base, _ = _import_pytorch_grad_cam()
  finer = importlib.import_module("pytorch_grad_cam.finer_cam")
  module, variables, x, net = _twin_2d(8, 6)
  raw = _raw_maps(monkeypatch, base)
  with finer.FinerCAM(net, target_layers=[net.conv2]) as cam:
    cam(torch.from_numpy(x.transpose(0, 3, 1, 2).copy()), alpha=alpha)
  options = {} if alpha == 1.0 else {"target": gcj.finer_target(alpha=alpha)}
  ours = gcj.cam(module.apply, variables, layer="conv2", method="finercam", **options)(x)
  assert raw[0].max() > 0
  np.testing.assert_allclose(np.asarray(ours.cam_raw), raw[0], rtol=1e-4,
                             atol=1e-6 * raw[0].max())
  plain = gcj.cam(module.apply, variables, layer="conv2")(x)  # the target matters
  assert not np.allclose(np.asarray(plain.cam_raw), raw[0], rtol=1e-2)


@pytest.mark.parametrize("rest", [False, True])
def test_shapleycam_raw_maps_equal_pytorch_grad_cams(monkeypatch, rest):
  """ShapleyCAM (gradient minus half the Hessian-vector product along the
  activation) with the logit and with the ReST target, on a 2-D network."""
  pgc, base, targets = _import_pytorch_grad_cam()
  module, variables, x, net = _twin_2d(9, 10)
  t = np.array([4, 0, 2])
  raw = _raw_maps(monkeypatch, base)
  kind = targets.ClassifierOutputReST if rest else targets.ClassifierOutputTarget
  with pgc.ShapleyCAM(net, target_layers=[net.conv2]) as cam:
    cam(torch.from_numpy(x.transpose(0, 3, 1, 2).copy()), [kind(int(c)) for c in t])
  options = {"target": gcj.rest_target} if rest else {}
  ours = gcj.cam(module.apply, variables, layer="conv2", method="shapleycam",
                 **options)(x, t)
  assert raw[0].max() > 0
  if rest:  # the Hessian term is exercised: Grad-CAM of the same target differs
    plain = gcj.cam(module.apply, variables, layer="conv2", **options)(x, t)
    assert not np.allclose(np.asarray(plain.cam_raw), raw[0], rtol=1e-3)
  np.testing.assert_allclose(np.asarray(ours.cam_raw), raw[0], rtol=1e-4,
                             atol=1e-5 * raw[0].max())


def _torch_fullgrad_net():
  """``tests.test_methods_fullgrad.FullGradNet`` in PyTorch with its weights (ReLUs
  not in place: an in-place ReLU after a hooked BatchNorm2d would change what
  pytorch-grad-cam's hook reads)."""
  from tests.test_methods_fullgrad import EPS, VARS
  tnn = torch.nn
  p, s = jax.tree.map(np.asarray, VARS["params"]), jax.tree.map(np.asarray,
                                                                VARS["batch_stats"])

  class Net(tnn.Module):
    def __init__(self):
      super().__init__()
      self.c1 = tnn.Conv2d(3, 4, 3, padding=1)
      self.bn1 = tnn.BatchNorm2d(4, eps=EPS)
      self.c2 = tnn.Conv2d(4, 5, 3, padding=1, bias=False)
      self.bn2 = tnn.BatchNorm2d(5, eps=EPS)
      self.fc = tnn.Linear(5, 3)

    def forward(self, x):
      x = torch.max_pool2d(torch.relu(self.bn1(self.c1(x))), 2)
      return self.fc(torch.relu(self.bn2(self.c2(x))).mean((2, 3)))

  net = Net()
  with torch.no_grad():
    for name in ("c1", "c2"):
      getattr(net, name).weight.copy_(torch.from_numpy(p[name]["kernel"].transpose(3, 2, 0, 1).copy()))
    net.c1.bias.copy_(torch.from_numpy(p["c1"]["bias"]))
    for name in ("bn1", "bn2"):
      bn = getattr(net, name)
      bn.weight.copy_(torch.from_numpy(p[name]["scale"]))
      bn.bias.copy_(torch.from_numpy(p[name]["bias"]))
      bn.running_mean.copy_(torch.from_numpy(s[name]["mean"]))
      bn.running_var.copy_(torch.from_numpy(s[name]["var"]))
    net.fc.weight.copy_(torch.from_numpy(p["fc"]["kernel"].T.copy()))
    net.fc.bias.copy_(torch.from_numpy(p["fc"]["bias"]))
  return net.eval()


def test_fullgrad_equals_pytorch_grad_cams(monkeypatch):
  """FullGrad: the summed map before the final normalisation (captured where
  pytorch-grad-cam aggregates it) and the normalised map, on a network with a biased
  convolution, an unbiased one, two batch normalisations in inference and a pool."""
  pgc, base, targets = _import_pytorch_grad_cam()
  from tests.test_methods_fullgrad import LINEN, T, X
  net = _torch_fullgrad_net()
  x = torch.from_numpy(np.asarray(X).transpose(0, 3, 1, 2).copy())
  ours = LINEN(X, T)
  np.testing.assert_allclose(ours.logits, net(x).detach().numpy(), atol=1e-5)
  fullgrad = importlib.import_module("pytorch_grad_cam.fullgrad_cam").FullGrad
  summed = []
  real = fullgrad.aggregate_multi_layers
  monkeypatch.setattr(fullgrad, "aggregate_multi_layers",
                      lambda self, cams: summed.append(cams[:, 0]) or real(self, cams))
  with fullgrad(net, target_layers=[]) as cam:
    theirs = cam(x, [targets.ClassifierOutputTarget(int(t)) for t in T])
  assert summed[0].shape == ours.cam_raw.shape == (2, 8, 8) and summed[0].max() > 0
  np.testing.assert_allclose(np.asarray(ours.cam_raw), summed[0], rtol=1e-4,
                             atol=1e-5 * summed[0].max())
  np.testing.assert_allclose(np.asarray(ours.cam), theirs, atol=1e-5)


@pytest.mark.parametrize("name", ["fem", "kpcacam"])
def test_fem_and_kpcacam_raw_maps_equal_pytorch_grad_cams(monkeypatch, name):
  """FEM (the k-sigma rule's share of positions per channel) and KPCA-CAM (the first
  kernel-PCA component, sigmoid kernel, scikit-learn's sign), gradient-free, on a
  2-D network with the same weights: the ReLU'd per-layer maps before the resize."""
  pgc, base, targets = _import_pytorch_grad_cam()
  module, variables, x, net = _twin_2d(12, 13)
  t = np.array([1, 4, 0])
  raw = _raw_maps(monkeypatch, base)
  cls = {"fem": pgc.FEM, "kpcacam": pgc.KPCA_CAM}[name]
  with cls(net, target_layers=[net.conv2]) as cam:
    cam(torch.from_numpy(x.transpose(0, 3, 1, 2).copy()),
        [targets.ClassifierOutputTarget(int(c)) for c in t])
  ours = gcj.cam(module.apply, variables, layer="conv2", method=name)(x, t)
  assert raw[0].shape == ours.cam_raw.shape and raw[0].max() > 0
  np.testing.assert_allclose(np.asarray(ours.cam_raw), raw[0], rtol=1e-4,
                             atol=1e-5 * raw[0].max())
