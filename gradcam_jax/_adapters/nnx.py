"""Flax NNX models: ``nnx.split`` into a pure function of ``(state, x)``; layers are
tapped on a freshly merged copy, so the user's module is never touched.

Layers are addressed by attribute paths, e.g. ``("blocks", 3, "conv2")`` or the
string ``"blocks/3/conv2"``.
"""

from __future__ import annotations


import jax
from flax import nnx

from gradcam_jax._adapters.base import CallCounter, EditsAt, LayerEdits
from gradcam_jax._layers import LayerInfo, parse_layers

__all__ = ["NNXModel"]


class _Tap:
  """A plain-Python stand-in for a submodule on the merged copy: calls it and hands
  the output to ``hook(path, output)``, which returns the output to use."""

  def __init__(self, inner, path, hook):
    self.inner, self.path, self.hook = inner, path, hook

  def __call__(self, *args, **kwargs):
    return self.hook(self.path, self.inner(*args, **kwargs))


def _key(path) -> tuple[str, ...]:
  return tuple(str(p) for p in path)


def _install(model, paths, hook) -> None:
  """Replace the submodules at `paths` of `model` (a merged copy) by taps, deepest
  first so that the parents are still real modules when their children are set."""
  for path in sorted(paths, key=len, reverse=True):
    parent = model
    for p in path[:-1]:
      parent = parent[p] if isinstance(p, int) else getattr(parent, p)
    last = path[-1]
    child = parent[last] if isinstance(last, int) else getattr(parent, last)
    tap = _Tap(child, _key(path), hook)
    if isinstance(last, int):
      parent[last] = tap
    else:
      setattr(parent, last, tap)


def _callable_submodules(model):
  return [
    path
    for path, node in nnx.iter_graph(model)
    if path and isinstance(node, nnx.Module) and callable(node)
  ]


class NNXModel:
  """The adapter of an NNX graph definition: ``apply(state, x) =
  nnx.merge(graphdef, state)(x)``."""

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

  def __call__(self, state, x):
    return nnx.merge(self.graphdef, state)(x)

  def __repr__(self) -> str:
    kind = getattr(self.graphdef, "type", None)
    return f"nnx module {getattr(kind, '__name__', 'of a GraphDef')}"

  def variables(self, params):
    return params

  def parse_layer(self, layer):
    return self, parse_layers(layer)

  def list_layers(self, state, x):
    infos: list[LayerInfo] = []
    count = CallCounter()

    def traced(state, x):
      merged = nnx.merge(self.graphdef, state)
      types = {_key(p): type(n).__name__ for p, n in nnx.iter_graph(merged)}

      def record(path, out):
        infos.append(
          LayerInfo.of_output(path, "__call__", count(path), out, types.get(path, "?"))
        )
        return out

      _install(merged, _callable_submodules(merged), record)
      return merged(x)

    out = jax.eval_shape(traced, state, x)
    return infos, out

  def run_with_edits(self, state, x, edits: LayerEdits):
    merged = nnx.merge(self.graphdef, state)
    at = EditsAt(edits)
    by_key: dict = {_key(p): p for p in _callable_submodules(merged)}
    _install(merged, [by_key[key] for key in at.keys], at)
    out = merged(x)
    at.check()
    return out
