"""One call of an explainer (:class:`Request`): the model's adapter and variables,
the images and targets checked, the layer(s) resolved, the layouts; and the steps
every explainer shares: the target scores' pullback over a (B, T) target axis, and
the :class:`Explanation` squeezed back to what the caller asked for.

Targets are carried as (B, T) throughout (T = 1 for (B,) targets or the default
argmax), every per-target array as (B, T, ...); the T axis is squeezed once, in
:meth:`Request.explanation`, unless the caller passed (B, T) targets.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp

from gradcam_jax._adapters import Adapter, pick
from gradcam_jax._edits import Edit
from gradcam_jax._errors import (
  GradCAMError,
  LayerNotFoundError,
  LayerShapeError,
  UnsupportedError,
  model_failure,
)
from gradcam_jax._inputs import check_images
from gradcam_jax._layers import LayerInfo, LayerRef, is_spatial, select_layer
from gradcam_jax._reach import reaching_layer
from gradcam_jax._reshape import channels_last
from gradcam_jax._result import Explanation
from gradcam_jax._targets import (
  check_target_indexing,
  check_targets,
  class_logit,
  class_probability,
  default_targets,
  score_cotangent,
)

__all__ = [
  "Request",
  "adapt",
  "batch_first",
  "over_t",
  "over_targets",
]


def adapt(apply_fn, params, layer) -> tuple[Adapter, Any, Any]:
  """The model's adapter, its params and the parsed layer(s) for what the user gave."""
  if isinstance(layer, list) and not layer:
    raise LayerNotFoundError(
      "layer: expected a layer or a non-empty list of layers; got []."
    )
  adapter, params = pick(apply_fn, params)
  adapter, layer = adapter.parse_layer(layer)
  return adapter, params, layer


def over_t(fn: Callable, xs) -> Any:
  """``fn`` of each entry of `xs` (a pytree) along its leading T axis, stacked on a
  leading T axis: ``jax.vmap(fn)(xs)``, except that with T = 1 `fn` runs once and
  the axis is added, so a single target compiles to the program it would without a
  target axis."""
  leaves = jax.tree_util.tree_leaves(xs)
  if leaves and leaves[0].shape[0] == 1:
    out = fn(jax.tree_util.tree_map(lambda x: x[0], xs))
    return jax.tree_util.tree_map(lambda x: x[None], out)
  return jax.vmap(fn)(xs)


def over_targets(fn: Callable, targets) -> Any:
  """``fn(t)`` for each (B,) column `t` of (B, T) `targets`, stacked on a leading T
  axis (None targets: ``fn(None)`` with a T axis of 1)."""
  if targets is None:
    return jax.tree_util.tree_map(lambda x: x[None], fn(None))
  return over_t(fn, targets.T)


def batch_first(x):
  """(T, B, ...) -> (B, T, ...), for an array or a tuple of them."""
  return jax.tree_util.tree_map(lambda v: jnp.moveaxis(v, 0, 1), x)


def _varying_axes(x) -> tuple:
  """The manual mesh axes `x` varies over inside ``shard_map`` (empty outside)."""
  aval = jax.typeof(x)
  manual = getattr(aval, "manual_axis_type", None)  # jax 0.10
  axes = getattr(manual, "varying", None) or getattr(aval, "vma", None) or ()
  return tuple(sorted(axes))


class Request:
  """What one call of an explainer asks for, checked: variables, images, targets,
  layers.

  `layout` is the images' (an ``image_layout`` name, or None for channels last of
  their rank: (B, L, C) signals, (B, H, W, C) images, (B, D, H, W, C) volumes). With a
  channels-first layout ("NCHW", ...) the model's activations are channels first,
  (B, C, *spatial): they are moved to (B, *spatial, C) for the methods (an implicit
  ``reshape=channels_last``, unless a `reshape` is given).

  Attributes:
    targets: (B, T) int32, or None for the default (the argmax, found from the
      output; or none at all for a target function that needs no targets).
    squeeze: whether the T axis is dropped from the result (targets were (B,) or
      None).
    infos, refs: the resolved layers (``LayerInfo``, ``LayerRef``), one per layer.
  """

  def __init__(
    self,
    adapter: Adapter,
    params,
    images,
    targets,
    layer,
    reshape=None,
    layout: str | None = None,
    target_fn=class_logit,
  ):
    self.adapter = adapter
    self.target_fn = target_fn
    self.images, self.layout = check_images(images, layout)
    self.size = self.layout.spatial(images.shape)
    self.batch = images.shape[0]
    rank = self.layout.rank
    if reshape is None and not self.layout.channels_last:
      reshape = channels_last
    self.reshape = reshape
    self.variables = adapter.variables(params)
    needs_layers = layer is not False
    try:
      if needs_layers:
        infos, self.out_shape = adapter.list_layers(self.variables, images)
      else:  # no layer: the output's shape is all that is needed
        infos, self.out_shape = [], _output_shape(adapter, self.variables, images)
    except GradCAMError:
      raise
    except Exception as err:
      own = _own_failure(adapter, self.variables, images) if needs_layers else err
      if own is None:  # the model runs by itself: listing its layers failed
        raise UnsupportedError(
          f"{adapter!r} runs on these images, but listing its layers failed: "
          f"{type(err).__name__}: {err}. The model uses a construct gradcam-jax "
          "cannot tap yet; guided backprop, which needs no layer, still works."
        ) from err
      raise model_failure(own, images, adapter.inference_mode) from own
    checked = (
      None if targets is None else check_targets(targets, self.batch, self.out_shape)
    )
    if target_fn not in (class_logit, class_probability):
      check_target_indexing(target_fn, checked, self.out_shape)
    self.squeeze = checked is None or checked.ndim == 1
    self.targets = (
      checked[:, None] if checked is not None and checked.ndim == 1 else checked
    )
    layers = [] if layer is False else (layer if isinstance(layer, list) else [layer])
    self.infos: list[LayerInfo] = [
      select_layer(infos, l, self.batch, reshape, rank)
      if l is not None or reshape in (None, channels_last)
      else reaching_layer(
        adapter,
        self.variables,
        images,
        [i for i in infos if is_spatial(i, self.batch, reshape, rank)],
        reshape,
      )
      for l in layers
    ]
    for info in self.infos:
      _check_fits(info, reshape, self.size, self.layout)
    self.refs = [LayerRef(i.path, i.call, i.method) for i in self.infos]

  # -- running the model ------------------------------------------------------------

  def run_with_edits(self, x, edits: dict[int, Edit]):
    """The model on `x` with ``edits[i]`` applied at layer `i`."""
    return self.adapter.run_with_edits(
      self.variables, x, [(self.refs[i], e) for i, e in edits.items()]
    )

  def zeros(self, i: int = 0):
    """Zeros shaped like activation `i`, varying over the same manual mesh axes as
    the images: under ``shard_map`` an unvarying zero would make the transpose sum
    its cotangent over devices, silently mixing examples."""
    return self.zeros_for(self.infos[i])

  def zeros_for(self, info: LayerInfo):
    """:meth:`zeros` shaped like the activation of `info`, a layer of the model's."""
    z = jnp.zeros(info.shape, info.dtype)
    axes = _varying_axes(self.images)
    return jax.lax.pcast(z, axes, to="varying") if axes else z

  # -- scores and pullbacks ---------------------------------------------------------

  def scores_vjp(self, fn: Callable, *primals):
    """``jax.vjp(fn, *primals)`` and the targets' score cotangents of its output.

    Returns:
      ``(output, targets, cotangents, pullback)``: targets (B, T) (the argmax when
      none were given; None for a target function that needs none); cotangents
      with a leading T axis; ``pullback(cotangents)`` gives the primals' cotangents
      with a leading T axis.
    """
    output, vjp = jax.vjp(fn, *primals)
    targets = self.targets
    if targets is None:
      found = default_targets(output, self.batch, self.target_fn)
      targets = None if found is None else found[:, None]
    cts = over_targets(
      lambda t: score_cotangent(self.target_fn, output, t, self.batch), targets
    )
    return output, targets, cts, lambda c: over_t(vjp, c)

  # -- layouts ----------------------------------------------------------------------

  def grid(self, x):
    """An activation (or its gradient) (B, ...) as (B, *spatial, C): `reshape` applied
    (token grids of transformers, channels first)."""
    return x if self.reshape is None else self.reshape(x)

  def channel_axis(self, maps):
    """Maps (..., *spatial) with a unit channel axis where the images have theirs,
    for products with input gradients."""
    return self.layout.channel_axis(maps)

  def to_last(self, x):
    """Images (or their gradients) as (B, *spatial, C)."""
    return self.layout.to_last(x)

  def from_last(self, x):
    return self.layout.from_last(x)

  # -- the result -------------------------------------------------------------------

  def explanation(
    self,
    output,
    targets,
    *,
    cam=None,
    cam_raw=None,
    guided=None,
    guided_gradcam=None,
    attribution=None,
    delta=None,
  ) -> Explanation:
    """The result from (B, T, ...) fields: the T axis dropped where the targets were
    (B,) or the default, and the validity flags computed."""
    fields = (cam, cam_raw, guided, guided_gradcam, targets, attribution, delta)
    if self.squeeze:
      fields = jax.tree_util.tree_map(lambda x: x[:, 0], fields)
    cam, cam_raw, guided, guided_gradcam, targets, attribution, delta = fields
    out = Explanation(
      cam, cam_raw, guided, guided_gradcam, output, targets, None, attribution, delta
    )
    return out.with_validity(self.images)


def _output_shape(adapter, variables, images):
  return jax.eval_shape(lambda v, x: adapter(v, x), variables, images)


def _own_failure(adapter, variables, images) -> Exception | None:
  """The model's own exception on these images (run by itself, shapes only), or
  None when it runs."""
  try:
    _output_shape(adapter, variables, images)
  except Exception as err:  # noqa: BLE001 (returned: the caller raises it as ours)
    return err
  return None


def _check_fits(info, reshape, size, layout) -> None:
  """A layer's grid larger than the images' cannot come from them: the layout of
  the images or of the activations is not what was declared."""
  grid = (
    jax.eval_shape(reshape, jax.ShapeDtypeStruct(info.shape, info.dtype)).shape
    if reshape is not None
    else info.shape
  )
  spatial = tuple(grid[1 : 1 + layout.rank])
  if any(g > s for g, s in zip(spatial, size)):
    n = layout.name
    other = n[0] + n[-1] + n[1:-1] if layout.channels_last else n[0] + n[2:] + n[1]
    raise LayerShapeError(
      f"layer {str(LayerRef(info.path, info.call, info.method))!r}: its activation "
      f"{info.shape} read as {layout.grid_text()} has a larger grid {spatial} than "
      f"the images' {size} under image_layout={layout.name!r}. The images or "
      f"the activations are in another layout: for channels-first images and "
      f"activations (Equinox, PyTorch style) pass image_layout={other!r}"
      + (
        "" if layout.channels_last else ", or reshape=... for activations of another layout"
      )
      + "."
    )
