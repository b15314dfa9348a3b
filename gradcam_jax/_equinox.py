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
from gradcam_jax._layers import LayerInfo

__all__ = ["EquinoxModel", "is_equinox", "adapt_layers"]


def is_equinox(obj) -> bool:
  try:
    import equinox as eqx
  except ImportError:
    return False
  return isinstance(obj, eqx.Module)


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


def adapt_layers(model: EquinoxModel, layer):
  """Selectors -> names ``selector_k``; returns the model that knows them and the
  layer (or list of layers) by name."""
  if layer is None:
    raise LayerNotFoundError(
        "layer=None: an Equinox model has no module paths to search; expected a "
        "selector such as layer=lambda m: m.layers[3] (or a list of them).")
  selectors = list(layer) if isinstance(layer, list) else [layer]
  for s in selectors:
    if not callable(s):
      raise LayerSpecError(f"layer: for an Equinox model expected a selector "
                               f"function such as lambda m: m.layers[3]; got {s!r}.")
  names = [f"selector_{k}" for k in range(len(selectors))]
  new = EquinoxModel.__new__(EquinoxModel)
  new.static, new.batched, new.selectors = model.static, model.batched, tuple(selectors)
  return new, (names if isinstance(layer, list) else names[0])


def _tap_class():
  import equinox as eqx

  class Tap(eqx.Module):
    inner: Any
    name: str = eqx.field(static=True)
    hook: Callable = eqx.field(static=True)

    def __call__(self, *args, **kwargs):
      return self.hook(self.name, self.inner(*args, **kwargs))

  return Tap


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
    seen = {}

    def record(name, out):
      if name not in seen:
        seen[name] = True
        batched = out if model.batched else jnp.expand_dims(out, 0)
        shape = (x.shape[0], *batched.shape[1:])
        infos.append(LayerInfo((name,), "__call__", 0, shape, str(out.dtype),
                               "equinox selector"))
      return out

    m = _with_taps(model.model(arrays), model.selectors, names, record)
    return m(x) if model.batched else jax.vmap(m)(x)

  out = jax.eval_shape(traced, arrays, x)
  return infos, out


def run_many(model: EquinoxModel, arrays, x, layers, edits):
  by_name = {ref.path[0]: edit for ref, edit in zip(layers, edits)}
  names = [f"selector_{k}" for k in range(len(model.selectors))]
  wanted = [(s, n) for s, n in zip(model.selectors, names) if n in by_name]

  if model.batched:
    m = _with_taps(model.model(arrays), [s for s, _ in wanted], [n for _, n in wanted],
                   lambda name, out: by_name[name](out))
    return m(x)

  def one(xi, i):
    m = _with_taps(model.model(arrays), [s for s, _ in wanted], [n for _, n in wanted],
                   lambda name, out: by_name[name].lane(i)(out))
    return m(xi)

  return jax.vmap(one)(x, jnp.arange(x.shape[0]))
