"""Images in, explanations out: finding and decoding files, writing results, the index.

Decoding never raises for a bad file: :func:`read_image` returns an error string,
so a batch job reports the file and goes on.
"""

from __future__ import annotations

import glob
import json
import os
from pathlib import Path
from typing import Iterable, NamedTuple

import cv2
import numpy as np

__all__ = ["IMAGE_EXTENSIONS", "Source", "find_images", "read_image", "fit_size",
           "read_index", "merge_index"]

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")


class Source(NamedTuple):
  """An input file and the output stem it maps to (its path under the input root)."""
  path: Path
  stem: str


def _stem(relative: Path) -> str:
  return str(relative.with_suffix("")).replace(os.sep, "__")


def find_images(paths: Iterable[str]) -> tuple[list[Source], list[str]]:
  """Files, folders (recursive, image extensions only) and globs -> sources.

  Returns the sources in a stable order and the arguments that matched nothing.
  Explicitly named files are kept whatever their extension (a bad one is reported
  when decoding fails).
  """
  sources: dict[Path, str] = {}
  missing = []
  for arg in paths:
    p = Path(arg)
    matches = [Path(m) for m in sorted(glob.glob(arg, recursive=True))] if (
        glob.has_magic(arg)) else ([p] if p.exists() else [])
    if not matches:
      missing.append(arg)
    for m in matches:
      if m.is_dir():
        for f in sorted(m.rglob("*")):
          if f.is_file() and f.suffix.lower() in IMAGE_EXTENSIONS:
            sources.setdefault(f.resolve(), _stem(f.relative_to(m)))
      elif m.is_file():
        sources.setdefault(m.resolve(), _stem(Path(m.name)))
  out, seen = [], {}
  for path, stem in sources.items():
    n = seen.get(stem, 0)
    seen[stem] = n + 1
    out.append(Source(path, stem if n == 0 else f"{stem}~{n}"))
  return out, missing


def _truncated_jpeg(data: bytes) -> bool:
  return data[:2] == b"\xff\xd8" and data.rstrip(b"\x00")[-2:] != b"\xff\xd9"


def read_image(path: Path) -> tuple[np.ndarray | None, str | None]:
  """Decode any image OpenCV reads into uint8 RGB (H, W, 3).

  Grayscale is repeated to RGB, alpha is composited over white, 16-bit and float
  images are scaled to 8 bits. Returns ``(image, None)`` or ``(None, reason)``.
  """
  try:
    data = Path(path).read_bytes()
  except OSError as err:
    return None, f"cannot read file: {err.strerror or err}"
  if not data:
    return None, "empty file (0 bytes)"
  if _truncated_jpeg(data):
    return None, "truncated JPEG (no end-of-image marker)"
  img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
  if img is None or img.size == 0:
    return None, "not a decodable image (JPEG/PNG/BMP/TIFF/WebP expected)"
  if img.dtype == np.uint16:
    img = (img.astype(np.float32) / 257.0).round().astype(np.uint8)
  elif img.dtype != np.uint8:
    img = np.clip(img.astype(np.float32) * (255.0 if img.max() <= 1.0 else 1.0),
                  0, 255).round().astype(np.uint8)
  if img.ndim == 2:
    img = img[..., None]
  if img.shape[-1] == 1:
    return np.repeat(img, 3, axis=-1), None
  if img.shape[-1] == 4:
    alpha = img[..., 3:].astype(np.float32) / 255.0
    img = (img[..., :3] * alpha + 255.0 * (1 - alpha)).round().astype(np.uint8)
  return np.ascontiguousarray(img[..., :3][..., ::-1]), None


def fit_size(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
  """Resize uint8 RGB to (H, W): area averaging to shrink, bilinear to enlarge."""
  h, w = size
  if image.shape[:2] == (h, w):
    return image
  shrink = image.shape[0] > h or image.shape[1] > w
  return cv2.resize(image, (w, h),
                    interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)


def read_index(out_dir: Path) -> list[dict]:
  """All index records under `out_dir` (every process's part), one per input path.

  Parts are read in name order and, within a part, in the order written; the last
  record for a path wins (a resumed run's records replace the earlier run's).
  """
  records: dict[str, dict] = {}
  for part in sorted(Path(out_dir).glob("index*.jsonl")):
    if part.name == "index.jsonl" and any(Path(out_dir).glob("index.part-*.jsonl")):
      continue  # a merged file is a copy of the parts
    for line in part.read_text().splitlines():
      if line.strip():
        try:
          record = json.loads(line)
        except json.JSONDecodeError:
          continue  # a line cut by a crash; its image is redone on resume
        records[record["path"]] = record
  return sorted(records.values(), key=lambda r: r["path"])


def merge_index(out_dir: Path) -> Path:
  """Write every part's records into one ``index.jsonl`` (sorted by path)."""
  records = read_index(out_dir)
  target = Path(out_dir) / "index.jsonl"
  tmp = target.with_suffix(".jsonl.tmp")
  tmp.write_text("".join(json.dumps(r) + "\n" for r in records))
  tmp.replace(target)
  return target
