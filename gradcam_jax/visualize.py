"""Pictures of explanations (NumPy + OpenCV, at the I/O edge, outside jit).

Everything takes and returns NumPy arrays: uint8 RGB images (H, W, 3), maps in
[0, 1] (H, W), gradients (H, W, C). Signals, volumes and clips have their own
pictures: :func:`signal_overlay` (the signal drawn over its heat as a colour band),
:func:`volume_view` (three orthogonal slices through the map's maximum),
:func:`volume_mosaic` (axial slices) and :func:`clip_frames` (a row of frames, or
frames for :func:`save_animation`).
"""

from __future__ import annotations

from typing import Sequence

import cv2
import numpy as np

from gradcam_jax._errors import ImageError

__all__ = [
  "heatmap",
  "overlay",
  "deprocess_gradient",
  "panel",
  "grid",
  "save",
  "signal_overlay",
  "volume_view",
  "volume_mosaic",
  "clip_frames",
  "save_animation",
]


def heatmap(cam, colormap: int = cv2.COLORMAP_JET) -> np.ndarray:
  """A [0, 1] map (H, W) as a uint8 RGB colour map (blue low, red high)."""
  cam = np.clip(np.asarray(cam, np.float32), 0, 1)
  bgr = cv2.applyColorMap((cam * 255).round().astype(np.uint8), colormap)
  return bgr[..., ::-1].copy()


def overlay(image, cam, alpha: float = 0.5, colormap: int = cv2.COLORMAP_JET) -> np.ndarray:
  """Blend the colour map of `cam` over a uint8 RGB `image` (resized to match)."""
  image = np.asarray(image)
  if image.dtype != np.uint8 or image.ndim != 3 or image.shape[-1] != 3:
    raise ImageError(
      f"overlay: expected a uint8 RGB image (H, W, 3); got {image.dtype} {image.shape}."
    )
  cam = np.asarray(cam, np.float32)
  if cam.shape != image.shape[:2]:
    cam = cv2.resize(cam, image.shape[1::-1], interpolation=cv2.INTER_LINEAR)
  mixed = (1 - alpha) * image.astype(np.float32) + alpha * heatmap(cam, colormap)
  return mixed.round().clip(0, 255).astype(np.uint8)


def deprocess_gradient(grad, eps: float = 1e-5) -> np.ndarray:
  """A gradient (H, W, C) as a uint8 picture: standardise, scale by 0.1, centre at
  0.5, clip to [0, 1] (the usual guided-backprop display, as in the Keras code).

  Grey (128) means zero gradient. A 1-channel gradient is repeated to RGB.
  """
  g = np.asarray(grad, np.float64)
  g = (g - g.mean()) / (g.std() + eps) * 0.1 + 0.5
  out = (np.clip(g, 0, 1) * 255).round().astype(np.uint8)
  return np.repeat(out, 3, axis=-1) if out.shape[-1] == 1 else out


def _titled(image: np.ndarray, title: str, scale: int) -> np.ndarray:
  big = cv2.resize(image, None, fx=scale, fy=scale, interpolation=cv2.INTER_NEAREST)
  bar = np.full((18, big.shape[1], 3), 255, np.uint8)
  cv2.putText(
    bar, title, (3, 13), cv2.FONT_HERSHEY_SIMPLEX, 0.42, (0, 0, 0), 1, cv2.LINE_AA
  )
  return np.concatenate([bar, big], axis=0)


def panel(
  images: Sequence[np.ndarray], titles: Sequence[str], scale: int = 1, gap: int = 4
) -> np.ndarray:
  """Pictures side by side, each with a title above, separated by white gaps."""
  tiles = [_titled(np.asarray(im), t, scale) for im, t in zip(images, titles)]
  h = max(t.shape[0] for t in tiles)
  sep = np.full((h, gap, 3), 255, np.uint8)
  row = []
  for tile in tiles:
    pad = np.full((h - tile.shape[0], tile.shape[1], 3), 255, np.uint8)
    row += [np.concatenate([tile, pad], 0), sep]
  return np.concatenate(row[:-1], axis=1)


def grid(rows: Sequence[np.ndarray], gap: int = 6) -> np.ndarray:
  """Stack panels vertically (padded to the widest) with white gaps."""
  w = max(r.shape[1] for r in rows)
  out = []
  for r in rows:
    pad = np.full((r.shape[0], w - r.shape[1], 3), 255, np.uint8)
    out += [np.concatenate([r, pad], 1), np.full((gap, w, 3), 255, np.uint8)]
  return np.concatenate(out[:-1], axis=0)


def save(path, image) -> None:
  """Write a uint8 RGB picture (H, W, 3), or grey (H, W), to `path` (PNG, JPEG, ...
  by its suffix). ImageError when it is not such a picture or cannot be written."""
  image = np.asarray(image)
  if image.dtype != np.uint8 or not (
    image.ndim == 2 or (image.ndim == 3 and image.shape[-1] == 3)
  ):
    raise ImageError(
      f"save {path}: expected a uint8 RGB (H, W, 3) or grey (H, W) picture; got "
      f"{image.dtype} {image.shape}."
    )
  try:
    ok = cv2.imwrite(str(path), image if image.ndim == 2 else image[..., ::-1])
  except cv2.error as err:
    raise ImageError(f"save {path}: OpenCV cannot write it: {err}") from None
  if not ok:
    raise ImageError(f"save {path}: could not write it (a folder that does not exist?).")


# -- signals, volumes, clips ----------------------------------------------------------


def _resample(x: np.ndarray, n: int) -> np.ndarray:
  """A 1-D array linearly resampled to `n` points (half-pixel centres, as the maps)."""
  return cv2.resize(
    np.asarray(x, np.float32)[None], (n, 1), interpolation=cv2.INTER_LINEAR
  )[0]


def signal_overlay(
  signal,
  cam,
  width: int = 512,
  height: int = 160,
  band: int = 24,
  colormap: int = cv2.COLORMAP_JET,
) -> np.ndarray:
  """A signal (L,) or (L, C) drawn as lines (one per channel, shades of grey) over
  a white plot, with its [0, 1] map (L,) as a colour band underneath, both stretched
  to `width` pixels. Returns a uint8 RGB picture (height + band, width, 3)."""
  x = np.asarray(signal, np.float32)
  x = x[:, None] if x.ndim == 1 else x
  cam = np.asarray(cam, np.float32)
  if x.ndim != 2 or cam.ndim != 1:
    raise ImageError(
      f"signal_overlay: expected a signal (L,) or (L, C) and a map (L,); got "
      f"{x.shape} and {cam.shape}."
    )
  canvas = np.full((height, width, 3), 255, np.uint8)
  lo, hi = float(x.min()), float(x.max())
  span = hi - lo if hi > lo else 1.0
  for c in range(x.shape[1]):
    y = _resample(x[:, c], width)
    rows = (height - 4) - (y - lo) / span * (height - 8)
    points = np.stack([np.arange(width), rows], 1).round().astype(np.int32)
    shade = int(60 * c / max(1, x.shape[1] - 1))
    cv2.polylines(canvas, [points[:, None]], False, (shade, shade, shade), 1, cv2.LINE_AA)
  strip = heatmap(np.repeat(_resample(cam, width)[None], band, 0), colormap)
  return np.concatenate([canvas, strip], 0)


def _grey(volume: np.ndarray, window) -> np.ndarray:
  """A volume (..., ) as uint8 grey in `window` (lo, hi); its own range when None."""
  v = np.asarray(volume, np.float32)
  lo, hi = (float(v.min()), float(v.max())) if window is None else window
  return (
    (np.clip((v - lo) / (hi - lo if hi > lo else 1.0), 0, 1) * 255).round().astype(np.uint8)
  )


def _rgb(grey: np.ndarray) -> np.ndarray:
  return np.repeat(grey[..., None], 3, -1)


def _volume_and_map(volume, cam, where: str) -> tuple[np.ndarray, np.ndarray]:
  v = np.asarray(volume)
  v = v.mean(-1) if v.ndim == 4 else v  # channels last: their mean, for display
  cam = np.asarray(cam, np.float32)
  if v.ndim != 3 or cam.shape != v.shape:
    raise ImageError(
      f"{where}: expected a volume (D, H, W) or (D, H, W, C) and a map (D, H, W) of "
      f"its size; got {np.asarray(volume).shape} and {cam.shape}."
    )
  return v, cam


def volume_view(volume, cam, alpha: float = 0.5, scale: int = 1, window=None) -> np.ndarray:
  """Three orthogonal slices through the map's maximum, each the volume's slice in
  grey with the map's overlaid: axial (D fixed: H x W), coronal (H fixed: D x W) and
  sagittal (W fixed: D x H), side by side with their indices as titles.

  Args:
    volume: (D, H, W) or (D, H, W, C) (channels averaged for display).
    cam: (D, H, W) in [0, 1], as ``explanation.cam[i]``.
    window: (lo, hi) display window of the volume's values (CT: e.g. (-1000, 400));
      None uses the volume's own range.
  """
  v, cam = _volume_and_map(volume, cam, "volume_view")
  grey = _grey(v, window)
  d, h, w = np.unravel_index(int(np.argmax(cam)), cam.shape)
  views = [
    (grey[d], cam[d], f"axial d={d}"),
    (grey[:, h], cam[:, h], f"coronal h={h}"),
    (grey[:, :, w], cam[:, :, w], f"sagittal w={w}"),
  ]
  return panel(
    [overlay(_rgb(g), c, alpha) for g, c, _ in views], [t for *_, t in views], scale
  )


def volume_mosaic(
  volume, cam, count: int = 12, columns: int = 6, alpha: float = 0.5, window=None
) -> np.ndarray:
  """`count` axial slices (evenly spaced along D) of the volume with the map
  overlaid, in a grid of `columns`, each titled with its index."""
  v, cam = _volume_and_map(volume, cam, "volume_mosaic")
  grey = _grey(v, window)
  picks = np.unique(
    np.linspace(0, v.shape[0] - 1, min(count, v.shape[0])).round().astype(int)
  )
  tiles = [overlay(_rgb(grey[i]), cam[i], alpha) for i in picks]
  rows = [
    panel(tiles[i : i + columns], [f"d={j}" for j in picks[i : i + columns]])
    for i in range(0, len(tiles), columns)
  ]
  return grid(rows)


def clip_frames(clip, cam, alpha: float = 0.5, every: int = 1) -> list[np.ndarray]:
  """Each frame of a uint8 RGB clip (T, H, W, 3) with its map (T, H, W) overlaid
  (every `every`-th frame): :func:`panel` them for a row, or write them with
  :func:`save_animation`."""
  clip, cam = np.asarray(clip), np.asarray(cam, np.float32)
  if clip.ndim != 4 or cam.ndim != 3 or cam.shape[0] != clip.shape[0]:
    raise ImageError(
      f"clip_frames: expected a clip (T, H, W, 3) and maps (T, H, W) of as many "
      f"frames; got {clip.shape} and {cam.shape}."
    )
  return [overlay(clip[t], cam[t], alpha) for t in range(0, clip.shape[0], every)]


def save_animation(path, frames: Sequence[np.ndarray], fps: float = 8.0) -> None:
  """Write uint8 RGB frames as an animated GIF or WebP (by `path`'s suffix), looping."""
  from PIL import Image

  pictures = [Image.fromarray(np.asarray(f)) for f in frames]
  if not pictures:
    raise ImageError(f"save_animation {path}: expected at least one frame; got none.")
  try:
    pictures[0].save(
      str(path),
      save_all=True,
      append_images=pictures[1:],
      duration=int(round(1000 / fps)),
      loop=0,
    )
  except (OSError, ValueError) as err:
    raise ImageError(f"save_animation {path}: could not write it: {err}") from None
