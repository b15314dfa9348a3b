"""What one trace of an explainer knows (:class:`Setup`): the model's adapter and
variables, the images and targets checked, the layer(s) resolved, the layouts; and
the small steps every explainer shares (zeros varying like the images, the output
cotangent of the target scores, pullbacks over several targets)."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from gradcam_jax._adapters import pick
from gradcam_jax._errors import (ArgumentError, GradCAMError, LayerNotFoundError,
                                 LayerShapeError)
from gradcam_jax._inputs import check_images
from gradcam_jax._layers import LayerRef, select_layer
from gradcam_jax._model import model_failure, run
from gradcam_jax._reshape import channels_last
from gradcam_jax._targets import (check_target_indexing, check_targets, class_logit,
                                  class_probability, default_targets, score_cotangent)

__all__ = ["LAYOUTS", "Setup", "adapt", "check_layout"]


def _varying_axes(x) -> tuple:
  """The manual mesh axes `x` varies over inside ``shard_map`` (empty outside)."""
  aval = jax.typeof(x)
  manual = getattr(aval, "manual_axis_type", None)  # jax 0.10
  axes = getattr(manual, "varying", None) or getattr(aval, "vma", None) or ()
  return tuple(sorted(axes))


LAYOUTS = ("NHWC", "NCHW")


def check_layout(image_layout) -> None:
  if image_layout not in LAYOUTS:
    raise ArgumentError(f"image_layout: expected one of {LAYOUTS} (channels last, as "
                        f"Flax; channels first, as Equinox and PyTorch); got "
                        f"{image_layout!r}.")


class Setup:
  """What one trace of an explainer knows: variables, checked inputs, the layer.

  With ``layout="NCHW"`` the images are (B, C, H, W) and the model's activations
  channels first, (B, C, h, w): they are moved to (B, h, w, C) for the methods (an
  implicit ``reshape=channels_last``, unless a `reshape` is given)."""

  def __init__(self, apply_fn, params, images, targets, layer, reshape=None,
               layout="NHWC", target_fn=None):
    self.apply_fn = apply_fn
    self.images = check_images(images, layout)
    self.layout = layout
    self.size = tuple(images.shape[1:3] if layout == "NHWC" else images.shape[2:4])
    self.batch = images.shape[0]
    if reshape is None and layout == "NCHW":
      reshape = channels_last
    self.variables = apply_fn.variables(params)
    try:
      infos, self.out_shape = apply_fn.list_layers(self.variables, images)
    except GradCAMError:
      raise
    except Exception as err:  # the model's own error, re-raised with our context
      raise model_failure(err, images) from err
    self.targets = (None if targets is None
                    else check_targets(targets, self.batch, self.out_shape))
    if target_fn not in (None, class_logit, class_probability):
      check_target_indexing(target_fn, self.targets, self.out_shape)
    self.multi = self.targets is not None and self.targets.ndim == 2
    layers = [] if layer is False else (layer if isinstance(layer, list) else [layer])
    self.infos = [select_layer(infos, l, self.batch, reshape) for l in layers]
    for info in self.infos:
      _check_fits(info, reshape, self.size, layout)
    self.reshape = reshape
    self.refs = [LayerRef(i.path, i.call, i.method) for i in self.infos]

  def channel_axis(self, x):
    """`x` (maps, (B[, T], H, W)) with a unit channel axis where the images have
    theirs, for products with input gradients."""
    return x[..., None] if self.layout == "NHWC" else x[..., None, :, :]

  def to_nhwc(self, x):
    return x if self.layout == "NHWC" else jnp.moveaxis(x, 1, -1)

  def from_nhwc(self, x):
    return x if self.layout == "NHWC" else jnp.moveaxis(x, -1, 1)

  @property
  def layer(self) -> LayerRef:
    return self.refs[0]

  def zeros(self, i: int = 0):
    """Zeros shaped like activation `i`, varying over the same manual mesh axes as
    the images: under ``shard_map`` an unvarying zero would make the transpose sum
    its cotangent over devices, silently mixing examples."""
    z = jnp.zeros(self.infos[i].shape, self.infos[i].dtype)
    axes = _varying_axes(self.images)
    return jax.lax.pcast(z, axes, to="varying") if axes else z

  def run(self, x, edit, i: int = 0):
    return run(self.apply_fn, self.variables, x, self.refs[i], edit)

  def cotangent(self, target_fn, output):
    """The output cotangent(s) of the target scores, and the targets used. With
    (B, T) targets the cotangent leaves carry a leading T axis."""
    targets = (default_targets(output, self.batch, target_fn) if self.targets is None
               else self.targets)
    if not self.multi:
      return score_cotangent(target_fn, output, targets, self.batch), targets
    cts = jax.vmap(lambda t: score_cotangent(target_fn, output, t, self.batch),
                   in_axes=1)(targets)
    return cts, targets

  def pullback(self, vjp, ct):
    """``vjp(ct)``, vmapped over the T cotangents when there are several."""
    return jax.vmap(vjp)(ct) if self.multi else vjp(ct)

  def grid(self, x):
    """The layer's activation (or its gradient) as (B, h, w, C): `reshape` applied
    (token grids of transformers), vmapped over a leading T axis when multi."""
    if self.reshape is None:
      return x
    return jax.vmap(self.reshape)(x) if self.multi else self.reshape(x)


def _check_fits(info, reshape, size, layout) -> None:
  """A layer's (h, w) larger than the images' (H, W) cannot come from them: the
  layout of the images or of the activations is not what was declared."""
  grid = jax.eval_shape(reshape, jax.ShapeDtypeStruct(info.shape, info.dtype)).shape \
      if reshape is not None else info.shape
  if grid[1] > size[0] or grid[2] > size[1]:
    other = "NCHW" if layout == "NHWC" else "NHWC"
    raise LayerShapeError(
        f"layer {str(LayerRef(info.path, info.call, info.method))!r}: its activation "
        f"{info.shape} read as (B, h, w, C) has a larger grid {tuple(grid[1:3])} than "
        f"the images' (H, W) = {size} under image_layout={layout!r}. The images or "
        f"the activations are in another layout: for channels-first images and "
        f"activations (Equinox, PyTorch style) pass image_layout={other!r}"
        + ("" if layout == "NHWC" else ", or reshape=... for activations of another "
           "layout") + ".")


def adapt(apply_fn, params, layer):
  """The model's adapter, its params and the parsed layer(s) for what the user gave."""
  if isinstance(layer, list) and not layer:
    raise LayerNotFoundError("layer: expected a layer or a non-empty list of layers; "
                             "got [].")
  adapter, params = pick(apply_fn, params)
  adapter, layer = adapter.parse_layer(layer)
  return adapter, params, layer
