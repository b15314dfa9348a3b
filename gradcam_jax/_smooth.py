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
from gradcam_jax._postprocess import normalize
from gradcam_jax._result import Explanation

__all__ = ["noise_tunnel", "augment"]


def _renormalised(cam, eps):
  if cam is None:
    return None
  flat = cam.reshape(-1, *cam.shape[-2:])
  return normalize(flat, eps).reshape(cam.shape)


def _mean(stacked: Explanation, clean: Explanation, eps: float) -> Explanation:
  def avg(x):  # an array, or a tuple of them (cam_raw of several layers)
    return None if x is None else jax.tree_util.tree_map(lambda v: jnp.mean(v, 0), x)

  valid = None if stacked.valid is None else stacked.valid.all(axis=0)
  return Explanation(
    _renormalised(avg(stacked.cam), eps),
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
    span = images.max(axis=(1, 2, 3), keepdims=True) - images.min(
      axis=(1, 2, 3), keepdims=True
    )
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
    return _mean(stacked, clean, eps)

  return explain.wrap(smoothed, f"noise_tunnel({explain.name})", takes_key=True)


def _flip(x, axis):
  return jnp.flip(x, axis=axis)


def _resize_maps(x, size):
  """Resize (..., h, w) maps or (B[, T], H, W, C) gradients along their spatial axes."""
  return jax.image.resize(x, (*x.shape[:-2], *size), "bilinear", antialias=True)


def augment(
  explain: Callable,
  *,
  flips: bool = True,
  scales: Sequence[float] = (1.0,),
  eps: float = 1e-7,
  image_layout: str = "NHWC",
) -> Explainer:
  """Test-time augmentation of any explainer: horizontal flips and rescalings.

  Each augmented batch is explained, and each map is transformed back (unflipped,
  resized to the original size) before averaging. Every (flip, scale) pair is one
  extra explanation; scales change the input shape, so each compiles once.
  `image_layout` is the images' layout, as given to the explainer. Returns an
  explainer of the same form as `explain`.

  Example:
    >>> import jax, jax.numpy as jnp
    >>> import gradcam_jax as gcj
    >>> split = gcj.Split(lambda p, x: jax.nn.relu(x * p), lambda p, a: a.mean((1, 2)))
    >>> tta = gcj.augment(gcj.gradcam(split, jnp.float32(2.0)), flips=True, scales=(1.0, 1.5))
    >>> tta(jnp.ones((1, 4, 4, 3))).cam.shape
    (1, 4, 4)
  """

  if image_layout not in ("NHWC", "NCHW"):
    raise ArgumentError(
      f"augment: image_layout: expected 'NHWC' or 'NCHW'; got {image_layout!r}."
    )
  last = image_layout == "NHWC"  # channels last: spatial axes 1, 2; else 2, 3
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

    def inner(i, x, t):  # sample i of the augmentation, with its own key if needed
      return explain.with_key(None if key is None else jax.random.fold_in(key, i))(
        params, x, t
      )

    clean = inner(0, images, targets)
    targets = clean.targets
    h, w = images.shape[1:3] if last else images.shape[2:4]
    raw_hw = _layer_sizes(clean.cam_raw)
    samples = []
    for scale in scales:
      for flip in (False, True) if flips else (False,):
        if scale == 1.0 and not flip:
          out = clean
        else:
          x = _flip(images, 2 if last else 3) if flip else images
          size = (max(1, round(h * scale)), max(1, round(w * scale)))
          if size != (h, w):
            shape = (x.shape[0], *size, x.shape[3]) if last else (*x.shape[:2], *size)
            x = jax.image.resize(x, shape, "bilinear")
          out = inner(len(samples), x, targets)
        samples.append(_back(out, flip, (h, w), raw_hw, last))
    stacked = jax.tree_util.tree_map(lambda *xs: jnp.stack(xs), *samples)
    return _mean(stacked, clean, eps)

  return explain.wrap(augmented, f"augment({explain.name})")


def _layer_sizes(cam_raw):
  """(h, w) of cam_raw, or a tuple of them for several layers' maps."""
  if cam_raw is None:
    return None
  if isinstance(cam_raw, tuple):
    return tuple(r.shape[-2:] for r in cam_raw)
  return cam_raw.shape[-2:]


def _back(out: Explanation, flip: bool, size, raw_hw, channels_last: bool) -> Explanation:
  """Map an augmented explanation back to the original frame."""

  def maps(x, target):
    if x is None:
      return None
    x = _resize_maps(x, target) if x.shape[-2:] != tuple(target) else x
    return _flip(x, -1) if flip else x

  def grads(x):
    if x is None or not channels_last:  # channels first: spatial axes already last
      return maps(x, size)
    moved = jnp.moveaxis(x, -1, 0)
    return jnp.moveaxis(maps(moved, size), 0, -1)

  raw = (
    tuple(maps(r, hw) for r, hw in zip(out.cam_raw, raw_hw))
    if isinstance(out.cam_raw, tuple)
    else maps(out.cam_raw, raw_hw)
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
