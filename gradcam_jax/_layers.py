"""Naming target layers: paths, call indices, what the model actually calls
(:func:`list_layers`), and choosing among them (:func:`select_layer`)."""

from __future__ import annotations

from typing import Any, NamedTuple, Sequence

from gradcam_jax._errors import (
  LayerNotFoundError,
  LayerShapeError,
  LayerSpecError,
  format_choices,
)

__all__ = [
  "LayerRef",
  "LayerInfo",
  "Layers",
  "list_layers",
  "parse_layer",
  "parse_layers",
  "select_layer",
]


class LayerRef(NamedTuple):
  """A target layer: a module path, which call of it, and which method.

  Attributes:
    path: the module path, e.g. ``("layer4",)`` or ``("features_28",)``.
    call: which call of the module when the model calls it several times (0-based);
      None means "the only call" and is an error when there are several.
    method: the module method whose output is the activation, ``"__call__"`` usually.
  """

  path: tuple[str, ...]
  call: int | None = None
  method: str = "__call__"

  def __str__(self) -> str:
    s = "/".join(self.path)
    if self.method != "__call__":
      s += f".{self.method}"
    return s if self.call is None else f"{s}@{self.call}"


class LayerInfo(NamedTuple):
  """One activation the model produced while tracing: where, which call, what shape.

  `inside_loop` marks a call inside a scan over a stack of layers (``nnx.scan``,
  ``nn.scan``): one record per iteration, `call` numbering the iterations."""

  path: tuple[str, ...]
  method: str
  call: int
  shape: tuple[int, ...] | None
  dtype: str | None
  module_type: str
  inside_loop: bool = False

  @classmethod
  def of_output(
    cls, path, method: str, call: int, out, module_type: str, inside_loop: bool = False
  ) -> "LayerInfo":
    """The record of one layer output `out` (its shape and dtype where it is an
    array, or a tuple led by one: a scanned block's ``(carry, y)``)."""
    out = first_array(out)
    ok = hasattr(out, "shape") and hasattr(out, "dtype")
    return cls(
      tuple(path),
      method,
      call,
      tuple(out.shape) if ok else None,
      str(out.dtype) if ok else None,
      module_type,
      inside_loop,
    )

  def ref(self, calls: int) -> LayerRef:
    return LayerRef(self.path, self.call if calls > 1 else None, self.method)

  def describe(self, calls: int) -> str:
    shape = "not an array" if self.shape is None else f"{self.shape} {self.dtype}"
    loop = f" (iteration {self.call} of a scan)" if self.inside_loop else ""
    return f"{str(self.ref(calls)):40s} {self.module_type:20s} {shape}{loop}"


def first_array(out):
  """`out`, or its first item where it is a tuple led by an array (a scanned
  block's ``(carry, y)``): the activation an edit reaches."""
  if isinstance(out, tuple) and out and hasattr(out[0], "shape"):
    return out[0]
  return out


def per_iteration(infos: Sequence[LayerInfo], loops: Sequence[int | None]) -> list:
  """`infos` with each run of consecutive calls inside one loop (its number of
  iterations in `loops`, None outside loops) written out per iteration: the calls
  of iteration 0, then those of iteration 1, ..., each numbered by its iteration."""
  out: list = []
  group: list = []
  for info, loop in [*zip(infos, loops), (None, None)]:
    if group and (loop is None or loop != group[0][1]):
      out.extend(i._replace(call=k) for k in range(group[0][1]) for i, _ in group)
      group = []
    if loop is not None:
      group.append((info, loop))
    elif info is not None:
      out.append(info)
  return out


def parse_layers(layer):
  """:func:`parse_layer` of one layer, or of each layer of a list."""
  return [parse_layer(l) for l in layer] if isinstance(layer, list) else parse_layer(layer)


def parse_layer(layer) -> LayerRef | None:
  """Accept ``None``, a :class:`LayerRef`, a tuple path, or a string ``"a/b"``.

  The string form may name a method with ``.name`` and a call index with ``@i``:
  ``"encoder/proj.attend@1"``.
  """
  if layer is None or isinstance(layer, LayerRef):
    return layer
  if isinstance(layer, str):
    body, _, call = layer.partition("@")
    body, _, method = body.partition(".")
    path = tuple(p for p in body.strip("/").split("/") if p)
    if call and not call.isdigit():
      raise LayerNotFoundError(
        f"layer {layer!r}: expected a call index after '@' (e.g. 'block@1'), got {call!r}."
      )
    return LayerRef(path, int(call) if call else None, method or "__call__")
  if isinstance(layer, tuple) and all(isinstance(p, (str, int)) for p in layer):
    return LayerRef(tuple(str(p) for p in layer))  # NNX paths hold list indices
  raise LayerSpecError(
    f"layer: expected None, a path tuple of strings such as ('layer4',), a string "
    f"such as 'layer4/1' or a LayerRef; got {layer!r} of type "
    f"{type(layer).__name__}."
  )


def _call_counts(infos: Sequence[LayerInfo]) -> dict:
  counts: dict = {}
  for info in infos:
    key = (info.path, info.method)
    counts[key] = counts.get(key, 0) + 1
  return counts


def _transformed(info: LayerInfo, transform) -> LayerInfo:
  """`info` with the shape `transform` (e.g. tokens -> grid) gives, or no shape."""
  if transform is None or info.shape is None:
    return info
  import jax

  try:
    out = jax.eval_shape(transform, jax.ShapeDtypeStruct(info.shape, info.dtype))
  except Exception:  # not a shape the transform accepts: not a candidate
    return info._replace(shape=None)
  return info._replace(shape=tuple(out.shape))


def is_spatial(info: LayerInfo, batch: int, transform=None, rank: int = 2) -> bool:
  """Whether `info`'s activation (after `transform`) is a (batch, *spatial, C) grid
  of `rank` spatial axes, each longer than 1."""
  info = _transformed(info, transform)
  return (
    info.shape is not None
    and len(info.shape) == rank + 2
    and info.shape[0] == batch
    and all(n > 1 for n in info.shape[1 : 1 + rank])
  )


_GRIDS = {
  1: "(B={b}, w, C) with w > 1",
  2: "(B={b}, h, w, C) with h, w > 1",
  3: "(B={b}, d, h, w, C) with d, h, w > 1",
}


def _grid(rank: int, batch: int) -> str:
  return _GRIDS[rank].format(b=batch)


def _exact_name(infos: Sequence[LayerInfo], layer: LayerRef) -> LayerRef:
  """`layer` read literally where its ``name.method`` form is itself the name of a
  layer the model calls (``"features.0"``, common in models converted from
  PyTorch): exact names win over parsing."""
  if layer.method == "__call__" or not layer.path:
    return layer
  literal = layer.path[:-1] + (f"{layer.path[-1]}.{layer.method}",)
  if any(i.path == literal and i.method == "__call__" for i in infos):
    return LayerRef(literal, layer.call)
  return layer


def describe_layers(infos: Sequence[LayerInfo], limit: int | None = 40) -> str:
  counts = _call_counts(infos)
  return format_choices((i.describe(counts[(i.path, i.method)]) for i in infos), limit)


def select_layer(
  infos: Sequence[LayerInfo],
  layer: LayerRef | None,
  batch: int,
  transform=None,
  rank: int = 2,
) -> LayerInfo:
  """The activation `layer` names among `infos`, or the automatic choice.

  The automatic choice (``layer=None``) is the last activation, in the order the
  model finished computing them, of shape (batch, h, w, C) with h, w > 1 (after
  `transform`, e.g. a token-to-grid reshape, when one is given); for inputs of
  another spatial `rank`, (batch, w, C) or (batch, d, h, w, C) likewise.
  """
  counts = _call_counts(infos)
  if layer is None:
    spatial = [i for i in infos if is_spatial(i, batch, transform, rank)]
    if not spatial:
      raise LayerShapeError(
        f"layer=None: expected the model to produce at least one activation "
        f"{_grid(rank, batch)} (spatial rank {rank}, as the inputs'); got none. "
        "The model's layers:\n" + describe_layers(infos)
      )
    return spatial[-1]
  layer = _exact_name(infos, layer)
  matches = [i for i in infos if i.path == layer.path and i.method == layer.method]
  if not matches:
    shown = 40
    raise LayerNotFoundError(
      f"layer {str(layer)!r} (path {layer.path}, method {layer.method!r}) is not "
      "called by the model. Valid layers, nearest the output first (the ones "
      "usually chosen):\n"
      + describe_layers(infos[::-1], shown)
      + (
        f"\n(all {len(infos)}: print(gcj.list_layers(apply_fn, params, images)))"
        if len(infos) > shown
        else ""
      )
    )
  if layer.call is None and len(matches) > 1:
    how = (
      "pass layer=(selector, i)"
      if matches[0].module_type == "equinox selector"
      else f"name the call with '{layer}@i' or LayerRef({layer.path}, call=i)"
    )
    raise LayerNotFoundError(
      f"layer {str(layer)!r} is called {len(matches)} times; {how}, i in "
      f"0..{len(matches) - 1}."
    )
  index = layer.call or 0
  if index >= len(matches):
    raise LayerNotFoundError(
      f"layer {str(layer)!r}: call index {index} requested, but the module "
      + (
        f"runs in {len(matches)} iteration(s) of a scan"
        if matches[0].inside_loop
        else f"is called {len(matches)} time(s)"
      )
      + f"; valid indices: 0..{len(matches) - 1}."
    )
  info = matches[index]
  if not is_spatial(info, batch, transform, rank):
    raise LayerShapeError(
      f"layer {str(layer)!r} outputs {info.shape if info.shape else 'a non-array'}; "
      f"a CAM of inputs of spatial rank {rank} needs an activation of the same rank, "
      f"{_grid(rank, batch)} (channels last, or first with a channels-first "
      "image_layout). Layers of that rank in this model:\n"
      + format_choices(
        i.describe(counts[(i.path, i.method)])
        for i in infos
        if is_spatial(i, batch, transform, rank)
      )
      + ("" if transform is None else "\n(shapes checked after the reshape)")
    )
  return info


class Layers(NamedTuple):
  """What :func:`list_layers` returns: unpack it (``layers, output = ...``) or print
  it (a table: layer, module type, shape)."""

  layers: list[LayerInfo]
  output: Any

  def __str__(self) -> str:
    import jax

    out = jax.tree_util.tree_map(lambda a: tuple(a.shape), self.output)
    return (
      f"  {'layer (as layer= takes it)':40s} {'module':20s} shape\n"
      + describe_layers(self.layers, None)
      + f"\n  output: {out}"
    )


def list_layers(apply_fn, variables, x) -> Layers:
  """Every activation the model computes on `x`, in the order they finish (each call
  of a module numbered), and the shape of the model's output; ``print`` it for a
  table.

  `apply_fn` and `variables` as an explainer takes them (a linen ``apply``, an NNX
  module, an Equinox module, a :class:`Split`, ...). Uses ``jax.eval_shape``:
  nothing is computed.

  Example:
    >>> import jax, jax.numpy as jnp, flax.linen as nn, gradcam_jax as gcj
    >>> class Net(nn.Module):
    ...   @nn.compact
    ...   def __call__(self, x):
    ...     x = nn.relu(nn.Conv(4, (3, 3), name="conv")(x))
    ...     return nn.Dense(3, name="fc")(x.mean((1, 2)))
    >>> net = Net()
    >>> x = jnp.ones((2, 8, 8, 3))
    >>> print(gcj.list_layers(net.apply, net.init(jax.random.key(0), x), x))
    layer (as layer= takes it)               module               shape
      conv                                     Conv                 (2, 8, 8, 4) float32
      fc                                       Dense                (2, 3) float32
      output: (2, 3)
  """
  from gradcam_jax._adapters import pick  # the adapters import this module

  adapter, params = pick(apply_fn, variables)
  return Layers(*adapter.list_layers(adapter.variables(params), x))
