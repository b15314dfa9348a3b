"""Flax NNX models: ``nnx.split`` into a pure function of ``(state, x)``; layers are
tapped on a freshly merged copy, so the user's module is never touched.

Layers are addressed by attribute paths, e.g. ``("blocks", 3, "conv2")`` or the
string ``"blocks/3/conv2"``.
"""

from __future__ import annotations

from typing import Any, Callable

from flax import nnx

from gradcam_jax._layers import LayerInfo
from gradcam_jax._errors import ModelError

__all__ = ["NNXModel", "adapt"]


class NNXModel:
  """``apply(state, x)`` for an NNX graph definition: ``nnx.merge(graphdef, state)(x)``."""

  def __init__(self, graphdef):
    self.graphdef = graphdef

  def __call__(self, state, x):
    return nnx.merge(self.graphdef, state)(x)

  def merged(self, state):
    return nnx.merge(self.graphdef, state)


def adapt(apply_fn, params):
  """Turn what the user passed into (apply_fn, params): an ``nnx.Module`` (its state
  becomes the closed-over params unless `params` is given), a ``(graphdef, state)``
  pair, or a bare ``GraphDef`` (params-as-argument form); an Equinox module (its
  arrays become the params); anything else unchanged."""
  from gradcam_jax import _equinox
  if _equinox.is_equinox(apply_fn):
    return _equinox.EquinoxModel(apply_fn), apply_fn if params is None else params
  if isinstance(apply_fn, nnx.Module):
    graphdef, state = nnx.split(apply_fn)
    return NNXModel(graphdef), state if params is None else params
  if (isinstance(apply_fn, tuple) and len(apply_fn) == 2
      and isinstance(apply_fn[0], nnx.GraphDef)):
    return NNXModel(apply_fn[0]), apply_fn[1] if params is None else params
  if isinstance(apply_fn, nnx.GraphDef):
    return NNXModel(apply_fn), params
  return apply_fn, params


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
