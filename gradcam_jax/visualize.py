"""Pictures of explanations (NumPy + OpenCV, at the I/O edge, outside jit).

Everything takes and returns NumPy arrays: uint8 RGB images (H, W, 3), maps in
[0, 1] (H, W), gradients (H, W, C).
"""

from __future__ import annotations

from typing import Sequence

import cv2
import numpy as np

from gradcam_jax._errors import ImageError

__all__ = ["heatmap", "overlay", "deprocess_gradient", "panel", "grid", "save"]


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
