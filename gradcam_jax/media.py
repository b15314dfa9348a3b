"""Signals, volumes and clips in and out: ``.npy`` arrays, NIfTI volumes and video
clips, the inputs :mod:`gradcam_jax.io` does for images.

As :func:`gradcam_jax.io.read_image`, the readers never raise for a bad file: they
return ``(None, reason)`` so a batch job reports it and goes on, and they check sizes
from the file's header before decoding it. NIfTI needs nibabel (``pip install
"gradcam-jax[nifti]"``); video uses OpenCV.

Example:
  >>> import numpy as np, tempfile, os
  >>> from gradcam_jax import media
  >>> path = os.path.join(tempfile.mkdtemp(), "ecg.npy")
  >>> np.save(path, np.zeros((500, 12), np.float32))
  >>> signal, error = media.read_array(path)
  >>> signal.shape, error
  ((500, 12), None)
"""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np

from gradcam_jax._errors import ImageError

__all__ = [
  "ARRAY_EXTENSIONS",
  "NIFTI_EXTENSIONS",
  "VIDEO_EXTENSIONS",
  "MAX_ELEMENTS",
  "read_array",
  "read_nifti",
  "write_nifti",
  "read_clip",
]

ARRAY_EXTENSIONS = (".npy",)
NIFTI_EXTENSIONS = (".nii", ".nii.gz")
VIDEO_EXTENSIONS = (".mp4", ".avi", ".mov", ".mkv")

# 256^3 x 4 channels: a float32 array this size is 268 MB; a 512x512x300 CT (79 M
# voxels) passes.
MAX_ELEMENTS = 256**3 * 4


def _too_big(shape, limit: int) -> str | None:
  n = int(np.prod(shape, dtype=np.int64))
  if n > limit:
    return f"too large: {tuple(shape)} is {n:,} elements, over the cap of {limit:,}"
  return None


def read_array(
  path, max_elements: int = MAX_ELEMENTS
) -> tuple[np.ndarray | None, str | None]:
  """A ``.npy`` array as float32, its shape as stored: ``(array, None)``, or
  ``(None, reason)`` for a file that is not a numeric ``.npy`` array (pickled objects
  are refused), holds a NaN or Inf, or is over `max_elements` (checked from the
  header, before reading the data)."""
  try:
    with open(path, "rb") as f:
      version = np.lib.format.read_magic(f)
      header = {
        (1, 0): np.lib.format.read_array_header_1_0,
        (2, 0): np.lib.format.read_array_header_2_0,
      }.get(version)
      if header is None:
        return None, f"not a .npy array this reader knows: format version {version}"
      shape, _, dtype = header(f)
  except (OSError, ValueError, SyntaxError) as err:
    return None, f"not a .npy array: {err}"
  if dtype.hasobject or not (
    np.issubdtype(dtype, np.number) or np.issubdtype(dtype, np.bool_)
  ):
    return None, f"not a numeric array: dtype {dtype} (numbers expected)"
  if (problem := _too_big(shape, max_elements)) is not None:
    return None, problem
  try:
    array = np.load(path, allow_pickle=False).astype(np.float32)
  except (OSError, ValueError) as err:
    return None, f"could not read the array: {err}"
  if not np.isfinite(array).all():
    return None, "holds NaN or Inf values"
  return array, None


def _nibabel():
  try:
    import nibabel
  except ImportError:
    return None
  return nibabel


_NO_NIBABEL = 'NIfTI needs nibabel: pip install "gradcam-jax[nifti]"'


def read_nifti(
  path, max_elements: int = MAX_ELEMENTS
) -> tuple[np.ndarray | None, np.ndarray | None, str | None]:
  """A NIfTI volume (``.nii`` or ``.nii.gz``): ``(volume, affine, None)`` with the
  volume as float32 in the file's voxel order (i, j, k[, ...]) and its 4x4 affine
  (voxel to scanner coordinates), or ``(None, None, reason)``. The size is checked
  from the header before the data are read."""
  nib = _nibabel()
  if nib is None:
    return None, None, _NO_NIBABEL
  try:
    image = nib.load(os.fspath(path))
    shape = image.shape
  except Exception as err:  # noqa: BLE001 (nibabel raises several kinds for a bad file)
    return None, None, f"not a NIfTI volume: {type(err).__name__}: {err}"
  if (problem := _too_big(shape, max_elements)) is not None:
    return None, None, problem
  try:
    volume = np.asarray(image.get_fdata(dtype=np.float32))
  except Exception as err:  # noqa: BLE001 (a truncated or corrupt data block)
    return None, None, f"could not read the volume's data: {type(err).__name__}: {err}"
  if not np.isfinite(volume).all():
    return None, None, "holds NaN or Inf values"
  return volume, np.asarray(image.affine, np.float64), None


def write_nifti(path, volume, affine) -> None:
  """Write `volume` (a map, say) as a NIfTI file with `affine` (the input's, so the
  map opens over the scan in a viewer). ImageError when it cannot be written."""
  nib = _nibabel()
  if nib is None:
    raise ImageError(f"write_nifti {path}: {_NO_NIBABEL}.")
  volume, affine = np.asarray(volume, np.float32), np.asarray(affine, np.float64)
  if affine.shape != (4, 4) or volume.ndim < 3:
    raise ImageError(
      f"write_nifti {path}: expected a volume of rank 3 or more and a 4x4 affine; got "
      f"{volume.shape} and {affine.shape}."
    )
  try:
    nib.save(nib.Nifti1Image(volume, affine), os.fspath(path))
  except Exception as err:  # noqa: BLE001 (any write failure becomes ours)
    raise ImageError(f"write_nifti {path}: could not write it: {err}") from None


def read_clip(
  path, frames: int, max_pixels: int = 40_000_000
) -> tuple[np.ndarray | None, str | None]:
  """`frames` frames of a video, evenly spaced over its length (the first and the
  last included), as uint8 RGB (T, H, W, 3): ``(clip, None)`` or ``(None, reason)``.
  The frame size is checked against `max_pixels` from the container before any frame
  is decoded, and only the chosen frames are decoded (the others are skipped); a
  video shorter than `frames` repeats its frames in order."""
  if not isinstance(frames, int) or isinstance(frames, bool) or frames < 1:
    raise ImageError(f"read_clip: frames: expected a whole number >= 1; got {frames!r}.")
  if not Path(path).is_file():
    return None, "no such file"
  capture = cv2.VideoCapture(os.fspath(path))
  try:
    if not capture.isOpened():
      return None, "not a decodable video (MP4/AVI/MOV/MKV through OpenCV expected)"
    w = int(capture.get(cv2.CAP_PROP_FRAME_WIDTH))
    h = int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT))
    count = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
    if w * h > max_pixels:
      return None, f"frames too large: {w}x{h} is over the cap of {max_pixels:,} pixels"
    if count < 1:
      return None, "not a decodable video: it declares no frames"
    picks = np.linspace(0, count - 1, frames).round().astype(int)
    wanted = set(picks.tolist())
    kept: dict[int, np.ndarray] = {}
    for index in range(int(picks[-1]) + 1):
      if not capture.grab():
        break
      if index in wanted:
        ok, frame = capture.retrieve()
        if not ok:
          break
        kept[index] = frame[..., ::-1]
  finally:
    capture.release()
  missing = sorted(wanted - set(kept))
  if missing:
    return None, (
      f"not a decodable video: frame {missing[0]} of the {count} its header declares "
      "could not be read"
    )
  return np.stack([kept[i] for i in picks.tolist()]), None
