"""``zoo.load(name)``: a model ready to explain, whatever its origin."""

from __future__ import annotations

from typing import Any, Callable, NamedTuple, Sequence

import numpy as np

from gradcam_jax._errors import ArgumentError

__all__ = ["ZooModel", "load", "decode_predictions", "NAMES"]

NAMES = ("demo", "vgg16", "resnet50")


class ZooModel(NamedTuple):
  """What an explainer needs from a model.

  Attributes:
    name: zoo name.
    module: the Flax linen module.
    apply_fn: ``apply_fn(variables, images) -> logits``.
    variables: Flax variables.
    layer: the default target layer path (post-ReLU last conv block).
    preprocess: uint8 RGB (B, H, W, 3) -> model input.
    class_names: one name per class.
    input_size: (H, W) the model was trained at.
    resize: how images of another size are fitted to ``input_size`` (``"squash"``,
      ``"crop"`` or ``"pad"``, see :func:`gradcam_jax.io.resize_to`): the convention
      the weights were trained with.
    about: one line on what the model is and what its input means, shown by the CLI.
  """
  name: str
  module: Any
  apply_fn: Callable
  variables: Any
  layer: str
  preprocess: Callable
  class_names: Sequence[str]
  input_size: tuple[int, int]
  resize: str = "squash"
  about: str = ""


def load(name: str, weights=None, *, random_init: bool = False) -> ZooModel:
  """Load a zoo model.

  Args:
    name: ``"demo"`` (shipped, trained on digit scenes), ``"vgg16"`` or
      ``"resnet50"`` (torchvision architectures).
    weights: for vgg16/resnet50, a local file: a torchvision state dict as
      ``.safetensors`` (read without torch) or ``.pth`` (needs torch), or for vgg16
      the Keras ``vgg16_weights_tf_dim_ordering_tf_kernels.h5``; or for vgg16
      ``"imagenet"``: that Keras file, downloaded once into
      ``$GRADCAM_JAX_HOME/weights`` (default ``~/.cache/gradcam-jax``), md5-checked.
      For ``"demo"``, an orbax checkpoint folder to use instead of the shipped one.
    random_init: vgg16/resnet50 with random weights (benchmarks); never implicit.

  Raises:
    ValueError: unknown name, or no weights for vgg16/resnet50 without random_init.
  """
  if name == "demo":
    from gradcam_jax.zoo import demo
    module = demo.DemoNet()
    return ZooModel("demo", module, module.apply, demo.load_variables(weights),
                    demo.DEFAULT_LAYER, demo.preprocess, demo.CLASS_NAMES, (64, 64),
                    "squash", demo.ABOUT)
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
  return [[(int(i), class_names[i], float(p[i])) for i in row]
          for row, p in zip(order, probs)]
