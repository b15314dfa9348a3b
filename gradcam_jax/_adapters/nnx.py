"""Flax NNX models: ``nnx.split`` into a pure function of ``(state, x)``; layers are
tapped on a freshly merged copy, so the user's module is never touched.

Layers are addressed by attribute paths, e.g. ``("blocks", 3, "conv2")`` or the
string ``"blocks/3/conv2"``.
"""

from __future__ import annotations

from typing import Any, Callable

from flax import nnx

from gradcam_jax._errors import ModelError
from gradcam_jax._layers import LayerInfo, parse_layers

__all__ = ["NNXModel", "claims", "adapt"]


class NNXModel:
  """The adapter of an NNX graph definition: ``apply(state, x) =
  nnx.merge(graphdef, state)(x)``."""

  def __init__(self, graphdef):
    self.graphdef = graphdef

  def __call__(self, state, x):
    return nnx.merge(self.graphdef, state)(x)

  def merged(self, state):
    return nnx.merge(self.graphdef, state)

  def variables(self, params):
    return params

  def parse_layer(self, layer):
    return self, parse_layers(layer)

  def list_layers(self, state, x):
    return list_layers(self, state, x)

  def run_many(self, state, x, layers, edits):
    return run_many(self, state, x, layers, edits)


def claims(model) -> bool:
  return (isinstance(model, (nnx.Module, nnx.GraphDef, NNXModel))
          or (isinstance(model, tuple) and len(model) == 2
              and isinstance(model[0], nnx.GraphDef)))


def adapt(model, params):
  """An ``nnx.Module`` (its state becomes the bound params unless `params` is
  given), a ``(graphdef, state)`` pair, or a bare ``GraphDef`` (params-as-argument
  form)."""
  if isinstance(model, NNXModel):
    return model, params
  if isinstance(model, nnx.Module):
    graphdef, state = nnx.split(model)
    return NNXModel(graphdef), state if params is None else params
  if isinstance(model, tuple):
    return NNXModel(model[0]), model[1] if params is None else params
  return NNXModel(model), params


class _Tap:
  """A plain-Python stand-in for a submodule on the merged copy: calls it and hands
  the output to `hook(path, call_index, output)`, which returns the output to use."""

  def __init__(self, inner, path, hook, calls):
    self.inner, self.path, self.hook, self.calls = inner, path, hook, calls

  def __call__(self, *args, **kwargs):
    index = self.calls[self.path] = self.calls.get(self.path, -1) + 1
    return self.hook(self.path, index, self.inner(*args, **kwargs))


def _key(path) -> tuple[str, ...]:
  return tuple(str(p) for p in path)


def _install(model, paths, hook) -> None:
  """Replace the submodules at `paths` of `model` (a merged copy) by taps, deepest
  first so that the parents are still real modules when their children are set."""
  calls: dict = {}
  for path in sorted(paths, key=len, reverse=True):
    parent = model
    for p in path[:-1]:
      parent = parent[p] if isinstance(p, int) else getattr(parent, p)
    last = path[-1]
    child = parent[last] if isinstance(last, int) else getattr(parent, last)
    tap = _Tap(child, _key(path), hook, calls)
    if isinstance(last, int):
      parent[last] = tap
    else:
      setattr(parent, last, tap)


def _callable_submodules(model):
  return [path for path, node in nnx.iter_graph(model)
          if path and isinstance(node, nnx.Module) and callable(node)]


def list_layers(model: NNXModel, state, x) -> tuple[list[LayerInfo], Any]:
  import jax
  infos: list[LayerInfo] = []

  def traced(state, x):
    merged = model.merged(state)
    types = {_key(p): type(n).__name__ for p, n in nnx.iter_graph(merged)}

    def record(path, index, out):
      ok = hasattr(out, "shape") and hasattr(out, "dtype")
      infos.append(LayerInfo(path, "__call__", index, tuple(out.shape) if ok else None,
                             str(out.dtype) if ok else None, types.get(path, "?")))
      return out

    _install(merged, _callable_submodules(merged), record)
    return merged(x)

  out = jax.eval_shape(traced, state, x)
  return infos, out


def run_many(model: NNXModel, state, x, layers, edits: list[Callable]):
  merged = model.merged(state)
  wanted = {(ref.path, ref.call or 0): edit for ref, edit in zip(layers, edits)}
  by_key = {_key(p): p for p in _callable_submodules(merged)}
  edited = []

  def hook(path, index, out):
    edit = wanted.get((path, index))
    if edit is None:
      return out
    edited.append(path)
    return edit(out)

  _install(merged, [by_key[ref.path] for ref in layers], hook)
  out = merged(x)
  if len(edited) != len(wanted):
    raise ModelError(f"layers {[str(l) for l in layers]}: reached {len(edited)} of "
                       f"{len(wanted)} while running the model; expected each once.")
  return out
