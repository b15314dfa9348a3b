"""The zoo's VGG16 and ResNet-50 against torchvision's own ``vgg16()`` and
``resnet50()`` at 224x224 (random weights): the same logits from the same state dict.

Runs where torchvision is installed (the peers environment of benchmarks/peers.py:
``pip install torch==2.14.1 torchvision==0.29.1``); skipped elsewhere, where
tests/test_zoo_imagenet.py checks the zoo against the PyTorch twins in
tests/torch_reference.py instead."""

import jax
import numpy as np
import pytest

from gradcam_jax import zoo

pytestmark = pytest.mark.slow  # the fast loop is pytest -m "not slow"

torch = pytest.importorskip("torch")
torchvision = pytest.importorskip("torchvision")


@pytest.mark.parametrize("name", ["vgg16", "resnet50"])
def test_zoo_equals_torchvision_at_224(name, tmp_path):
  from safetensors.torch import save_file
  torch.manual_seed(0)
  model = getattr(torchvision.models, name)(weights=None).eval()
  save_file({k: v.contiguous() for k, v in model.state_dict().items()},
            str(tmp_path / f"{name}.safetensors"))
  zm = zoo.load(name, tmp_path / f"{name}.safetensors")
  x = np.random.default_rng(0).normal(size=(2, 224, 224, 3)).astype(np.float32)
  ours = np.asarray(jax.jit(zm.apply_fn)(zm.variables, x))
  with torch.no_grad():
    theirs = model(torch.from_numpy(x.transpose(0, 3, 1, 2))).numpy()
  assert ours.shape == theirs.shape == (2, 1000)
  scale = np.abs(theirs).max()
  np.testing.assert_allclose(ours, theirs, rtol=1e-4, atol=1e-4 * scale)
  assert (ours.argmax(-1) == theirs.argmax(-1)).all()
