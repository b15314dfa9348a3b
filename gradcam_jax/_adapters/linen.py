"""Flax linen: any function of ``(variables, x)`` that calls linen modules
(``model.apply``, a ``functools.partial`` of it, a ``TrainState.apply_fn``).

``flax.linen.intercept_methods`` numbers every module call and applies the edits to
the outputs of the modules at the target paths; the model's class, instance and
variables are untouched. Layers are module paths (``"layer4/1"``, ``"block@1"``).
"""

from __future__ import annotations

from typing import Callable

import flax.linen as nn
import jax

from gradcam_jax._errors import ModelError
from gradcam_jax._layers import LayerInfo, parse_layers

__all__ = ["LinenModel", "claims", "adapt"]


def _skip(method_name: str) -> bool:
  return method_name == "setup" or method_name.startswith("<")


def _numbered(on_output: Callable) -> Callable:
  """A linen method interceptor that numbers the calls of each (module path,
  method) and passes each module output through ``on_output((path, method), index,
  module, out)``, which returns what the caller of the method gets."""
  calls: dict = {}

  def intercept(next_fun, args, kwargs, context):
    module, method = context.module, context.method_name
    if _skip(method) or not module.path:
      return next_fun(*args, **kwargs)
    key = (tuple(module.path), method)
    index = calls[key] = calls.get(key, -1) + 1
    return on_output(key, index, module, next_fun(*args, **kwargs))
  return intercept


class LinenModel:
  """The adapter of a linen ``apply_fn(variables, x)``."""

  def __init__(self, apply_fn: Callable):
    self.apply_fn = apply_fn

  def __call__(self, variables, x):
    return self.apply_fn(variables, x)

  def variables(self, params):
    """A variables dict stays (a dict-like with a ``"params"`` key, e.g.
    ``{"params": ..., "batch_stats": ...}``); a bare params tree (the ``TrainState``
    convention) becomes ``{"params": params}``."""
    if hasattr(params, "keys") and "params" in params.keys():
      return params
    return {"params": params}

  def parse_layer(self, layer):
    return self, parse_layers(layer)

  def list_layers(self, variables, x):
    infos: list[LayerInfo] = []

    def record(key, index, module, out):
      is_array = hasattr(out, "shape") and hasattr(out, "dtype")
      infos.append(LayerInfo(key[0], key[1], index,
                             tuple(out.shape) if is_array else None,
                             str(out.dtype) if is_array else None,
                             type(module).__name__))
      return out

    def traced(variables, x):
      with nn.intercept_methods(_numbered(record)):
        return self.apply_fn(variables, x)

    out = jax.eval_shape(traced, variables, x)
    return infos, out

  def run_many(self, variables, x, layers, edits):
    wanted = {(ref.path, ref.method, ref.call or 0): edit
              for ref, edit in zip(layers, edits)}
    edited: list = []

    def apply_edit(key, index, module, out):
      edit = wanted.get((*key, index))
      if edit is None:
        return out
      edited.append(key)
      return edit(out)

    with nn.intercept_methods(_numbered(apply_edit)):
      out = self.apply_fn(variables, x)
    if len(edited) != len(wanted):  # a model whose calls differ between traces
      raise ModelError(f"layers {[str(l) for l in layers]}: reached {len(edited)} of "
                       f"{len(wanted)} while running the model; expected each once.")
    return out


def claims(model) -> bool:
  return callable(model)


def adapt(model, params):
  return (model if isinstance(model, LinenModel) else LinenModel(model)), params
