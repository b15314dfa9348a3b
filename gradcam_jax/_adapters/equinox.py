"""Equinox models: an ``eqx.Module`` that maps one example to its output (the
Equinox convention), with target layers chosen by selector functions in the spirit
of ``eqx.tree_at``: ``layer=lambda m: m.layers[3]``.

Each trace builds a new model with ``eqx.tree_at`` that wraps the selected submodule
in a tap, and runs it under ``jax.vmap`` over the batch; the user's model is never
modified. Edits are applied lane by lane (:meth:`Edit.lane`).
"""

from __future__ import annotations

import functools

from typing import Any, Callable

import jax
import jax.numpy as jnp

from gradcam_jax._adapters.base import (
  CallCounter,
  EditsAt,
  LayerEdits,
  has_bias,
  zero_input,
)
from gradcam_jax._errors import LayerNotFoundError, LayerSpecError
from gradcam_jax._layers import LayerInfo, LayerRef, first_array

__all__ = ["EquinoxModel"]


def _tap_class():
  import equinox as eqx

  class Tap(eqx.Module):
    inner: Any
    name: str = eqx.field(static=True)
    hook: Callable = eqx.field(static=True)

    def __call__(self, *args, **kwargs):
      zero = zero_input(self.inner, args, kwargs, batched=False)
      return self.hook(self.name, self.inner(*args, **kwargs), zero)

  return Tap


def _with_taps(model, selectors, names, hook):
  """`model` with the submodule each selector picks wrapped in a tap that hands its
  output to ``hook(name, output, zero)`` (``zero()``: the submodule on zeros)."""
  import equinox as eqx

  tap = _tap_class()
  for selector, name in zip(selectors, names):
    model = eqx.tree_at(selector, model, replace_fn=lambda sub, n=name: tap(sub, n, hook))
  return model


def _follow(path, model):
  """The node of `model` at a key path of ``jax.tree_util`` (a selector)."""
  for key in path:
    if isinstance(key, jax.tree_util.GetAttrKey):
      model = getattr(model, key.name)
    elif isinstance(key, jax.tree_util.SequenceKey):
      model = model[key.idx]
    else:  # DictKey, FlattenedIndexKey
      model = model[key.key]
  return model


def _selector_names(count: int) -> list[str]:
  return [f"selector_{k}" for k in range(count)]


class EquinoxModel:
  """``apply(arrays, x)``: the model's arrays recombined with its static part,
  vmapped over the batch. `selectors` name the layers that can be tapped."""

  inference_mode = (
    "eqx.nn.inference_mode(model) (Dropout off), and a __call__ that needs a key "
    "gets it bound: eqx.Partial(eqx.nn.inference_mode(model), key=None) (its layers "
    "are then selected as lambda p: p.func.layers[3])"
  )

  def __init__(self, model, selectors: tuple = (), batched: bool = False):
    import equinox as eqx

    self.static = eqx.filter(model, eqx.is_array, inverse=True)
    self.selectors = tuple(selectors)
    self.batched = batched

  @staticmethod
  def claims(model) -> bool:
    if isinstance(model, EquinoxModel):
      return True
    try:
      import equinox as eqx
    except ImportError:
      return False
    return isinstance(model, eqx.Module)

  @classmethod
  def adapt(cls, model, params):
    """An ``eqx.Module``: its arrays become the bound params unless `params` is
    given (arrays only: a field holding a function, such as a jitted activation, is
    not an argument ``jax.jit`` can take)."""
    import equinox as eqx

    if isinstance(model, EquinoxModel):
      return model, params
    return cls(model), eqx.filter(model, eqx.is_array) if params is None else params

  def model(self, arrays):
    import equinox as eqx

    return eqx.combine(arrays, self.static)

  def __repr__(self) -> str:
    inner = getattr(self.static, "func", None)  # an eqx.Partial binding a key
    if inner is not None and hasattr(inner, "__dataclass_fields__"):
      return f"Equinox module {type(inner).__name__} (in {type(self.static).__name__})"
    return f"Equinox module {type(self.static).__name__}"

  def __call__(self, arrays, x):
    model = self.model(arrays)
    return model(x) if self.batched else jax.vmap(model)(x)

  def variables(self, params):
    import equinox as eqx

    return eqx.filter(params, eqx.is_array)

  def parse_layer(self, layer):
    """Selectors -> names ``selector_k``; returns the adapter that knows them and
    the layer (or list of layers) by name."""
    if layer is None:
      raise LayerNotFoundError(
        "layer=None: an Equinox model has no module paths to search; expected a "
        "selector such as layer=lambda m: m.layers[3] (or a list of them)."
      )
    specs = list(layer) if isinstance(layer, list) else [layer]
    selectors, calls = [], []
    for s in specs:
      if (
        isinstance(s, tuple)
        and len(s) == 2
        and callable(s[0])
        and isinstance(s[1], int)
        and s[1] >= 0
      ):
        s, call = s
      elif callable(s):
        call = None
      else:
        raise LayerSpecError(
          f"layer: for an Equinox model expected a selector "
          f"function such as lambda m: m.layers[3], or (selector, "
          f"i) for its call i; got {s!r}."
        )
      selectors.append(s)
      calls.append(call)
    names = _selector_names(len(selectors))
    refs = [LayerRef((name,), call) for name, call in zip(names, calls)]
    new = EquinoxModel.__new__(EquinoxModel)
    new.static, new.batched, new.selectors = self.static, self.batched, tuple(selectors)
    return new, (refs if isinstance(layer, list) else refs[0])

  def list_layers(self, arrays, x):
    infos: list[LayerInfo] = []
    count = CallCounter()

    def traced(arrays, x):
      def record(name, out, zero):  # every call, numbered: a layer called twice shows
        first = first_array(out)  # a batch norm's (output, state)
        batched = first if self.batched else jnp.expand_dims(first, 0)
        shape = jax.ShapeDtypeStruct((x.shape[0], *batched.shape[1:]), first.dtype)
        infos.append(
          LayerInfo.of_output((name,), "__call__", count(name), shape, "equinox selector")
        )
        return out

      m = _with_taps(
        self.model(arrays), self.selectors, _selector_names(len(self.selectors)), record
      )
      return m(x) if self.batched else jax.vmap(m)(x)

    out = jax.eval_shape(traced, arrays, x)
    return infos, out

  def bias_layers(self, arrays, x):
    """Every ``eqx.nn.Conv`` (1-, 2-, 3-D) with a bias and ``eqx.nn.BatchNorm`` in the
    model's tree, each call of each, reached through selectors of their paths."""
    import equinox as eqx

    kinds = (eqx.nn.Conv, eqx.nn.BatchNorm)
    found = jax.tree_util.tree_flatten_with_path(
      self.static, is_leaf=lambda n: isinstance(n, kinds)
    )[0]
    selectors = [
      functools.partial(_follow, path)
      for path, node in found
      if isinstance(node, kinds) and has_bias(node)
    ]
    if not selectors:
      return self, []
    new, _ = self.parse_layer(selectors)
    infos, _ = new.list_layers(arrays, x)
    return new, infos

  def run_with_edits(self, arrays, x, edits: LayerEdits):
    """The model with each edit applied at its layer's call (other calls of the
    same submodule run unedited)."""
    at = EditsAt(edits, key=lambda ref: ref.path[0])
    wanted = [
      (s, n)
      for s, n in zip(self.selectors, _selector_names(len(self.selectors)))
      if n in at.keys
    ]

    def tapped(lane):
      return _with_taps(
        self.model(arrays),
        [s for s, _ in wanted],
        [n for _, n in wanted],
        lambda name, out, zero: at(name, out, lane, zero=zero),
      )

    if self.batched:
      out = tapped(None)(x)
    else:
      out = jax.vmap(lambda xi, i: tapped(i)(xi))(x, jnp.arange(x.shape[0]))
    at.check()
    return out
