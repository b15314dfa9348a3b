"""The job's inputs, by what the model explains (``ZooModel.media``): which files a
folder search takes, and each file read, checked and fitted to the model's input.

- images: any image file (:func:`gradcam_jax.io.read_oriented`), fitted by
  ``--resize``;
- signals: ``.npy`` arrays (L,) or (L, C);
- volumes: ``.npy`` arrays and NIfTI volumes (``.nii``, ``.nii.gz``), (D, H, W) or
  (D, H, W, C); a NIfTI volume's affine and voxel grid are kept, so that its map is
  written back over the scan;
- video: clips (``.mp4``, ``.avi``, ``.mov``, ``.mkv``), T frames sampled evenly
  (:func:`gradcam_jax.media.read_clip`), or uint8 ``.npy`` arrays (T, H, W, 3); each
  frame fitted by ``--resize`` as an image is.

Signals and volumes are resampled to the model's size axis by axis (area averaging
to shrink, linear with half-pixel centres to enlarge: what ``--resize squash`` does
to images). A file that cannot be read, or holds an array of another rank or channel
count, is a failed input with the reason; sizes are checked from headers first.
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import cv2
import numpy as np

from gradcam_jax import io, media

__all__ = [
  "ALL_EXTENSIONS",
  "Read",
  "extensions",
  "fit_array",
  "input_dtype",
  "read_input",
  "sample_batch",
]

_EXTENSIONS = {
  "image": io.IMAGE_EXTENSIONS,
  "signal": media.ARRAY_EXTENSIONS,
  "volume": media.ARRAY_EXTENSIONS + media.NIFTI_EXTENSIONS,
  "video": media.VIDEO_EXTENSIONS + media.ARRAY_EXTENSIONS,
}
ALL_EXTENSIONS = tuple(dict.fromkeys(e for x in _EXTENSIONS.values() for e in x))
_SHAPES = {"signal": "(L, C)", "volume": "(D, H, W, C)", "video": "(T, H, W, 3)"}


class Read(NamedTuple):
  """One input read for the model.

  Attributes:
    data: the input at the model's size, channels last (None when it failed).
    error: why it could not be read (None when it was).
    extra: what the records keep of how it was read: ``exif_orientation`` (images);
      ``affine`` and ``shape`` (the scan's voxel grid, NIfTI volumes).
  """

  data: np.ndarray | None
  error: str | None
  extra: dict


def extensions(media_kind: str) -> tuple[str, ...]:
  """The file extensions a folder search takes for models of `media_kind`."""
  return _EXTENSIONS[media_kind]


def input_dtype(media_kind: str):
  """The dtype of one input, as ``preprocess`` receives it."""
  return np.uint8 if media_kind in ("image", "video") else np.float32


def sample_batch(model, n: int, seed: int = 0) -> np.ndarray:
  """`n` random inputs of `model`'s shape and dtype, before preprocessing."""
  rng = np.random.default_rng(seed)
  shape = (n, *model.input_size, model.channels)
  if input_dtype(model.media) == np.uint8:
    return rng.integers(0, 256, shape, dtype=np.uint8)
  return rng.standard_normal(shape).astype(np.float32)


def _suffix(path: Path) -> str:
  name = path.name.lower()
  return ".nii.gz" if name.endswith(".nii.gz") else path.suffix.lower()


def fit_array(array: np.ndarray, size: tuple[int, ...]) -> np.ndarray:
  """`array` (*spatial, C) resampled to (*size, C) axis by axis: area averaging where
  an axis shrinks, linear interpolation (half-pixel centres) where it grows."""
  for axis, n in enumerate(size):
    m = array.shape[axis]
    if m == n:
      continue
    moved = np.moveaxis(array, axis, 0)
    flat = np.ascontiguousarray(moved.reshape(m, -1))
    how = cv2.INTER_AREA if n < m else cv2.INTER_LINEAR
    fitted = cv2.resize(flat, (flat.shape[1], n), interpolation=how)
    array = np.moveaxis(fitted.reshape((n, *moved.shape[1:])), 0, axis)
  return np.ascontiguousarray(array, np.float32)


def _with_channels(array: np.ndarray, model) -> tuple[np.ndarray | None, str | None]:
  """`array` as (*spatial, C) for `model`, or why it is not one of its inputs."""
  rank, channels = len(model.input_size), model.channels
  if array.ndim == rank and channels == 1:
    array = array[..., None]
  if array.ndim != rank + 1 or array.shape[-1] != channels:
    axes = _SHAPES[model.media].replace("C)", f"C={channels})")
    plain = " or without the channel axis" if channels == 1 else ""
    return None, (
      f"expected a {model.media} {axes}{plain} for this model; the array is "
      f"{tuple(array.shape)}"
    )
  if min(array.shape[:-1]) < 1:
    return None, f"empty array: {tuple(array.shape)}"
  return array, None


def _frames(clip: np.ndarray, model, resize: str, max_pixels) -> np.ndarray:
  """Each frame fitted to the model's (H, W) as an image is; T sampled evenly."""
  t = model.input_size[0]
  picks = np.linspace(0, clip.shape[0] - 1, t).round().astype(int)
  return np.stack(
    [io.resize_to(clip[i], model.input_size[1:], resize, max_pixels) for i in picks]
  )


def read_input(
  path: Path,
  model,
  resize: str,
  max_pixels,
  max_elements: int = media.MAX_ELEMENTS,
  exif_orientation: bool = True,
) -> Read:
  """Read `path` as one input of `model` (a ``ZooModel``), fitted to its size."""
  kind, suffix = model.media, _suffix(Path(path))
  if kind == "image":
    image, error, orientation = io.read_oriented(
      path, max_pixels, exif_orientation=exif_orientation
    )
    if image is None:
      return Read(None, error, {})
    fitted = io.resize_to(image, model.input_size, resize, max_pixels)
    return Read(fitted, None, {"exif_orientation": orientation})
  if suffix not in _EXTENSIONS[kind]:
    return Read(
      None,
      f"not a {kind} file: expected {', '.join(_EXTENSIONS[kind])}; got "
      f"{suffix or 'no extension'}",
      {},
    )
  extra: dict = {}
  if suffix in media.NIFTI_EXTENSIONS:
    array, affine, error = media.read_nifti(path, max_elements)
    if array is not None:
      extra = {"affine": affine, "shape": array.shape[:3]}
  elif suffix in media.VIDEO_EXTENSIONS:
    frames = model.input_size[0]
    clip, error = media.read_clip(path, frames, max_pixels or 2**62)
    if clip is None:
      return Read(None, error, {})
    return Read(_frames(clip, model, resize, max_pixels), None, {})
  else:
    array, error = media.read_array(path, max_elements)
  if array is None:
    return Read(None, error, {})
  array, error = _with_channels(array, model)
  if array is None:
    return Read(None, error, {})
  if kind == "video":
    if array.min() < 0 or array.max() > 255 or not np.array_equal(array, array.round()):
      return Read(None, "a video .npy array must hold uint8 RGB values 0..255", {})
    return Read(_frames(array.astype(np.uint8), model, resize, max_pixels), None, {})
  return Read(fit_array(array, model.input_size), None, extra)
