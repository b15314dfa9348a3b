"""The job's own folder inside ``--out`` and writing files so that none is ever half
there: each file goes to a temporary file in that folder, then is renamed into
place (a rename within one file system is atomic: a reader sees the whole file or
none)."""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path
from typing import Iterable

__all__ = ["MARKER", "work_dir", "write_atomically", "write_stream"]

MARKER = ".gradcam-jax"  # folder inside --out: says the folder is ours, holds temp files


def work_dir(out_dir: Path, name: str = "", *, fresh: bool = False) -> Path:
  """``out_dir/.gradcam-jax[/name]``, created (the one place that creates it);
  `fresh` empties it first (a killed run's half-written files)."""
  path = Path(out_dir) / MARKER / name
  if fresh:
    shutil.rmtree(path, ignore_errors=True)
  path.mkdir(parents=True, exist_ok=True)
  return path


def write_atomically(files: dict[Path, bytes], tmp_dir: Path) -> None:
  """Write every file to a temporary file in `tmp_dir` (a folder made by
  :func:`work_dir` on the same file system), then rename each into place.

  Every write and rename is checked (an exception names the file); on failure the
  temporary files are removed.
  """
  temps = []
  try:
    for target, data in files.items():
      digest = hashlib.sha256(os.fsencode(target)).hexdigest()[:12]
      tmp = tmp_dir / f"{os.getpid()}-{digest}{target.suffix}"
      temps.append((tmp, target))  # before writing: a half-written one goes too
      with open(tmp, "wb") as f:
        f.write(data)
    for tmp, target in temps:
      target.parent.mkdir(parents=True, exist_ok=True)
      os.replace(tmp, target)
  finally:
    for tmp, _ in temps:
      if tmp.exists():
        tmp.unlink()


def write_stream(target: Path, chunks: Iterable[bytes], tmp_dir: Path) -> None:
  """Write the bytes `chunks` gives to `target` as :func:`write_atomically` does,
  without holding them all: a file of any size in the memory of one chunk."""
  digest = hashlib.sha256(os.fsencode(target)).hexdigest()[:12]
  tmp = tmp_dir / f"{os.getpid()}-{digest}{target.suffix}"
  try:
    with open(tmp, "wb") as f:
      for chunk in chunks:
        f.write(chunk)
    os.replace(tmp, target)
  finally:
    tmp.unlink(missing_ok=True)
