"""Faithfulness and localisation metrics for saliency maps.

Jittable where the maths allows (deletion/insertion, Average Drop/Increase, ROAD,
pointing game); box localisation uses OpenCV's connected components on the host.
All functions take a batch: images (B, H, W, C) as the model expects them, maps
(B, H, W) (higher = more important) and targets (B,). Signals (B, L, C) with maps
(B, L) and volumes (B, D, H, W, C) with maps (B, D, H, W) work the same way (images
channels last); box localisation is 2-D only and says so.

``score_fn(images) -> (B, num_classes)`` probabilities is what the metrics query;
:func:`probabilities` builds it from an ``apply_fn`` and variables.
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from gradcam_jax._errors import ArgumentError
from gradcam_jax._ranks_blur import gaussian_kernel, ranks

__all__ = [
  "Curve",
  "probabilities",
  "deletion",
  "insertion",
  "average_drop_increase",
  "road",
  "pointing_game",
  "box_from_map",
  "box_iou",
  "localisation",
  "blurred",
  "auc",
]


class Curve(NamedTuple):
  """A perturbation curve: the class probability after removing (deletion) or
  inserting (insertion) a fraction of the pixels in map order.

  Attributes:
    fractions: (S+1,) from 0 to 1, both endpoints included.
    scores: (B, S+1) probability of each image's target class.
    auc: (B,) trapezoidal area under the curve over [0, 1].
  """

  fractions: jax.Array
  scores: jax.Array
  auc: jax.Array


def probabilities(apply_fn, variables) -> Callable[[jax.Array], jax.Array]:
  """``images -> softmax(apply_fn(variables, images))`` in float32."""
  return lambda x: jax.nn.softmax(apply_fn(variables, x).astype(jnp.float32), axis=-1)


def auc(fractions: jax.Array, scores: jax.Array) -> jax.Array:
  """Trapezoidal area under ``scores`` (B, S+1) over ``fractions`` (S+1,)."""
  widths = jnp.diff(fractions)
  return jnp.sum(widths[None, :] * (scores[:, 1:] + scores[:, :-1]) / 2, axis=1)


def blurred(images: jax.Array, sigma: float = 5.0) -> jax.Array:
  """A Gaussian-blurred copy of the images (the "blur" baseline of Petsiuk et al.):
  channels last, any spatial rank ((B, L, C), (B, H, W, C), (B, D, H, W, C)), blurred
  along every spatial axis, the kernel renormalised at the borders."""
  k = gaussian_kernel(sigma, max(1, int(3 * sigma)))
  x = images.astype(jnp.float32)
  for axis in range(1, images.ndim - 1):
    x = _blur_axis(x, k, axis) / _blur_axis(jnp.ones_like(x[:1, ..., :1]), k, axis)
  return x.astype(images.dtype)


def _blur_axis(x: jax.Array, k: jax.Array, axis: int) -> jax.Array:
  """`x` convolved with the 1-D kernel `k` along `axis` ("SAME", zero padded)."""
  moved = jnp.moveaxis(x, axis, -1)
  flat = moved.reshape(-1, 1, moved.shape[-1])
  out = jax.lax.conv_general_dilated(flat, k.reshape(1, 1, -1), (1,), "SAME")
  return jnp.moveaxis(out.reshape(moved.shape), -1, axis)


def _check_maps(images, maps, where: str) -> None:
  """Maps must be (B, *spatial) of channels-last images (B, *spatial, C)."""
  if tuple(maps.shape) != tuple(images.shape[:-1]):
    raise ArgumentError(
      f"{where}: expected maps of shape {tuple(images.shape[:-1])}, the images' "
      f"(B, *spatial) without their channel axis (images channels last: (B, L, C), "
      f"(B, H, W, C) or (B, D, H, W, C)); got maps {tuple(maps.shape)} for images "
      f"{tuple(images.shape)}."
    )


def _ranks(maps: jax.Array) -> jax.Array:
  """Rank of each pixel in descending map order (0 = most important), (B, positions)."""
  return ranks(-maps.reshape(maps.shape[0], -1))


def _perturbation_curve(
  score_fn, images, maps, targets, baseline, steps, insert, batch_size
):
  _check_maps(images, maps, "insertion" if insert else "deletion")
  ranks = _ranks(maps).reshape(*maps.shape, 1)
  if isinstance(baseline, (int, float)):
    baseline = jnp.full_like(images, baseline)
  fractions = jnp.linspace(0.0, 1.0, steps + 1)
  counts = jnp.round(fractions * ranks[0].size).astype(jnp.int32)

  def at(count):
    chosen = ranks < count  # the `count` most important pixels
    x = (
      jnp.where(chosen, images, baseline) if insert else jnp.where(chosen, baseline, images)
    )
    probs = score_fn(x)
    return jnp.take_along_axis(probs, targets[:, None], axis=1)[:, 0]

  scores = (
    jax.vmap(at)(counts)
    if batch_size is None
    else jax.lax.map(at, counts, batch_size=batch_size)
  ).T
  return Curve(fractions, scores, auc(fractions, scores))


def deletion(
  score_fn,
  images,
  maps,
  targets,
  *,
  baseline=0.0,
  steps: int = 16,
  batch_size: int | None = None,
) -> Curve:
  """Deletion curve (Petsiuk et al. 2018): replace the most important pixels first by
  the baseline; a faithful map makes the probability fall fast (low AUC is good).

  Args:
    score_fn: ``images -> (B, num_classes)`` probabilities.
    baseline: a number (constant image) or an array like `images` (e.g.
      :func:`blurred`); recorded by the caller.
    steps: the curve has ``steps + 1`` points, 0% and 100% removed included.
    batch_size: steps per chunk of forward passes (None: all in one vmapped pass).

  References:
    Petsiuk, Das & Saenko, "RISE: Randomized Input Sampling for Explanation of
    Black-box Models", BMVC 2018.
  """
  return _perturbation_curve(
    score_fn, images, maps, targets, baseline, steps, False, batch_size
  )


def insertion(
  score_fn,
  images,
  maps,
  targets,
  *,
  baseline=0.0,
  steps: int = 16,
  batch_size: int | None = None,
) -> Curve:
  """Insertion curve (Petsiuk et al. 2018): start from the baseline and insert the
  most important pixels first; a faithful map makes the probability rise fast (high
  AUC is good). Arguments as :func:`deletion`."""
  return _perturbation_curve(
    score_fn, images, maps, targets, baseline, steps, True, batch_size
  )


def average_drop_increase(score_fn, images, maps, targets) -> tuple[jax.Array, jax.Array]:
  """Average Drop (%) and Increase in Confidence (%) (Chattopadhay et al. 2018).

  The explanation map ``E = image * map`` (maps in [0, 1]) is scored against the
  full image: with ``Y`` the full image's probability of the class and ``O`` the
  explanation's, Average Drop is ``100 * mean(max(0, Y - O) / Y)`` and Increase in
  Confidence ``100 * mean(O > Y)``. An image with ``Y = 0`` (zero confidence)
  cannot drop: it contributes 0 to the drop and counts as an increase if ``O > 0``.

  Returns:
    (average_drop, increase_in_confidence), scalars in percent.

  References:
    Chattopadhay et al., "Grad-CAM++", WACV 2018, section 5.
  """
  _check_maps(images, maps, "average_drop_increase")
  take = lambda p: jnp.take_along_axis(p, targets[:, None], axis=1)[:, 0]
  y = take(score_fn(images))
  o = take(score_fn(images * maps[..., None].astype(images.dtype)))
  drop = jnp.where(y > 0, jnp.maximum(y - o, 0) / jnp.where(y > 0, y, 1), 0.0)
  return 100 * jnp.mean(drop), 100 * jnp.mean((o > y).astype(jnp.float32))


def _impute(
  images: jax.Array, removed: jax.Array, key, noise: float, iterations: int
) -> jax.Array:
  """Noisy linear imputation: each removed pixel becomes the average of its 2 * rank
  neighbours (four in an image; two in a signal, six in a volume: a discrete Laplace
  equation with the kept pixels as boundary), solved on the device by Jacobi
  iterations, plus Gaussian noise of std `noise`."""
  mask = removed[..., None].astype(images.dtype)
  kept = images * (1 - mask)
  space = tuple(range(1, images.ndim - 1))
  fill = jnp.sum(kept, axis=space, keepdims=True) / jnp.maximum(
    jnp.sum(1 - mask, axis=space, keepdims=True), 1
  )
  x = kept + mask * fill
  inner = tuple(slice(1, -1) for _ in space)

  def step(x, _):
    p = jnp.pad(x, ((0, 0), *[(1, 1)] * len(space), (0, 0)), mode="edge")
    total = jnp.zeros_like(x)
    for i in range(len(space)):
      for lo, hi in ((None, -2), (2, None)):
        index = list(inner)
        index[i] = slice(lo, hi)
        total = total + p[(slice(None), *index)]
    return kept + mask * total / (2 * len(space)), None

  x, _ = jax.lax.scan(step, x, None, length=iterations)
  return x + mask * noise * jax.random.normal(key, images.shape, images.dtype)


def road(
  score_fn,
  images,
  maps,
  targets,
  *,
  key,
  percentiles=(0.1, 0.3, 0.5, 0.7, 0.9),
  order: str = "morf",
  noise: float = 0.01,
  iterations: int = 100,
):
  """ROAD: RemOve And Debias (Rong et al. 2022), MoRF or LeRF.

  At each percentile p, the fraction p of pixels that are most (``"morf"``) or least
  (``"lerf"``) relevant are removed and imputed by noisy linear imputation (see
  :func:`_impute`), and the class probability is recorded. MoRF: lower is better;
  LeRF: higher is better.

  Returns:
    (B, len(percentiles)) probabilities.

  References:
    Rong et al., "A Consistent and Efficient Evaluation Strategy for Attribution
    Methods", ICML 2022.
  """
  if order not in ("morf", "lerf"):
    raise ArgumentError(f"road: order must be 'morf' or 'lerf'; got {order!r}.")
  _check_maps(images, maps, "road")
  ranks = _ranks(maps if order == "morf" else -maps).reshape(maps.shape)
  keys = jax.random.split(key, len(percentiles))
  out = []
  for p, k in zip(percentiles, keys):
    removed = ranks < round(p * ranks[0].size)
    x = _impute(images, removed, k, noise, iterations)
    out.append(jnp.take_along_axis(score_fn(x), targets[:, None], axis=1)[:, 0])
  return jnp.stack(out, axis=1)


def pointing_game(maps, boxes, tolerance: int = 0) -> jax.Array:
  """Hit (1.0) when the map's maximum lies in the ground-truth box, miss (0.0) else.

  Args:
    maps: (B, H, W); or (B, L) for signals, (B, D, H, W) for volumes.
    boxes: (B, 4) ``(x0, y0, x1, y1)`` with exclusive ends, or (B, N, 4) for several
      boxes of the explained class (rows of -1 are ignored). In any rank the
      coordinates are the starts then the ends, innermost axis first: ``(x0, x1)``
      intervals for signals, ``(x0, y0, z0, x1, y1, z1)`` boxes for volumes (z the
      depth axis D).
    tolerance: pixels by which every box is grown on each side.

  References:
    Zhang et al., "Top-down Neural Attention by Excitation Backprop", ECCV 2016.
  """
  boxes = jnp.asarray(boxes)
  boxes = boxes[:, None] if boxes.ndim == 2 else boxes
  rank = maps.ndim - 1
  if boxes.shape[-1] != 2 * rank:
    raise ArgumentError(
      f"pointing_game: expected boxes of {2 * rank} coordinates for maps of spatial "
      f"rank {rank} (starts then ends, innermost axis first); got boxes of shape "
      f"{tuple(boxes.shape)} for maps {tuple(maps.shape)}."
    )
  flat = jnp.argmax(maps.reshape(maps.shape[0], -1), axis=1)
  where = jnp.unravel_index(flat, maps.shape[1:])[::-1]  # innermost axis first
  inside = boxes[..., rank] > boxes[..., 0]  # rows of -1 are not boxes
  for i, at in enumerate(where):
    inside &= (at[:, None] >= boxes[..., i] - tolerance) & (
      at[:, None] < boxes[..., rank + i] + tolerance
    )
  return jnp.any(inside, axis=1).astype(jnp.float32)


def box_from_map(cam, threshold: float = 0.15) -> np.ndarray:
  """The Grad-CAM paper's box: threshold the map at `threshold` times its maximum and
  box the largest connected component (8-connectivity). Returns (x0, y0, x1, y1),
  exclusive ends; all -1 for an all-zero map. Runs on the host (OpenCV); 2-D maps
  only."""
  import cv2

  cam = np.asarray(cam, np.float32)
  if cam.ndim != 2:
    raise ArgumentError(
      f"box_from_map: expected one 2-D (H, W) map (boxes of connected components are "
      f"defined for images here); got shape {cam.shape}. For signals and volumes "
      "use pointing_game, deletion, insertion or road, which take any rank."
    )
  if cam.max() <= 0:
    return np.full(4, -1, np.int32)
  mask = (cam >= threshold * cam.max()).astype(np.uint8)
  n, _, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
  best = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
  x, y, bw, bh = (
    int(stats[best, k])
    for k in (cv2.CC_STAT_LEFT, cv2.CC_STAT_TOP, cv2.CC_STAT_WIDTH, cv2.CC_STAT_HEIGHT)
  )
  return np.array([x, y, x + bw, y + bh], np.int32)


def box_iou(a, b) -> float:
  """Intersection over union of two (x0, y0, x1, y1) boxes with exclusive ends."""
  ix = max(0, min(a[2], b[2]) - max(a[0], b[0]))
  iy = max(0, min(a[3], b[3]) - max(a[1], b[1]))
  inter = ix * iy
  union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
  return inter / union if union > 0 else 0.0


def localisation(maps, boxes, threshold: float = 0.15, iou: float = 0.5) -> np.ndarray:
  """Box localisation as in the Grad-CAM paper: 1.0 where the box of the map's
  largest thresholded component has IoU >= `iou` with the ground-truth box."""
  maps = np.asarray(maps)
  return np.array(
    [
      float(box_iou(box_from_map(m, threshold), gt) >= iou)
      for m, gt in zip(maps, np.asarray(boxes))
    ],
    np.float32,
  )
