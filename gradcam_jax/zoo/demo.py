"""The shipped demo model: a small VGG-like CNN for 64x64 digit scenes.

Its head is not GAP + linear (a flatten, a dense layer with a ReLU, then the
classifier, as in VGG16), so Grad-CAM differs from CAM and guided backprop differs
from the plain gradient in the head too. Every ReLU and pool is a module, so both
pre-activation (``block4_conv2``) and post-activation (``block4_relu2``, 8x8, the
default Grad-CAM layer) maps have paths. Trained by
``python -m gradcam_jax.zoo.training.train_demo``; weights ship inside the package as an
orbax checkpoint.
"""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from gradcam_jax._errors import WeightsError
from gradcam_jax.zoo._modules import MaxPool, ReLU

__all__ = [
  "DemoNet",
  "DEFAULT_LAYER",
  "CLASS_NAMES",
  "preprocess",
  "asset_dir",
  "load_variables",
  "save_variables",
  "load_samples",
]

DEFAULT_LAYER = "block4_relu2"
ABOUT = (
  "the shipped demo model: a digit classifier (classes 0-9) trained on 64x64 "
  "scenes of handwritten digits; other pictures get digit predictions; "
  "preprocessing: RGB / 255"
)
CLASS_NAMES = tuple(str(d) for d in range(10))
WIDTHS = (16, 32, 64, 96)
_HE = nn.initializers.he_normal()  # keeps the signal's scale through eight ReLU layers


class DemoNet(nn.Module):
  """Four blocks of two (3x3 conv, BatchNorm, ReLU) and a 2x2 max pool (64 -> 4 px);
  flatten; dense 128 + ReLU; dense 10. ``train=False`` (the default) uses the
  BatchNorm running statistics, as explanations need."""

  num_classes: int = 10

  @nn.compact
  def __call__(self, x, train: bool = False):
    for b, width in enumerate(WIDTHS, start=1):
      for i in (1, 2):
        x = nn.Conv(
          width,
          (3, 3),
          padding=1,
          use_bias=False,
          kernel_init=_HE,
          name=f"block{b}_conv{i}",
        )(x)
        x = nn.BatchNorm(
          use_running_average=not train, momentum=0.9, name=f"block{b}_bn{i}"
        )(x)
        x = ReLU(name=f"block{b}_relu{i}")(x)
      x = MaxPool(2, name=f"block{b}_pool")(x)
    x = x.reshape(x.shape[0], -1)
    x = ReLU(name="fc1_relu")(nn.Dense(128, kernel_init=_HE, name="fc1")(x))
    return nn.Dense(self.num_classes, name="fc2")(x)


def preprocess(images) -> jax.Array:
  """uint8 RGB (B, 64, 64, 3) -> float32 in [0, 1]."""
  return jnp.asarray(images, jnp.float32) / 255.0


def asset_dir() -> Path:
  """Folder of the shipped checkpoint, metadata and sample scenes."""
  return Path(str(resources.files("gradcam_jax") / "assets" / "demo"))


def abstract_variables():
  model = DemoNet()
  return jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, 64, 64, 3)))


def save_variables(variables, directory: Path) -> None:
  """Save with orbax-checkpoint (overwrites)."""
  import orbax.checkpoint as ocp

  directory = Path(directory).absolute()
  checkpointer = ocp.StandardCheckpointer()
  checkpointer.save(directory, variables, force=True)
  checkpointer.wait_until_finished()


def load_variables(directory: Path | None = None):
  """Restore the demo model's variables with orbax-checkpoint."""
  import orbax.checkpoint as ocp

  directory = Path(directory or asset_dir() / "checkpoint").absolute()
  if not directory.exists():
    raise WeightsError(
      f"demo checkpoint: expected a folder at {directory}; it is missing. "
      "Reinstall gradcam-jax, or retrain with `python -m gradcam_jax.zoo.training.train_demo`."
    )
  # restore onto this process's first device: the saved sharding names the
  # trainer's device, which other processes of a jax.distributed job do not have
  device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
  target = jax.tree_util.tree_map(
    lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=device), abstract_variables()
  )
  return ocp.StandardCheckpointer().restore(directory, target)


def load_samples():
  """The shipped sample scenes: (images uint8 (N, 64, 64, 3), records from JSON)."""
  import cv2

  folder = asset_dir() / "samples"
  records = json.loads((folder / "samples.json").read_text())
  images = np.stack([cv2.imread(str(folder / r["file"]))[..., ::-1] for r in records])
  return images, records
