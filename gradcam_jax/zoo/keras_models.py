"""Keras 3 models as zoo models, for the command line: a saved ``.keras`` file, or a
``keras.applications`` model by name with that application's own preprocessing.

    gradcam-jax explain photos/ --model keras.applications.VGG16
    gradcam-jax explain photos/ --model keras:my_model.keras --layer block5_conv3

Keras must run on JAX: set ``KERAS_BACKEND=jax`` before keras is first imported (the
command sets it for its own process when it is unset).
"""

from __future__ import annotations

import importlib
from pathlib import Path

import numpy as np

from gradcam_jax._errors import ArgumentError, ModelError
from gradcam_jax.zoo._zoo_model import ZooModel

__all__ = ["APPLICATION_LAYERS", "load_application", "load_saved"]

# The usual Grad-CAM layer of the applications the walkthrough and its readers use;
# other applications get the automatic choice (the last spatial activation).
APPLICATION_LAYERS = {
  "VGG16": "block5_conv3",
  "VGG19": "block5_conv4",
  "ResNet50": "conv5_block3_out",
  "ResNet101": "conv5_block3_out",
  "ResNet152": "conv5_block3_out",
  "Xception": "block14_sepconv2_act",
  "InceptionV3": "mixed10",
  "MobileNetV2": "out_relu",
  "DenseNet121": "relu",
  "EfficientNetB0": "top_activation",
}


def _class_names(model) -> tuple[str, ...]:
  classes = model.output_shape[-1]
  if classes == 1000:
    from gradcam_jax.zoo.imagenet import class_names

    return class_names()  # the spelling of Keras' decode_predictions
  return tuple(f"class_{i}" for i in range(classes))


def _input_size(model, default=(224, 224)) -> tuple[int, int]:
  shape = model.input_shape
  h, w = shape[1:3]
  return (h, w) if h and w else default


def _output_kind(model) -> str:
  """What the model's output is (see ``ZooModel.output``). A softmax head is
  explained on its scores (the Keras adapter runs the last layer without its
  softmax), so its outputs are logits here; a sigmoid head's are probabilities."""
  from gradcam_jax._adapters.keras import _final_op, _is_graph

  if not _is_graph(model):
    return "logits"  # a subclassed model runs whole: nothing says what it ends in
  op, _ = _final_op(model)
  activation = getattr(getattr(op, "activation", None), "__name__", None)
  return "sigmoid" if activation == "sigmoid" else "logits"


def _output_names(model) -> list[str]:
  return [t._keras_history[0].name for t in model.outputs]


def _one_output(model, path, output: str | None):
  """The model itself, or for a model of several outputs the one named `output`
  (a Functional model over the same layers: nothing is copied or changed)."""
  import keras

  names = _output_names(model) if getattr(model, "outputs", None) else []
  if output is None:
    if len(names) > 1:
      raise ArgumentError(
        f"keras:{path}: the model has {len(names)} outputs ({', '.join(names)}); "
        "gradcam-jax explains one: choose it with --output NAME."
      )
    return model
  if output not in names:
    raise ArgumentError(
      f"keras:{path}: --output {output}: expected one of the model's outputs: "
      f"{', '.join(names) or 'none (a subclassed model has no named outputs)'}."
    )
  if len(names) == 1:
    return model
  return keras.Model(model.inputs, model.outputs[names.index(output)], name=model.name)


def _zoo_model(name, model, layer, preprocess, about) -> ZooModel:
  from gradcam_jax._adapters.keras import keras_params

  return ZooModel(
    name,
    model,
    model,
    keras_params(model),
    layer,
    preprocess,
    _class_names(model),
    _input_size(model),
    "squash",
    about,
    _output_kind(model),
  )


def load_application(name: str, weights="imagenet", *, seed: int = 0) -> ZooModel:
  """``keras.applications.<name>(weights=weights)``, with the application's
  ``preprocess_input`` (on RGB 0..255 images) and ImageNet class names.

  `weights`: ``"imagenet"`` (Keras downloads and caches its file), a weights file,
  or None (random weights, drawn from `seed` with ``keras.utils.set_random_seed``:
  every process that asks gets the same weights)."""
  import keras

  make = getattr(keras.applications, name, None)
  if make is None or not callable(make) or not name[:1].isupper():
    known = sorted(n for n in dir(keras.applications) if n[:1].isupper())
    raise ArgumentError(
      f"keras.applications.{name}: no such application; expected one of {', '.join(known)}."
    )
  if weights is None:
    keras.utils.set_random_seed(seed)
  try:
    model = make(weights=weights)
  except Exception as err:
    raise ModelError(
      f"keras.applications.{name}(weights={weights!r}) failed: "
      f"{type(err).__name__}: {err}. Offline, download the weights "
      "file beforehand and pass it with --weights FILE."
    ) from err
  module = importlib.import_module(make.__module__)
  keras_preprocess = module.preprocess_input

  def preprocess(images):
    return np.asarray(keras_preprocess(np.asarray(images, np.float32)), np.float32)

  if isinstance(weights, str) and weights == "imagenet":
    origin = "ImageNet weights"
  elif weights is None:
    origin = f"random weights from seed {seed} (timing only: the classes mean nothing)"
  else:
    origin = f"weights {Path(weights).name}"
  about = (
    f"keras.applications.{name} ({origin}); preprocessing: "
    f"{module.__name__.rsplit('.', 1)[-1]}.preprocess_input; resize: squash to "
    f"{_input_size(model)}"
  )
  return _zoo_model(
    f"keras.applications.{name}", model, APPLICATION_LAYERS.get(name), preprocess, about
  )


def load_saved(path, output: str | None = None) -> ZooModel:
  """A model saved with ``model.save("FILE.keras")``. It receives float32 RGB images
  in 0..255: put its preprocessing inside it (e.g. a ``Rescaling`` layer).

  `output`: for a model of several outputs, the name of the one to explain (the
  name of the layer that computes it)."""
  import keras

  path = Path(path)
  if not path.is_file():
    raise ArgumentError(
      f"keras:{path}: no such file (expected a model saved with model.save('FILE.keras'))."
    )
  try:
    model = keras.saving.load_model(str(path))
  except Exception as err:
    raise ModelError(
      f"keras:{path}: could not load it as a Keras model: {type(err).__name__}: {err}"
    ) from err
  model = _one_output(model, path, output)

  def preprocess(images):
    return np.asarray(images, np.float32)

  about = (
    f"Keras model {path.name} ({model.name}"
    + (f", output {output}" if output else "")
    + f"); input: float32 RGB 0..255, squashed to {_input_size(model)}"
  )
  return _zoo_model(f"keras:{path.name}", model, None, preprocess, about)
