"""Flax linen: any function of ``(variables, x)`` that calls linen modules
(``model.apply``, a ``functools.partial`` of it, a ``TrainState.apply_fn``).

``flax.linen.intercept_methods`` sees every module call and passes its output
through the edit at the target paths; the model's class, instance and variables are
untouched. Layers are module paths (``"layer4/1"``, ``"block@1"``).
"""

from __future__ import annotations

import functools
from typing import Any, Callable

import flax.linen as nn
import jax

from gradcam_jax._adapters.base import (
  CallCounter,
  EditsAt,
  LayerEdits,
  BIAS_TYPES,
  has_bias,
  zero_input,
)
from gradcam_jax._layers import LayerInfo, parse_layers, per_iteration
from gradcam_jax._loops import LoopEdit, run as loops_run

__all__ = ["LinenModel"]


def _skip(method_name: str) -> bool:
  return method_name == "setup" or method_name.startswith("<")


def _loop_length(variables, module) -> int | None:
  """The number of iterations when `module` runs inside ``nn.scan`` over a stack of
  layers (its variables are slices of the stacked ones `variables` holds at its
  path), else None."""
  try:
    inner = module.variables
  except Exception:  # an unbound module
    return None
  for collection, tree in inner.items():
    outer: Any = variables.get(collection) if hasattr(variables, "get") else None
    for name in module.path:
      outer = outer.get(name) if hasattr(outer, "get") else None
    if outer is None:
      continue
    pairs = zip(jax.tree_util.tree_leaves(tree), jax.tree_util.tree_leaves(outer))
    for a, b in pairs:
      if len(b.shape) == len(a.shape) + 1 and tuple(b.shape[1:]) == tuple(a.shape):
        return int(b.shape[0])
  return None


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
    method), module, out, loop, zero)``, which returns what the caller of the method
    gets; `loop` is the number of iterations of the ``nn.scan`` the call runs in, or
    None; ``zero()`` runs the call again on zeros (:func:`zero_input`)."""

    def again(module, method):
      """The module run by itself (a copy without parent, on its own variables):
      a second call inside the running one would collide with its names."""

      def call(*args, **kwargs):
        alone = module.clone(parent=None)
        return alone.apply(module.variables, *args, method=method, **kwargs)

      return call

    def intercept(next_fun, args, kwargs, context):
      module, method = context.module, context.method_name
      if _skip(method) or not module.path:
        return next_fun(*args, **kwargs)
      out = next_fun(*args, **kwargs)
      loop = _loop_length(variables, module)
      zero = zero_input(again(module, method), args, kwargs)
      return on_output((tuple(module.path), method), module, out, loop, zero)

    with nn.intercept_methods(intercept):
      return self.apply_fn(variables, x)

  def list_layers(self, variables, x):
    infos: list[LayerInfo] = []
    loops: list = []
    count = CallCounter()

    def record(key, module, out, loop, zero):
      seen = loop is not None and any(
        l == loop and (i.path, i.method) == key for i, l in zip(infos, loops)
      )  # nn.scan traces its body twice
      if not seen:
        index = 0 if loop is not None else count(key)
        infos.append(
          LayerInfo.of_output(
            key[0], key[1], index, out, type(module).__name__, loop is not None
          )
        )
        loops.append(loop)
      return out

    out = jax.eval_shape(lambda v, x: self._run(v, x, record), variables, x)
    return per_iteration(infos, loops), out

  def bias_layers(self, variables, x):
    infos, _ = self.list_layers(variables, x)
    unbiased: set = set()

    def record(key, module, out, loop, zero):
      if not has_bias(module):
        unbiased.add(key)
      return out

    jax.eval_shape(lambda v, x: self._run(v, x, record), variables, x)
    return self, [
      i for i in infos if i.module_type in BIAS_TYPES and (i.path, i.method) not in unbiased
    ]

  def run_with_edits(self, variables, x, edits: LayerEdits):
    try:
      return self._run_with_edits(variables, x, edits, marking=False)
    except LoopEdit:
      run = lambda v, x: self._run_with_edits(v, x, edits, True)  # noqa: E731
      return loops_run(run, variables, x)

  def _run_with_edits(self, variables, x, edits: LayerEdits, marking: bool):
    at = EditsAt(edits, key=lambda ref: (ref.path, ref.method), marking=marking)
    out = self._run(
      variables,
      x,
      lambda key, _, out, loop, zero: at(key, out, in_loop=loop is not None, zero=zero),
    )
    at.check()
    return out
