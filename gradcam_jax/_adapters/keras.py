"""Keras 3 models on the JAX backend: Functional and Sequential models (nested ones
too) with layers named as Keras names them; subclassed models run whole.

The model is run as Keras runs it, node by node through its graph, inside a
``keras.StatelessScope`` that maps every variable to the value the explainer was
given: nothing is assigned, no layer is swapped or changed, and an edit at a layer is
applied to that node's output as the graph hands it on (so layers inside skip
connections, such as ResNet50's ``conv5_block3_2_relu``, work). Layers that take a
``training`` argument get ``training=False`` (BatchNorm uses its moving statistics,
Dropout is off).

Layers are Keras layer names; a layer of a nested model is ``"outer/inner"``
(``"resnet50/conv5_block3_out"``), a layer called twice (a shared layer) is
``"name@i"``. The params are ``(trainable_values, non_trainable_values)``, two lists
in the order of ``model.trainable_variables`` and ``model.non_trainable_variables``.

A model whose output is a softmax (``keras.applications`` ends in one by default) is
explained on its scores before the softmax: its last layer is run without its
activation on the same weights (a clone made from its config, never the model's own
layer), as Grad-CAM's paper explains the class score. ``target=gcj.class_probability``
explains the probability (the softmax of those scores, the model's own output).
"""

from __future__ import annotations

import sys
from typing import Callable

from gradcam_jax._adapters.base import (
  CallCounter,
  EditsAt,
  LayerEdits,
  BIAS_TYPES,
  has_bias,
  zero_input,
)
from gradcam_jax._errors import ModelError, UnsupportedError, WeightsError
from gradcam_jax._layers import LayerInfo, parse_layers

__all__ = ["KerasModel", "keras_params"]


def _keras():
  import keras

  return keras


def _is_graph(model) -> bool:
  """A Functional model, or a Sequential one (built: it runs through its own
  Functional graph)."""
  keras = _keras()
  return (isinstance(model, keras.Sequential) and model._functional is not None) or (
    isinstance(model, keras.Model)
    and hasattr(model, "_nodes_by_depth")
    and not isinstance(model, keras.Sequential)
  )


def _graph(model):
  return model._functional if isinstance(model, _keras().Sequential) else model


def _is_softmax(op) -> bool:
  keras = _keras()
  if isinstance(op, keras.layers.Softmax):
    return True
  return getattr(getattr(op, "activation", None), "__name__", None) == "softmax"


def _final_op(model):
  """The layer that computes the model's (single) output, and its path."""
  graph = _graph(model)
  if len(graph.outputs) != 1:
    return None, ()
  op = graph.outputs[0]._keras_history[0]
  if _is_graph(op):
    inner, path = _final_op(op)
    return inner, (op.name, *path)
  return op, (op.name,)


def _logit_layer(model):
  """``(path, run)`` for a model ending in a softmax: `run(args, kwargs)` computes
  the final layer's scores before its softmax; None for other models."""
  if not _is_graph(model):
    return None
  op, path = _final_op(model)
  if op is None or not _is_softmax(op):
    return None
  keras = _keras()
  if isinstance(op, (keras.layers.Softmax, keras.layers.Activation)):
    return path, None, lambda args, kwargs: args[0]
  config = dict(op.get_config(), activation=None)
  for key in config:  # its weights come from the model's: draw nothing from Keras'
    if key.endswith("_initializer"):  # global seed generator to initialise them
      config[key] = "zeros"
  clone = type(op).from_config(config)
  clone.build(op.input.shape)
  if len(clone.weights) != len(op.weights):
    raise UnsupportedError(
      f"layer {op.name!r} ends the model in a softmax, and a copy of it without "
      f"its activation does not have its weights ({len(clone.weights)} vs "
      f"{len(op.weights)}). Build the model with classifier_activation=None (or "
      "activation=None on that layer) to explain its scores."
    )
  return path, (op, clone), lambda args, kwargs: clone(*args, **kwargs)


class KerasModel:
  """The adapter of a built Keras 3 model: ``apply((trainable, non_trainable), x)``
  runs it in inference mode without touching its variables."""

  inference_mode = (
    "the adapter already calls Keras layers with training=False; a model whose call "
    "needs more than the images: a Functional model that takes the images alone"
  )

  def __init__(self, model):
    self.model = model
    self.graph = _is_graph(model)
    self.logits = _logit_layer(model)

  @staticmethod
  def claims(model) -> bool:
    keras = sys.modules.get("keras")
    return keras is not None and isinstance(model, keras.Model)

  @classmethod
  def adapt(cls, model, params):
    """A built Keras model on the JAX backend; its current variable values become
    the bound params unless `params` is given."""
    keras = _keras()
    if keras.backend.backend() != "jax":
      raise UnsupportedError(
        f"Keras model {model.name!r}: Keras runs on the {keras.backend.backend()!r} "
        "backend; gradcam-jax explains Keras models on the JAX backend. Set "
        "KERAS_BACKEND=jax in the environment before keras is first imported "
        "(e.g. `KERAS_BACKEND=jax python ...`, or os.environ['KERAS_BACKEND'] = "
        "'jax' at the top of the script or notebook)."
      )
    if not model.built:
      raise ModelError(
        f"Keras model {model.name!r} is not built (it has no variables yet): give "
        "it an Input shape, or call it once on a batch of images, before "
        "explaining it."
      )
    return cls(model), keras_params(model) if params is None else params

  def __call__(self, variables, x):
    return self._run(variables, x, lambda path, op, out, zero: out)

  def __repr__(self) -> str:
    return f"Keras model {self.model.name!r}"

  def variables(self, params):
    return _check_params(self.model, params)

  def parse_layer(self, layer):
    if layer is not False and not self.graph:
      raise UnsupportedError(
        f"layer={layer!r}: {type(self.model).__name__} is a subclassed Keras model "
        "(its call() is Python, not a graph of layers), so no layer inside it can "
        "be reached without modifying the model (guided backprop, which needs no "
        "layer, works). Wrap it as gcj.Split(features, head): two functions of "
        "(params, x) split at the layer; or build it with the Functional API."
      )
    return self, parse_layers(layer)

  def _mapping(self, variables):
    trainable, non_trainable = variables
    mapping = list(zip(self.model.trainable_variables, trainable)) + list(
      zip(self.model.non_trainable_variables, non_trainable)
    )
    if self.logits is not None and self.logits[1] is not None:
      op, clone = self.logits[1]
      values = {id(v): value for v, value in mapping}
      mapping += [(c, values[id(v)]) for c, v in zip(clone.weights, op.weights)]
    return mapping

  def _run(self, variables, x, hook):
    import jax

    keras = _keras()
    # Keras' ops rely on NumPy's rank promotion ((B, K) + (K,) in Dense): run them
    # under it even where the user's JAX config raises on it
    with (
      jax.numpy_rank_promotion("allow"),
      keras.StatelessScope(state_mapping=self._mapping(variables)),
    ):
      if not self.graph:  # subclassed: run whole (hook never called)
        kwargs = (
          {"training": False}
          if "training" in getattr(self.model, "_call_context_args", ())
          else {}
        )
        return self.model(x, **kwargs)
      return _run_graph(self.model, x, hook, (), self.logits)

  def list_layers(self, variables, x):
    """Every layer's output (nested models' layers as ``outer/inner``); none for a
    subclassed model, whose layers are not reachable."""
    import jax

    infos: list[LayerInfo] = []
    count = CallCounter()

    def record(path, op, out, zero):
      infos.append(
        LayerInfo.of_output(path, "__call__", count(path), out, type(op).__name__)
      )
      return out

    out = jax.eval_shape(lambda v, x: self._run(v, x, record), variables, x)
    return infos, out

  def bias_layers(self, variables, x):
    import jax

    infos, _ = self.list_layers(variables, x)
    unbiased: set = set()

    def record(path, op, out, zero):
      if not has_bias(op):
        unbiased.add(tuple(path))
      return out

    jax.eval_shape(lambda v, x: self._run(v, x, record), variables, x)
    return self, [
      i for i in infos if i.module_type in BIAS_TYPES and i.path not in unbiased
    ]

  def run_with_edits(self, variables, x, edits: LayerEdits):
    at = EditsAt(edits)
    out = self._run(variables, x, lambda path, op, out, zero: at(path, out, zero=zero))
    at.check()
    return out


def _run_graph(model, x, hook: Callable, prefix: tuple, logits):
  """The graph of `model` run node by node, each layer's output passed through
  ``hook(path, layer, output, zero)`` (``zero()``: the layer on zeros, None for a
  nested model); a nested model is run the same way, inside."""
  from keras.src.models.functional import unpack_singleton

  graph = _graph(model)

  def operation_fn(op):
    def call(*args, **kwargs):
      path = (*prefix, op.name)
      zero = None
      if logits is not None and path == logits[0]:
        out = logits[2](args, kwargs)
      elif _is_graph(op):  # its inputs are the positional arguments; the keywords
        # Keras adds (training, mask) do not apply to a graph run in inference mode
        inner = args[0] if len(args) == 1 else args
        out = _run_graph(op, inner, hook, path, logits)
      else:
        if "training" in getattr(op, "_call_context_args", ()):
          kwargs["training"] = False
        out = op(*args, **kwargs)
        zero = zero_input(op, args, kwargs)
      return hook(path, op, out, zero)

    return call

  inputs = graph._standardize_inputs(x)
  return unpack_singleton(graph._run_through_graph(inputs, operation_fn=operation_fn))


def keras_params(model):
  """The current values of `model`'s variables, as the Keras adapter takes them:
  ``(trainable_values, non_trainable_values)``."""
  return (
    [v.value for v in model.trainable_variables],
    [v.value for v in model.non_trainable_variables],
  )


def _check_params(model, params):
  expected = (len(model.trainable_variables), len(model.non_trainable_variables))
  pair = (
    isinstance(params, (tuple, list))
    and len(params) == 2
    and all(isinstance(p, (tuple, list)) for p in params)
  )
  if pair and (len(params[0]), len(params[1])) == expected:
    return params
  got = (
    f"a pair of lists of lengths ({len(params[0])}, {len(params[1])})"
    if pair
    else type(params).__name__
  )
  raise WeightsError(
    f"params of Keras model {model.name!r}: expected (trainable_values, "
    f"non_trainable_values), two lists of {expected[0]} and {expected[1]} arrays "
    f"in the order of model.trainable_variables and model.non_trainable_variables "
    f"(gcj.keras_params(model) gives them); got {got}."
  )
