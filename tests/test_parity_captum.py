"""Reference parity with Captum on a small PyTorch CNN and the same weights in Flax:
Grad-CAM raw map == LayerGradCam(relu_attributions=True), guided backprop ==
GuidedBackprop, Guided Grad-CAM == GuidedGradCam (bilinear interpolation), to 1e-5."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gradcam_jax as gcj
from gradcam_jax.zoo._modules import MaxPool, ReLU

pytestmark = pytest.mark.slow  # the fast loop is pytest -m "not slow"

torch = pytest.importorskip("torch")
captum_attr = pytest.importorskip("captum.attr")
tnn = torch.nn


class TorchNet(tnn.Module):
  def __init__(self):
    super().__init__()
    self.conv1, self.relu1 = tnn.Conv2d(3, 4, 3, padding=1), tnn.ReLU()
    self.conv2, self.relu2 = tnn.Conv2d(4, 6, 3, padding=1), tnn.ReLU()
    self.pool = tnn.MaxPool2d(2)
    self.fc1, self.relu3 = tnn.Linear(6 * 4 * 4, 8), tnn.ReLU()
    self.fc2 = tnn.Linear(8, 3)

  def forward(self, x):
    x = self.pool(self.relu2(self.conv2(self.relu1(self.conv1(x)))))
    return self.fc2(self.relu3(self.fc1(torch.flatten(x, 1))))


class FlaxNet(nn.Module):
  @nn.compact
  def __call__(self, x):
    x = ReLU(name="relu1")(nn.Conv(4, (3, 3), padding=1, name="conv1")(x))
    x = ReLU(name="relu2")(nn.Conv(6, (3, 3), padding=1, name="conv2")(x))
    x = MaxPool(2, name="pool")(x)
    x = jnp.transpose(x, (0, 3, 1, 2)).reshape(x.shape[0], -1)  # torch's flatten order
    return nn.Dense(3, name="fc2")(ReLU(name="relu3")(nn.Dense(8, name="fc1")(x)))


def _flax_params(net):
  sd = {k: v.detach().numpy() for k, v in net.state_dict().items()}
  conv = lambda n: {"kernel": sd[f"{n}.weight"].transpose(2, 3, 1, 0), "bias": sd[f"{n}.bias"]}
  dense = lambda n: {"kernel": sd[f"{n}.weight"].T, "bias": sd[f"{n}.bias"]}
  return {"params": {"conv1": conv("conv1"), "conv2": conv("conv2"),
                     "fc1": dense("fc1"), "fc2": dense("fc2")}}


@pytest.fixture(scope="module")
def nets():
  torch.manual_seed(0)
  net = TorchNet().eval()
  x = np.random.default_rng(0).normal(size=(4, 8, 8, 3)).astype(np.float32)
  targets = np.array([0, 1, 2, 1])
  return net, _flax_params(net), x, targets


def _nchw(x):
  return torch.from_numpy(np.ascontiguousarray(np.asarray(x).transpose(0, 3, 1, 2)))


def _nhwc(t):
  return t.detach().numpy().transpose(0, 2, 3, 1)


def _close(ours, theirs):
  scale = max(np.abs(theirs).max(), 1e-12)
  np.testing.assert_allclose(np.asarray(ours), theirs, atol=1e-5 * scale, rtol=1e-5)


def test_forward_matches(nets):
  net, params, x, _ = nets
  with torch.no_grad():
    theirs = net(_nchw(x)).numpy()
  _close(FlaxNet().apply(params, x), theirs)


@pytest.mark.parametrize("layer", ["relu2", "conv2"])
def test_gradcam_raw_equals_layergradcam(nets, layer):
  net, params, x, t = nets
  ours = jax.jit(gcj.gradcam(FlaxNet().apply, params, layer=layer))(x, jnp.asarray(t))
  lgc = captum_attr.LayerGradCam(net, getattr(net, layer))
  theirs = lgc.attribute(_nchw(x), target=torch.from_numpy(t),
                         relu_attributions=True).detach().numpy()[:, 0]
  assert theirs.max() > 0
  _close(ours.cam_raw, theirs)


def test_guided_backprop_equals_captum(nets):
  net, params, x, t = nets
  ours = jax.jit(gcj.guided_backprop(FlaxNet().apply, params))(x, jnp.asarray(t))
  theirs = _nhwc(captum_attr.GuidedBackprop(net).attribute(_nchw(x).requires_grad_(),
                                                           target=torch.from_numpy(t)))
  _close(ours.guided, theirs)


def test_guided_gradcam_equals_captum(nets):
  """Captum multiplies guided backprop by the un-normalised upsampled map; ours is
  the same product with the map min-max normalised (checked separately)."""
  net, params, x, t = nets
  ours = jax.jit(gcj.guided_gradcam(FlaxNet().apply, params, layer="relu2"))(
      x, jnp.asarray(t))
  ggc = captum_attr.GuidedGradCam(net, net.relu2)
  theirs = _nhwc(ggc.attribute(_nchw(x).requires_grad_(), target=torch.from_numpy(t),
                               interpolate_mode="bilinear"))
  unnormalised = ours.guided * gcj.upsample(ours.cam_raw, (8, 8))[..., None]
  _close(unnormalised, theirs)
  # ours normalises the map: Captum's own guided backprop times Captum's own upsampled
  # Grad-CAM, min-max normalised per image here, is the reference
  gb = _nhwc(captum_attr.GuidedBackprop(net).attribute(
      _nchw(x).requires_grad_(), target=torch.from_numpy(t)))
  layer_cam = captum_attr.LayerGradCam(net, net.relu2).attribute(
      _nchw(x), target=torch.from_numpy(t), relu_attributions=True)
  up = captum_attr.LayerAttribution.interpolate(layer_cam, (8, 8), "bilinear")
  up = up.detach().numpy()[:, 0]
  lo, hi = up.min((1, 2), keepdims=True), up.max((1, 2), keepdims=True)
  flat = hi - lo <= 1e-7  # an all-zero map stays zero (never NaN), as documented
  norm = np.where(flat, 0.0, (up - lo) / np.where(flat, 1.0, hi - lo))
  assert not flat.all()
  _close(ours.guided_gradcam, gb * norm[..., None])


def test_guided_backprop_of_resnet50_equals_captum():
  """End to end on a real architecture: strided convolutions (the phase-split rule),
  BatchNorm with non-trivial statistics, an overlapping 3x3/2 max pool (the fused
  rule), residual sums, a module-reused in-place ReLU on the torch side."""
  from gradcam_jax.zoo import imagenet
  from gradcam_jax.zoo.resnet import ResNet50
  from tests.torch_reference import torch_resnet50
  torch.manual_seed(1)
  net = torch_resnet50().eval()
  state = {k: v.detach().numpy() for k, v in net.state_dict().items()}
  variables = imagenet.from_torchvision("resnet50", state)
  x = np.random.default_rng(2).normal(size=(2, 64, 64, 3)).astype(np.float32)
  t = np.array([3, 700])
  ours = jax.jit(gcj.guided_backprop(ResNet50().apply, variables))(x, t).guided
  theirs = _nhwc(captum_attr.GuidedBackprop(net).attribute(
      _nchw(x).requires_grad_(), target=torch.from_numpy(t)))
  _close(ours, theirs)


@pytest.mark.parametrize("name", ["saliency", "input_x_gradient", "deconvnet"])
def test_pixel_methods_equal_captum(nets, name):
  net, params, x, t = nets
  ours = jax.jit(getattr(gcj, name)(FlaxNet().apply, params))(x, jnp.asarray(t))
  method = {"saliency": captum_attr.Saliency, "input_x_gradient": captum_attr.InputXGradient,
            "deconvnet": captum_attr.Deconvolution}[name](net)
  kwargs = {"abs": True} if name == "saliency" else {}
  theirs = _nhwc(method.attribute(_nchw(x).requires_grad_(), target=torch.from_numpy(t),
                                  **kwargs))
  assert np.abs(theirs).max() > 0
  _close(ours.attribution, theirs)


@pytest.mark.parametrize("method", ["gausslegendre", "riemann_trapezoid", "riemann_left"])
def test_integrated_gradients_equal_captum(nets, method):
  """Same steps, rule and baseline (a colour); the completeness gap is Captum's
  convergence delta."""
  net, params, x, t = nets
  colour = np.array([0.1, -0.2, 0.3], np.float32)
  ours = jax.jit(gcj.integrated_gradients(
      FlaxNet().apply, params, baseline=colour, steps=16, method=method))(x, jnp.asarray(t))
  baseline = torch.from_numpy(colour).reshape(1, 3, 1, 1).expand(4, 3, 8, 8).contiguous()
  attr, delta = captum_attr.IntegratedGradients(net).attribute(
      _nchw(x), baselines=baseline, target=torch.from_numpy(t), n_steps=16,
      method=method, return_convergence_delta=True)
  _close(ours.attribution, _nhwc(attr))
  np.testing.assert_allclose(np.asarray(ours.delta), delta.detach().numpy(),
                             atol=1e-4 * float(np.abs(_nhwc(attr)).sum(axis=(1, 2, 3)).max()))
