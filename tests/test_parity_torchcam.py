"""IS-CAM and SS-CAM against torch-cam 0.5's ``ISCAM`` and ``SSCAM`` on a small CNN
with the same weights in Flax and PyTorch (``tests.torch_reference.TorchNet``): the
raw maps (before torch-cam's normalisation) equal to float tolerance. SS-CAM's noise
cannot be the same draws (torch's generator against JAX's), so it is compared at a
noise scale of 1e-6, where both are deterministic to float precision; the noise
itself (its scale, one draw per position shared by the input's channels, its key)
is checked against a NumPy reference in tests/test_methods_perturbation.py."""

from __future__ import annotations

import functools

import jax
import numpy as np
import pytest

import gradcam_jax as gcj
from tests import media_models

pytestmark = pytest.mark.slow  # the fast loop is pytest -m "not slow"

torch = pytest.importorskip("torch")
methods = pytest.importorskip("torchcam.methods", reason="needs torchcam")


@pytest.fixture(scope="module")
def twins():
  from tests.torch_reference import TorchNet
  model = media_models._model("image", "image", (8, 8), 3, lambda x: x)
  x = np.asarray(jax.random.normal(jax.random.key(3), (2, 8, 8, 3)), np.float32)
  return model, TorchNet(model.variables).eval(), x


def _theirs(cls, net, x, targets, **options):
  with cls(net, target_layer="conv2", input_shape=(3, 8, 8), **options) as extractor:
    scores = net(torch.from_numpy(x.transpose(0, 3, 1, 2).copy()))
    (cam,) = extractor(class_idx=list(targets), scores=scores, normalized=False)
  return cam.detach().numpy()


def _ours(model, x, targets, name, **options):
  record = gcj.ALL_METHODS[name]
  if options:
    record = record._replace(fn=functools.partial(record.fn, **options))
  explain = gcj.cam(model.apply_fn, model.variables, layer="conv2", method=record)
  key = {"key": jax.random.key(0)} if record.keyed else {}
  return np.asarray(explain(x, np.asarray(targets), **key).cam_raw)


def test_iscam_equals_torchcams(twins):
  model, net, x = twins
  for n in (10, 3):
    want = _theirs(methods.ISCAM, net, x, [0, 2], num_samples=n)
    got = _ours(model, x, [0, 2], "iscam", **({} if n == 10 else {"num_samples": n}))
    assert want.max() > 0
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5 * want.max())


def test_sscam_equals_torchcams_without_noise(twins):
  model, net, x = twins
  want = _theirs(methods.SSCAM, net, x, [1, 0], num_samples=3, std=1e-6)
  got = _ours(model, x, [1, 0], "sscam", num_samples=3, std=1e-6)
  assert want.max() > 0
  np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5 * want.max())


def test_cam_equals_torchcams_after_the_final_relu():
  """The original CAM: torch-cam's ``CAM`` reads the fc layer's weights; ours finds
  them in the program after the layer. torch-cam keeps negative values (no ReLU
  before its min-max); ours applies the final ReLU every method here does."""
  from tests import models
  module, variables = models.init(models.GapNet)
  p = jax.tree.map(np.asarray, variables["params"])
  tnn = torch.nn
  net = tnn.Sequential()
  net.add_module("conv1", tnn.Conv2d(3, 4, 3, padding=1))
  net.add_module("relu1", tnn.ReLU())
  net.add_module("conv2", tnn.Conv2d(4, 6, 3, padding=1))
  net.add_module("relu2", tnn.ReLU())
  net.add_module("pool", tnn.AdaptiveAvgPool2d(1))
  net.add_module("flat", tnn.Flatten())
  net.add_module("fc", tnn.Linear(6, 3))
  with torch.no_grad():
    for i, name in ((0, "block1"), (2, "block2")):
      net[i].weight.copy_(torch.from_numpy(p[name]["conv"]["kernel"].transpose(3, 2, 0, 1)
                                           .copy()))
      net[i].bias.copy_(torch.from_numpy(p[name]["conv"]["bias"].copy()))
    net.fc.weight.copy_(torch.from_numpy(p["fc"]["kernel"].T.copy()))
    net.fc.bias.copy_(torch.from_numpy(p["fc"]["bias"].copy()))
  net.eval()
  x = np.asarray(jax.random.normal(jax.random.key(4), (2, 8, 8, 3)), np.float32)
  with methods.CAM(net, target_layer="relu2", fc_layer="fc", input_shape=(3, 8, 8)) as ex:
    scores = net(torch.from_numpy(x.transpose(0, 3, 1, 2).copy()))
    (theirs,) = ex(class_idx=[2, 0], scores=scores, normalized=False)
  theirs = theirs.detach().numpy()
  ours = gcj.cam(module.apply, variables, layer="block2", method="cam")(x, np.array([2, 0]))
  assert np.abs(theirs).max() > 0 and (theirs < 0).any()  # a map with both signs
  np.testing.assert_allclose(ours.cam_raw, np.maximum(theirs, 0), rtol=1e-5,
                             atol=1e-6 * np.abs(theirs).max())


class _Draws:
  """Stands in for torch-cam's noise distribution: hands out given draws in order."""

  def __init__(self, draws):
    self.draws = list(draws)

  def sample(self, size):
    draw = self.draws.pop(0)
    assert tuple(draw.shape) == tuple(size)
    return draw


@pytest.mark.parametrize("n", [4, 2])
def test_smooth_gradcampp_equals_torchcams_with_the_same_noise(twins, n):
  """torch-cam's ``SmoothGradCAMpp`` given our noise draws (its distribution
  replaced by one that returns them): the raw maps are equal. Its map weighs the last
  noisy sample's activation and gradient; other draws give another map."""
  model, net, x = twins
  key, std = jax.random.key(4), 0.3
  record = gcj.ALL_METHODS["smoothgradcam++"]
  if n != 4:
    record = record._replace(fn=functools.partial(record.fn, num_samples=n))
  explain = gcj.cam(model.apply_fn, model.variables, layer="conv2", method=record)
  got = np.asarray(explain(x, np.array([2, 1]), key=key).cam_raw)
  # the draws as the method makes them: the layer's key (layer 0), channels last
  noise = std * jax.random.normal(jax.random.fold_in(key, 0), (n, *x.shape))
  draws = [torch.from_numpy(np.asarray(d).transpose(0, 3, 1, 2).copy()) for d in noise]
  with methods.SmoothGradCAMpp(net, target_layer="conv2", input_shape=(3, 8, 8),
                               num_samples=n, std=std) as extractor:
    extractor._distrib = _Draws(draws)
    net(torch.from_numpy(x.transpose(0, 3, 1, 2).copy()))
    (want,) = extractor(class_idx=[2, 1], normalized=False)
  want = want.detach().numpy()
  assert want.max() > 0
  np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5 * want.max())
  other = np.asarray(explain(x, np.array([2, 1]), key=jax.random.key(5)).cam_raw)
  assert not np.allclose(other, want, rtol=1e-2)
