"""``zoo.load(name)``: a model ready to explain, whatever its origin."""

from __future__ import annotations

from typing import Sequence

import numpy as np

from gradcam_jax._errors import ArgumentError
from gradcam_jax.zoo._zoo_model import ZooModel

__all__ = ["ZooModel", "load", "decode_predictions", "NAMES"]

NAMES = ("demo", "vgg16", "resnet50")


def load(name: str, weights=None, *, random_init: bool = False) -> ZooModel:
  """Load a zoo model.

  Args:
    name: ``"demo"`` (shipped, trained on digit scenes), ``"vgg16"`` or
      ``"resnet50"`` (torchvision architectures).
    weights: for vgg16/resnet50, a local file: a torchvision state dict as
      ``.safetensors`` or ``.pth`` (both read without torch; a pre-1.6 ``.pth``
      needs torch), or for vgg16 the Keras
      ``vgg16_weights_tf_dim_ordering_tf_kernels.h5``; or ``"imagenet"``: the
      published file (vgg16: Keras' file, 553 MB; resnet50: torchvision's
      IMAGENET1K_V1, 103 MB), downloaded once into ``$GRADCAM_JAX_HOME/weights``
      (default ``~/.cache/gradcam-jax``) and checked against its published hash.
      For ``"demo"``, an orbax checkpoint folder to use instead of the shipped one.
    random_init: vgg16/resnet50 with random weights (benchmarks); never implicit.

  Raises:
    ValueError: unknown name, or no weights for vgg16/resnet50 without random_init.
  """
  if name == "demo":
    from gradcam_jax.zoo import demo

    module = demo.DemoNet()
    return ZooModel(
      "demo",
      module,
      module.apply,
      demo.load_variables(weights),
      demo.DEFAULT_LAYER,
      demo.preprocess,
      demo.CLASS_NAMES,
      (64, 64),
      "squash",
      demo.ABOUT,
    )
  if name in ("vgg16", "resnet50"):
    from gradcam_jax.zoo import imagenet

    return imagenet.load(name, weights, random_init=random_init)
  raise ArgumentError(f"zoo.load: expected a name in {NAMES}; got {name!r}.")


def decode_predictions(logits, class_names: Sequence[str], top: int = 5):
  """Top-k (index, name, probability) per image, as Keras' ``decode_predictions``."""
  logits = np.asarray(logits, np.float64)
  probs = np.exp(logits - logits.max(-1, keepdims=True))
  probs /= probs.sum(-1, keepdims=True)
  order = np.argsort(-probs, axis=-1)[:, :top]
  return [
    [(int(i), class_names[i], float(p[i])) for i in row] for row, p in zip(order, probs)
  ]
