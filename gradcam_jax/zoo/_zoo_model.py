"""``ZooModel``: what the explainers and the command need from a model."""

from __future__ import annotations

from typing import Any, Callable, NamedTuple, Sequence

__all__ = ["MEDIA", "OUTPUTS", "ZooModel"]


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
    input_size: (H, W) the model was trained at; (L,) for signals, (D, H, W) for
      volumes, (T, H, W) for video.
    resize: how images of another size are fitted to ``input_size`` (``"squash"``,
      ``"crop"`` or ``"pad"``, see :func:`gradcam_jax.io.resize_to`): the convention
      the weights were trained with.
    about: one line on what the model is and what its input means, shown by the CLI.
    output: what the model's output is, so that the command shows the model's own
      probabilities: ``"logits"`` (scores; the probability is their softmax),
      ``"probabilities"`` (already a softmax, shown as they are) or ``"sigmoid"``
      (independent probabilities per class, multi-label or a one-unit binary head,
      shown as they are).
    media: what one input is, so that the command knows which files to read and
      how: ``"image"`` (uint8 RGB (H, W, 3) from image files), ``"signal"``
      (float32 (L, C) from ``.npy``), ``"volume"`` (float32 (D, H, W, C) from
      ``.npy`` or NIfTI) or ``"video"`` (uint8 RGB (T, H, W, 3) frames from a clip
      or a uint8 ``.npy``). ``preprocess`` takes a batch of those.
    channels: the channels of one input (3 for images and video).
  """

  name: str
  module: Any
  apply_fn: Callable
  variables: Any
  layer: str
  preprocess: Callable
  class_names: Sequence[str]
  input_size: tuple[int, ...]
  resize: str = "squash"
  about: str = ""
  output: str = "logits"
  media: str = "image"
  channels: int = 3


OUTPUTS = ("logits", "probabilities", "sigmoid")
MEDIA = {"signal": 1, "image": 2, "volume": 3, "video": 3}  # media: spatial rank
