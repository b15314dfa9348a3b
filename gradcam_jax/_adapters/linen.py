"""Flax linen: any function of ``(variables, x)`` that calls linen modules
(``model.apply``, a ``functools.partial`` of it, a ``TrainState.apply_fn``).

``flax.linen.intercept_methods`` sees every module call and passes its output
through the edit at the target paths; the model's class, instance and variables are
untouched. Layers are module paths (``"layer4/1"``, ``"block@1"``).
"""

from __future__ import annotations

import functools
from typing import Callable

import flax.linen as nn
import jax

from gradcam_jax._adapters.base import CallCounter, EditsAt, LayerEdits
from gradcam_jax._layers import LayerInfo, parse_layers

__all__ = ["LinenModel"]


def _skip(method_name: str) -> bool:
  return method_name == "setup" or method_name.startswith("<")


class LinenModel:
  """The adapter of a linen ``apply_fn(variables, x)``."""

  inference_mode = (
    "functools.partial(model.apply, train=False) (or deterministic=True, as the model "
    "names it); a key for stochastic layers: functools.partial(model.apply, "
    "rngs={'dropout': key})"
  )

  def __init__(self, apply_fn: Callable):
    self.apply_fn = apply_fn

  @staticmethod
  def claims(model) -> bool:
    return callable(model)  # tried last: any other function of (variables, x)

  @classmethod
  def adapt(cls, model, params):
    return (model if isinstance(model, LinenModel) else cls(model)), params

  def __call__(self, variables, x):
    return self.apply_fn(variables, x)

  def __repr__(self) -> str:
    fn = self.apply_fn
    while isinstance(fn, functools.partial):
      fn = fn.func
    owner = getattr(fn, "__self__", None)
    if owner is not None:
      return f"{type(owner).__name__}.{getattr(fn, '__name__', 'apply')}"
    return getattr(fn, "__qualname__", None) or repr(fn)

  def variables(self, params):
    """A variables dict stays (a dict-like with a ``"params"`` key, e.g.
    ``{"params": ..., "batch_stats": ...}``); a bare params tree (the ``TrainState``
    convention) becomes ``{"params": params}``."""
    if hasattr(params, "keys") and "params" in params.keys():
      return params
    return {"params": params}

  def parse_layer(self, layer):
    return self, parse_layers(layer)

  def _run(self, variables, x, on_output: Callable):
    """The model with each module output passed through ``on_output((path,
    method), module, out)``, which returns what the caller of the method gets."""

    def intercept(next_fun, args, kwargs, context):
      module, method = context.module, context.method_name
      if _skip(method) or not module.path:
        return next_fun(*args, **kwargs)
      return on_output((tuple(module.path), method), module, next_fun(*args, **kwargs))

    with nn.intercept_methods(intercept):
      return self.apply_fn(variables, x)

  def list_layers(self, variables, x):
    infos: list[LayerInfo] = []
    count = CallCounter()

    def record(key, module, out):
      infos.append(
        LayerInfo.of_output(key[0], key[1], count(key), out, type(module).__name__)
      )
      return out

    out = jax.eval_shape(lambda v, x: self._run(v, x, record), variables, x)
    return infos, out

  def run_with_edits(self, variables, x, edits: LayerEdits):
    at = EditsAt(edits, key=lambda ref: (ref.path, ref.method))
    out = self._run(variables, x, lambda key, module, out: at(key, out))
    at.check()
    return out
