"""The layout of the inputs (:class:`Layout`): signals (B, L, C), images (B, H, W, C)
and volumes or clips (B, D, H, W, C), channels last or first, named as JAX names
convolution dimensions (``"NWC"``, ``"NCHW"``, ``"NDHWC"``, ...).

The explainers work on channels-last grids (B, *spatial, C) of any spatial rank; a
:class:`Layout` says where the images' spatial axes and channel axis are, and moves
arrays between the images' own layout and that grid.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from gradcam_jax._errors import ArgumentError, ImageError

__all__ = ["LAYOUTS", "Layout", "check_layout", "resolve_layout"]

LAYOUTS = ("NWC", "NCW", "NHWC", "NCHW", "NDHWC", "NCDHW")
_KIND = {1: "a signal", 2: "an image", 3: "a volume or clip"}


def check_layout(image_layout) -> None:
  """`image_layout` must be None (channels last, of the inputs' rank) or a name in
  :data:`LAYOUTS`."""
  if image_layout is not None and image_layout not in LAYOUTS:
    raise ArgumentError(
      f"image_layout: expected None (channels last, of the inputs' rank) or one of "
      f"{LAYOUTS} (channels last, as Flax; channels first, as Equinox and PyTorch); "
      f"got {image_layout!r}."
    )


class Layout(NamedTuple):
  """One of :data:`LAYOUTS`, with the arithmetic of its axes."""

  name: str

  @property
  def rank(self) -> int:
    """The number of spatial axes: 1, 2 or 3."""
    return len(self.name) - 2

  @property
  def channels_last(self) -> bool:
    return self.name.endswith("C")

  @property
  def spatial_axes(self) -> tuple[int, ...]:
    """The images' spatial axes."""
    first = 1 if self.channels_last else 2
    return tuple(range(first, first + self.rank))

  def shape_text(self) -> str:
    """``"(B, H, W, C)"`` and the like."""
    return "(" + ", ".join("B" if c == "N" else c for c in self.name) + ")"

  def grid_text(self) -> str:
    """The activations' channels-last grid: ``"(B, h, w, C)"`` and the like."""
    dims = {1: "w", 2: "h, w", 3: "d, h, w"}[self.rank]
    return f"(B, {dims}, C)"

  def spatial(self, shape) -> tuple[int, ...]:
    """The spatial sizes of an array of this layout."""
    return tuple(int(shape[a]) for a in self.spatial_axes)

  def to_last(self, x: jax.Array) -> jax.Array:
    """An array of this layout as (B, *spatial, C) (leading axes before B kept:
    the channel axis is counted from the end)."""
    return x if self.channels_last else jnp.moveaxis(x, -(self.rank + 1), -1)

  def from_last(self, x: jax.Array) -> jax.Array:
    return x if self.channels_last else jnp.moveaxis(x, -1, -(self.rank + 1))

  def channel_axis(self, maps: jax.Array) -> jax.Array:
    """Maps (..., *spatial) with a unit channel axis where the images have theirs,
    for products with input gradients."""
    return jnp.expand_dims(maps, self.channel_index())

  def channel_index(self) -> int:
    """The channel axis, counted from the end (so leading T axes do not move it)."""
    return -1 if self.channels_last else -(self.rank + 1)


def channels_last_of(rank: int) -> Layout:
  return Layout({1: "NWC", 2: "NHWC", 3: "NDHWC"}[rank])


def resolve_layout(image_layout, images) -> Layout:
  """The layout of `images`: `image_layout` checked against their rank, or the
  channels-last layout of their rank when it is None."""
  ndim = getattr(images, "ndim", None)
  if image_layout is None:
    if ndim not in (3, 4, 5):
      hint = " For one example, add a batch axis: images[None]." if ndim in (2, 3) else ""
      raise ImageError(
        f"images: expected a batch of rank 3, 4 or 5: (B, L, C) signals, (B, H, W, C) "
        f"images or (B, D, H, W, C) volumes or clips (channels last; image_layout= "
        f"names another layout); got shape {tuple(images.shape)}.{hint}"
      )
    return channels_last_of(ndim - 2)
  layout = Layout(image_layout)
  if ndim != len(image_layout):
    fits = [n for n in LAYOUTS if len(n) == ndim]
    hint = (
      " For one example, add a batch axis: images[None]."
      if ndim == len(image_layout) - 1
      else ""
    )
    raise ImageError(
      f"images: image_layout={image_layout!r} expects {_KIND[layout.rank]} batch of "
      f"rank {len(image_layout)}, {layout.shape_text()}; got shape "
      f"{tuple(images.shape)}"
      + (f" (rank {ndim}: image_layout {' or '.join(map(repr, fits))})" if fits else "")
      + f".{hint}"
    )
  return layout
