"""Smoothing for any explainer: SmoothGrad-style noise and test-time augmentation.

Both wrap an explainer (either API form) and average its maps: the map fields
(``cam_raw``, ``guided``, ``guided_gradcam``) are averaged after mapping each
sample back to the original frame, ``cam`` is the per-image min-max normalisation
of the averaged upsampled map, and ``logits``/``targets`` come from the clean
images (the explained classes are fixed by the clean prediction unless given).
"""

from __future__ import annotations

from typing import Callable, Sequence

import jax
import jax.numpy as jnp

from gradcam_jax._errors import ArgumentError, check_count
from gradcam_jax._explainer import Explainer, as_explainer
from gradcam_jax._layout import Layout, check_layout, resolve_layout
from gradcam_jax._postprocess import normalize
from gradcam_jax._result import Explanation

__all__ = ["noise_tunnel", "augment"]


def _renormalised(cam, eps, rank: int):
  """(..., *spatial) maps of `rank` spatial axes, each min-max normalised."""
  if cam is None:
    return None
  flat = cam.reshape(-1, *cam.shape[-rank:])
  return normalize(flat, eps, tuple(range(1, rank + 1))).reshape(cam.shape)


def _mean(stacked: Explanation, clean: Explanation, eps: float, rank: int) -> Explanation:
  def avg(x):  # an array, or a tuple of them (cam_raw of several layers)
    return None if x is None else jax.tree_util.tree_map(lambda v: jnp.mean(v, 0), x)

  valid = None if stacked.valid is None else stacked.valid.all(axis=0)
  return Explanation(
    _renormalised(avg(stacked.cam), eps, rank),
    avg(stacked.cam_raw),
    avg(stacked.guided),
    avg(stacked.guided_gradcam),
    clean.logits,
    clean.targets,
    valid,
    avg(stacked.attribution),
    avg(stacked.delta),
  )


def noise_tunnel(
  explain: Callable,
  *,
  n: int = 8,
  sigma: float = 0.15,
  batch_size: int | None = None,
  eps: float = 1e-7,
) -> Explainer:
  """SmoothGrad-style smoothing of any explainer.

  Averages the explanations of `n` copies of each image with Gaussian noise of
  standard deviation ``sigma * (max - min)`` of that image. The returned explainer
  (same form as `explain`; a plain function is taken as ``explain(images,
  targets=None)``) takes the explainer's arguments plus a keyword ``key`` (a PRNG
  key), so results are reproducible from the key. The `n` samples run as ``jax.lax.map`` over
  chunks of `batch_size` (None: all in one vmapped pass).

  Example:
    >>> import jax, jax.numpy as jnp
    >>> import gradcam_jax as gcj
    >>> split = gcj.Split(lambda p, x: jax.nn.relu(x * p), lambda p, a: a.mean((1, 2)))
    >>> smooth = gcj.noise_tunnel(gcj.gradcam(split, jnp.float32(2.0)), n=4, sigma=0.1)
    >>> smooth(jnp.ones((1, 4, 4, 3)), key=jax.random.key(0)).cam.shape
    (1, 4, 4)

  References:
    Smilkov et al., "SmoothGrad: removing noise by adding noise", 2017.
  """

  check_count("noise_tunnel: n", n)
  check_count("noise_tunnel: batch_size", batch_size, allow_none=True)
  if not sigma >= 0:
    raise ArgumentError(f"noise_tunnel: sigma: expected a number >= 0; got {sigma!r}.")

  explain = as_explainer(explain)

  def smoothed(params, images, targets=None, *, key=None):
    if key is None:
      raise ArgumentError(
        "noise_tunnel: expected a PRNG key, e.g. "
        "smooth(images, key=jax.random.key(0)); got none."
      )
    # the noise comes from `key`; an explainer inside that takes a key too (another
    # noise_tunnel) gets keys derived from it: one for the clean images, one per sample
    inner_key = jax.random.fold_in(key, 1)
    clean = explain.with_key(jax.random.fold_in(inner_key, n))(params, images, targets)
    targets = clean.targets
    every = tuple(range(1, images.ndim))
    span = images.max(axis=every, keepdims=True) - images.min(axis=every, keepdims=True)
    noise = jax.random.normal(key, (n, *images.shape), images.dtype) * (sigma * span)[None]

    def one(sample):
      e, i = sample
      return explain.with_key(jax.random.fold_in(inner_key, i))(params, images + e, targets)

    samples = (noise, jnp.arange(n))
    stacked = (
      jax.vmap(one)(samples)
      if batch_size is None or batch_size >= n
      else jax.lax.map(one, samples, batch_size=batch_size)
    )
    return _mean(stacked, clean, eps, images.ndim - 2)

  return explain.wrap(smoothed, f"noise_tunnel({explain.name})", takes_key=True)


def _flip(x, axis):
  return jnp.flip(x, axis=axis)


def _resize_maps(x, size):
  """Resize (..., *spatial) maps along their last len(size) axes."""
  return jax.image.resize(x, (*x.shape[: -len(size)], *size), "linear", antialias=True)


def augment(
  explain: Callable,
  *,
  flips: bool | str = True,
  scales: Sequence[float] = (1.0,),
  eps: float = 1e-7,
  image_layout: str | None = None,
) -> Explainer:
  """Test-time augmentation of any explainer: flips and rescalings.

  Each augmented batch is explained, and each map is transformed back (unflipped,
  resized to the original size) before averaging. ``flips=True`` flips the last
  spatial axis (horizontal flips of images; time reversal of signals); a string of
  the layout's spatial axis names flips each of them in turn (``"HW"``, ``"DHW"``);
  False none. Every (flip, scale) pair is one extra explanation; scales change the
  input shape, so each compiles once (the model must accept the other sizes).
  `image_layout` is the inputs' layout, as given to the explainer (None: channels
  last of their rank). Returns an explainer of the same form as `explain`.

  Example:
    >>> import jax, jax.numpy as jnp
    >>> import gradcam_jax as gcj
    >>> split = gcj.Split(lambda p, x: jax.nn.relu(x * p), lambda p, a: a.mean((1, 2)))
    >>> tta = gcj.augment(gcj.gradcam(split, jnp.float32(2.0)), flips=True, scales=(1.0, 1.5))
    >>> tta(jnp.ones((1, 4, 4, 3))).cam.shape
    (1, 4, 4)
  """
  check_layout(image_layout)
  if not isinstance(flips, (bool, str)):
    raise ArgumentError(
      f"augment: flips: expected True, False or a string of spatial axis names "
      f"('HW', 'DHW', ...); got {flips!r}."
    )
  scales = tuple(scales)
  if not scales or not all(isinstance(s, (int, float)) and s > 0 for s in scales):
    raise ArgumentError(
      f"augment: scales: expected one or more numbers > 0 (1.0 is "
      f"the image as it is); got {scales!r}."
    )

  explain = as_explainer(explain)

  def augmented(params, images, targets=None, *, key=None):
    if explain.takes_key and key is None:
      raise ArgumentError(
        f"augment({explain.name}): the explainer inside takes a PRNG key; expected "
        "key=, e.g. tta(images, key=jax.random.key(0)); got none."
      )
    layout = resolve_layout(image_layout, images)
    flipped = _flip_axes(flips, layout)

    def inner(i, x, t):  # sample i of the augmentation, with its own key if needed
      return explain.with_key(None if key is None else jax.random.fold_in(key, i))(
        params, x, t
      )

    clean = inner(0, images, targets)
    targets = clean.targets
    size = layout.spatial(images.shape)
    raw_sizes = _layer_sizes(clean.cam_raw, layout.rank)
    samples = []
    for scale in scales:
      for flip in (None, *flipped):
        if scale == 1.0 and flip is None:
          out = clean
        else:
          x = images if flip is None else _flip(images, layout.spatial_axes[flip])
          scaled = tuple(max(1, round(n * scale)) for n in size)
          if scaled != size:
            shape = list(x.shape)
            for axis, n in zip(layout.spatial_axes, scaled):
              shape[axis] = n
            x = jax.image.resize(x, tuple(shape), "linear")
          out = inner(len(samples), x, targets)
        samples.append(_back(out, flip, size, raw_sizes, layout))
    stacked = jax.tree_util.tree_map(lambda *xs: jnp.stack(xs), *samples)
    return _mean(stacked, clean, eps, layout.rank)

  return explain.wrap(augmented, f"augment({explain.name})")


def _flip_axes(flips: bool | str, layout: Layout) -> tuple[int, ...]:
  """The spatial axes (0 = first) `flips` names for `layout`."""
  if flips is True or flips is False:
    return (layout.rank - 1,) if flips else ()
  names = layout.name[1:-1] if layout.channels_last else layout.name[2:]
  bad = [c for c in flips if c not in names]
  if bad or len(set(flips)) != len(flips):
    raise ArgumentError(
      f"augment: flips: expected distinct spatial axis names of layout "
      f"{layout.name!r}, from {names!r}; got {flips!r}."
    )
  return tuple(names.index(c) for c in flips)


def _layer_sizes(cam_raw, rank: int):
  """The spatial sizes of cam_raw, or a tuple of them for several layers' maps."""
  if cam_raw is None:
    return None
  if isinstance(cam_raw, tuple):
    return tuple(r.shape[-rank:] for r in cam_raw)
  return cam_raw.shape[-rank:]


def _back(
  out: Explanation, flip: int | None, size, raw_sizes, layout: Layout
) -> Explanation:
  """Map an augmented explanation back to the original frame."""
  rank = layout.rank

  def maps(x, target):  # (..., *spatial)
    if x is None:
      return None
    x = _resize_maps(x, target) if x.shape[-rank:] != tuple(target) else x
    return x if flip is None else _flip(x, flip - rank)

  def grads(x):  # in the inputs' layout, with leading (B[, T]) axes
    if x is None:
      return None
    moved = jnp.moveaxis(x, layout.channel_index(), 0)
    return jnp.moveaxis(maps(moved, size), 0, layout.channel_index())

  raw = (
    tuple(maps(r, hw) for r, hw in zip(out.cam_raw, raw_sizes))
    if isinstance(out.cam_raw, tuple)
    else maps(out.cam_raw, raw_sizes)
  )
  return Explanation(
    maps(out.cam, size),
    raw,
    grads(out.guided),
    grads(out.guided_gradcam),
    out.logits,
    out.targets,
    out.valid,
    grads(out.attribution),
    out.delta,
  )
