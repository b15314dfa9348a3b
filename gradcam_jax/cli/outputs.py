"""Where a batch job's outputs go, and their encodings (PNG, NPZ, NIfTI).

An input's outputs share one *name*: its path relative to the arguments' common
root (``sub/cat.jpg``), mirrored under ``--out``, plus one suffix per kind
(``sub/cat.jpg.overlay.png``). Distinct inputs have distinct relative paths, so
names are collision-free by construction; a name another input already claimed in
the journal, or whose files exist but were not written by gradcam-jax, is replaced
by ``<stem>~<hash of the relative path><suffix>``. A name too long for the file
system is shortened the same way. Files are written with
:func:`gradcam_jax.cli.atomic.write_atomically`.
"""

from __future__ import annotations

import hashlib
import io as _io
import os
from pathlib import Path, PurePosixPath

import cv2
import numpy as np

__all__ = [
  "KINDS",
  "readable",
  "SUFFIXES",
  "assign_name",
  "output_paths",
  "encode_png",
  "encode_npz",
  "encode_nifti",
  "MEDIA_KINDS",
  "kinds_for",
]

SUFFIXES = {
  "input": ".input.png",
  "overlay": ".overlay.png",
  "guided_gradcam": ".guided_gradcam.png",
  "arrays": ".npz",
  "nifti": ".cam.nii.gz",
}
KINDS = tuple(SUFFIXES)
# what each kind of input gets (of the kinds asked for): pictures of the input,
# of the map over it, of Guided Grad-CAM where it is an image; the map as a NIfTI
# volume over the scan where the input was one
MEDIA_KINDS = {
  "image": ("input", "overlay", "guided_gradcam", "arrays"),
  "signal": ("overlay", "arrays"),
  "volume": ("overlay", "arrays", "nifti"),
  "video": ("overlay", "arrays"),
}

NAME_MAX = 255  # bytes in one path component (ext4, xfs, btrfs, APFS, NTFS)
PATH_MAX = 4000  # bytes in a whole path, with room below Linux's 4096
_ROOM = max(len(s) for s in SUFFIXES.values())
_KEEP = 120  # bytes of a shortened component kept before its hash


def _size(name) -> int:
  """Bytes of `name` on the file system: any name it holds, also one that is not
  UTF-8 (Python keeps its bytes as surrogate escapes)."""
  return len(os.fsencode(name))


def _hash(text: str) -> str:
  return hashlib.sha256(os.fsencode(text)).hexdigest()[:12]


def _shorten(component: str, key: str) -> str:
  """`component` cut to fit NAME_MAX with the longest suffix added, keeping its
  extension and adding a hash of `key` (the whole relative path) to stay unique."""
  stem, ext = os.path.splitext(component)
  raw = os.fsencode(stem)
  try:
    raw.decode("utf-8")
  except UnicodeDecodeError:  # a name that is not UTF-8 keeps its bytes
    cut = os.fsdecode(raw[:_KEEP])
  else:  # a UTF-8 name is cut between characters
    cut = raw[:_KEEP].decode("utf-8", "ignore")
  return f"{cut}~{_hash(key)}{ext}"


def _fits(name: str, out_dir: Path) -> bool:
  parts = PurePosixPath(name).parts
  return (
    all(_size(p) <= NAME_MAX for p in parts[:-1])
    and _size(parts[-1]) + _ROOM <= NAME_MAX
    and _size(out_dir / name) + _ROOM <= PATH_MAX
  )


def readable(name: str) -> str:
  """`name` for people: bytes that are not UTF-8 shown as U+FFFD."""
  return os.fsencode(name).decode("utf-8", "replace")


def _candidates(rel: str, out_dir: Path):
  """The names to try for an input at `rel`, best first: the mirrored path; with
  each over-long component shortened (hashing the path up to it, so a long folder
  keeps one name); with the file's hash added (on conflict); flat under ``_long/``
  when the whole path is too long."""
  parts = PurePosixPath(rel).parts
  fit = [
    p
    if _size(p) + (_ROOM if i == len(parts) - 1 else 0) <= NAME_MAX
    else _shorten(p, "/".join(parts[: i + 1]))
    for i, p in enumerate(parts)
  ]
  stem, ext = os.path.splitext(fit[-1])
  hashed = fit[-1] if fit[-1] != parts[-1] else f"{stem}~{_hash(rel)}{ext}"
  for name in (
    "/".join(fit),
    "/".join(fit[:-1] + [hashed]),
    f"_long/{_shorten(parts[-1], rel)}",
  ):
    if _fits(name, out_dir):
      yield name


def output_paths(out_dir: Path, name: str) -> dict[str, Path]:
  return {kind: out_dir / (name + suffix) for kind, suffix in SUFFIXES.items()}


def assign_name(rel: str, path: str, out_dir: Path, owners: dict) -> str | None:
  """A name for the input `path` at `rel` that no other input owns and under which
  no file exists that gradcam-jax did not write; None when there is none.

  `owners` maps claimed names to their input; the caller claims the name (records
  it in the journal and in `owners`) before writing.
  """
  for name in _candidates(rel, out_dir):
    owner = owners.get(name)
    if owner == path:
      return name
    if owner is None and not any(
      p.exists() or p.is_symlink() for p in output_paths(out_dir, name).values()
    ):
      return name
  return None


def encode_png(rgb: np.ndarray) -> bytes:
  ok, data = cv2.imencode(
    ".png", np.ascontiguousarray(rgb[..., ::-1]), [cv2.IMWRITE_PNG_COMPRESSION, 1]
  )
  if not ok:
    raise OSError("OpenCV could not encode the PNG")
  return data.tobytes()


def encode_npz(arrays: dict) -> bytes:
  """Uncompressed: zlib gains little on maps and gradients and costs CPU time the
  explainer needs (measured in benchmarks/cli_throughput.py)."""
  buffer = _io.BytesIO()
  np.savez(buffer, **arrays)
  return buffer.getvalue()


def encode_nifti(volume: np.ndarray, affine: np.ndarray) -> bytes:
  """A gzipped NIfTI-1 file (``.nii.gz``) of `volume` with `affine` (nibabel)."""
  import gzip

  import nibabel

  image = nibabel.Nifti1Image(np.asarray(volume, np.float32), np.asarray(affine))
  return gzip.compress(image.to_bytes(), compresslevel=1)


def kinds_for(save, media_kind: str, path) -> list[str]:
  """The kinds of `save` the input at `path` of a `media_kind` model gets
  (``MEDIA_KINDS``; a NIfTI map only for a NIfTI input)."""
  own = MEDIA_KINDS[media_kind]
  scan = os.fspath(path).lower().endswith((".nii", ".nii.gz"))
  return [k for k in save if k in own and (k != "nifti" or scan)]
