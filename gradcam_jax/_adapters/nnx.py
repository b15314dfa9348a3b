"""Flax NNX models: ``nnx.split`` into a pure function of ``(state, x)``; layers are
tapped on a freshly merged copy, so the user's module is never touched.

Layers are addressed by attribute paths, e.g. ``("blocks", 3, "conv2")`` or the
string ``"blocks/3/conv2"``.
"""

from __future__ import annotations


import jax
from flax import nnx

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

__all__ = ["NNXModel"]


def _key(path) -> tuple[str, ...]:
  return tuple(str(p) for p in path)


def _variable_shapes(module) -> tuple:
  return tuple(
    v.get_value().shape for _, v in nnx.iter_graph(module) if isinstance(v, nnx.Variable)
  )


def _tap(node, path, hook) -> None:
  """Make `node` (a module of the merged copy, never the user's) call
  ``hook(path, output, loop, zero)`` with each output (``zero()``: the call on
  zeros). Its class becomes a subclass of its own made here, so it stays a real
  module that ``nnx.scan``/``nnx.vmap`` can split and merge; `loop` is the number of
  iterations when the call runs inside such a transform over a stack of layers (its
  variables have lost their stacking axis), else None."""
  cls = type(node)
  outer = _variable_shapes(node)

  def __call__(self, *args, **kwargs):
    out = cls.__call__(self, *args, **kwargs)
    loop = outer[0][0] if _variable_shapes(self) != outer else None
    return hook(
      path, out, loop, zero_input(lambda *a, **k: cls.__call__(self, *a, **k), args, kwargs)
    )

  node.__class__ = type(
    cls.__name__,
    (cls,),
    {"__call__": __call__, "__module__": cls.__module__, "__qualname__": cls.__qualname__},
  )


def _install(model, paths, hook) -> None:
  """Tap the submodules at `paths` of `model` (a merged copy)."""
  for path in paths:
    node = model
    for p in path:
      node = node[p] if isinstance(p, int) else getattr(node, p)
    _tap(node, _key(path), hook)


def _callable_submodules(model):
  return [
    path
    for path, node in nnx.iter_graph(model)
    if path and isinstance(node, nnx.Module) and callable(node)
  ]


class NNXModel:
  """The adapter of an NNX graph definition: ``apply(state, x) =
  nnx.merge(graphdef, state)(x)``."""

  inference_mode = (
    "model.eval() before building the explainer (Dropout off, BatchNorm on its "
    "running statistics); a __call__ that needs more than the images: an nnx.Module "
    "around it whose __call__(x) passes them"
  )

  def __init__(self, graphdef):
    self.graphdef = graphdef

  @staticmethod
  def claims(model) -> bool:
    return isinstance(model, (nnx.Module, nnx.GraphDef, NNXModel)) or (
      isinstance(model, tuple) and len(model) == 2 and isinstance(model[0], nnx.GraphDef)
    )

  @classmethod
  def adapt(cls, model, params):
    """An ``nnx.Module`` (its state becomes the bound params unless `params` is
    given), a ``(graphdef, state)`` pair, or a bare ``GraphDef`` (params-as-argument
    form)."""
    if isinstance(model, NNXModel):
      return model, params
    if isinstance(model, nnx.Module):
      graphdef, state = nnx.split(model)
      return cls(graphdef), state if params is None else params
    if isinstance(model, tuple):
      return cls(model[0]), model[1] if params is None else params
    return cls(model), params

  def merged(self, state):
    """A new module from the graph definition and `state`, made of new Variables:
    NNX refuses, inside ``nnx.scan`` under a JAX transform (``jax.vjp``), Variables
    made outside that transform, as those of a state from ``nnx.split`` are."""
    return nnx.merge(self.graphdef, jax.tree_util.tree_map(lambda v: v, state))

  def __call__(self, state, x):
    return self.merged(state)(x)

  def __repr__(self) -> str:
    nodes = getattr(self.graphdef, "nodes", None) or [None]
    kind = getattr(nodes[0], "type", None)
    return f"nnx module {getattr(kind, '__name__', 'of a GraphDef')}"

  def variables(self, params):
    return params

  def parse_layer(self, layer):
    return self, parse_layers(layer)

  def list_layers(self, state, x):
    infos: list[LayerInfo] = []
    loops: list = []  # the iterations of each call's loop, or None
    count = CallCounter()

    def traced(state, x):
      merged = self.merged(state)
      types = {_key(p): type(n).__name__ for p, n in nnx.iter_graph(merged)}

      def record(path, out, loop, zero):
        index = 0 if loop is not None else count(path)
        infos.append(
          LayerInfo.of_output(
            path, "__call__", index, out, types.get(path, "?"), loop is not None
          )
        )
        loops.append(loop)
        return out

      _install(merged, _callable_submodules(merged), record)
      return merged(x)

    out = jax.eval_shape(traced, state, x)
    return per_iteration(infos, loops), out

  def bias_layers(self, state, x):
    infos, _ = self.list_layers(state, x)
    graph = nnx.iter_graph(self.merged(state))
    unbiased = {_key(p) for p, node in graph if not has_bias(node)}
    return self, [
      i for i in infos if i.module_type in BIAS_TYPES and i.path not in unbiased
    ]

  def run_with_edits(self, state, x, edits: LayerEdits):
    try:
      return self._run_with_edits(state, x, edits, marking=False)
    except LoopEdit:
      return loops_run(lambda s, x: self._run_with_edits(s, x, edits, True), state, x)

  def _run_with_edits(self, state, x, edits: LayerEdits, marking: bool):
    merged = self.merged(state)
    at = EditsAt(edits, marking=marking)
    by_key: dict = {_key(p): p for p in _callable_submodules(merged)}
    _install(
      merged,
      [by_key[key] for key in at.keys],
      lambda path, out, loop, zero: at(path, out, in_loop=loop is not None, zero=zero),
    )
    out = merged(x)
    at.check()
    return out
