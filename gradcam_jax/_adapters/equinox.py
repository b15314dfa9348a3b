"""Equinox models: an ``eqx.Module`` that maps one example to its output (the
Equinox convention), with target layers chosen by selector functions in the spirit
of ``eqx.tree_at``: ``layer=lambda m: m.layers[3]``.

Each trace builds a new model with ``eqx.tree_at`` that wraps the selected submodule
in a tap, and runs it under ``jax.vmap`` over the batch; the user's model is never
modified. Edits are applied lane by lane (:meth:`Edit.lane`).
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp

from gradcam_jax._errors import LayerNotFoundError, LayerSpecError
from gradcam_jax._layers import LayerInfo, LayerRef

__all__ = ["EquinoxModel", "claims", "adapt"]


def claims(model) -> bool:
  if isinstance(model, EquinoxModel):
    return True
  try:
    import equinox as eqx
  except ImportError:
    return False
  return isinstance(model, eqx.Module)


def adapt(model, params):
  """An ``eqx.Module``: its arrays become the bound params unless `params` is given."""
  if isinstance(model, EquinoxModel):
    return model, params
  return EquinoxModel(model), model if params is None else params


class EquinoxModel:
  """``apply(arrays, x)``: the model's arrays recombined with its static part,
  vmapped over the batch. `selectors` name the layers that can be tapped."""

  def __init__(self, model, selectors: tuple = (), batched: bool = False):
    import equinox as eqx
    self.static = eqx.filter(model, eqx.is_array, inverse=True)
    self.selectors = tuple(selectors)
    self.batched = batched

  def arrays(self, model_or_arrays):
    import equinox as eqx
    return eqx.filter(model_or_arrays, eqx.is_array)

  def model(self, arrays):
    import equinox as eqx
    return eqx.combine(arrays, self.static)

  def __call__(self, arrays, x):
    model = self.model(arrays)
    return model(x) if self.batched else jax.vmap(model)(x)

  def variables(self, params):
    return self.arrays(params)

  def parse_layer(self, layer):
    return parse_selectors(self, layer)

  def list_layers(self, arrays, x):
    return list_layers(self, arrays, x)

  def run_many(self, arrays, x, layers, edits):
    return run_many(self, arrays, x, layers, edits)


def parse_selectors(model: EquinoxModel, layer):
  """Selectors -> names ``selector_k``; returns the model that knows them and the
  layer (or list of layers) by name."""
  if layer is None:
    raise LayerNotFoundError(
        "layer=None: an Equinox model has no module paths to search; expected a "
        "selector such as layer=lambda m: m.layers[3] (or a list of them).")
  specs = list(layer) if isinstance(layer, list) else [layer]
  selectors, calls = [], []
  for s in specs:
    if (isinstance(s, tuple) and len(s) == 2 and callable(s[0])
        and isinstance(s[1], int) and s[1] >= 0):
      s, call = s
    elif callable(s):
      call = None
    else:
      raise LayerSpecError(f"layer: for an Equinox model expected a selector "
                           f"function such as lambda m: m.layers[3], or (selector, i) "
                           f"for its call i; got {s!r}.")
    selectors.append(s)
    calls.append(call)
  refs = [LayerRef((f"selector_{k}",), call) for k, call in enumerate(calls)]
  new = EquinoxModel.__new__(EquinoxModel)
  new.static, new.batched, new.selectors = model.static, model.batched, tuple(selectors)
  return new, (refs if isinstance(layer, list) else refs[0])


def _tap_class():
  import equinox as eqx

  class Tap(eqx.Module):
    inner: Any
    name: str = eqx.field(static=True)
    hook: Callable = eqx.field(static=True)

    def __call__(self, *args, **kwargs):
      return self.hook(self.name, self.inner(*args, **kwargs))

  return Tap


def _numbered(on_output):
  """A tap hook that numbers the calls of each selected submodule within one trace
  and passes ``(name, index, out)`` to `on_output`."""
  calls: dict = {}

  def hook(name, out):
    index = calls[name] = calls.get(name, -1) + 1
    return on_output(name, index, out)
  return hook


def _with_taps(model, selectors, names, hook):
  import equinox as eqx
  tap = _tap_class()
  for selector, name in zip(selectors, names):
    model = eqx.tree_at(selector, model, replace_fn=lambda sub, n=name: tap(sub, n, hook))
  return model


def list_layers(model: EquinoxModel, arrays, x) -> tuple[list[LayerInfo], Any]:
  infos: list[LayerInfo] = []
  names = [f"selector_{k}" for k in range(len(model.selectors))]

  def traced(arrays, x):
    def record(name, index, out):  # every call, numbered: a layer called twice shows
      batched = out if model.batched else jnp.expand_dims(out, 0)
      shape = (x.shape[0], *batched.shape[1:])
      infos.append(LayerInfo((name,), "__call__", index, shape, str(out.dtype),
                             "equinox selector"))
      return out

    m = _with_taps(model.model(arrays), model.selectors, names, _numbered(record))
    return m(x) if model.batched else jax.vmap(m)(x)

  out = jax.eval_shape(traced, arrays, x)
  return infos, out


def run_many(model: EquinoxModel, arrays, x, layers, edits):
  """The model with each edit applied at its layer's call (a resolved LayerRef's
  call index; other calls of the same submodule run unedited)."""
  by_call = {(ref.path[0], ref.call or 0): edit for ref, edit in zip(layers, edits)}
  names = [f"selector_{k}" for k in range(len(model.selectors))]
  wanted = [(s, n) for s, n in zip(model.selectors, names)
            if any(name == n for name, _ in by_call)]

  def tapped(lane):
    def apply_edit(name, index, out):
      edit = by_call.get((name, index))
      if edit is None:
        return out
      return edit(out) if lane is None else edit.lane(lane)(out)
    return _with_taps(model.model(arrays), [s for s, _ in wanted],
                      [n for _, n in wanted], _numbered(apply_edit))

  if model.batched:
    return tapped(None)(x)
  return jax.vmap(lambda xi, i: tapped(i)(xi))(x, jnp.arange(x.shape[0]))
