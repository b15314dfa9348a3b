"""Images in: finding files, decoding them safely, fitting them to a model's input.

Decoding never raises for a bad file: :func:`read_image` returns an error string,
so a batch job reports the file and goes on. The index of a batch job is read with
:func:`read_index` (see ``gradcam_jax.cli.journal``).
"""

from __future__ import annotations

import fnmatch
import glob
import os
from pathlib import Path
from typing import Iterable, NamedTuple

import cv2
import numpy as np

from gradcam_jax._errors import GradCAMError

__all__ = [  # noqa: F822 (read_index, merge_index: from the job's journal, __getattr__)
  "glob_reaches",
  "IMAGE_EXTENSIONS",
  "MAX_PIXELS",
  "RESIZE_POLICIES",
  "Source",
  "find_images",
  "read_image",
  "read_oriented",
  "orient",
  "fit_size",
  "resize_to",
  "read_index",
  "merge_index",
]

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")

# 40 megapixels: a 16-bit RGBA image this size decodes to 320 MB; photos from
# current cameras (24-33 MP) pass.
MAX_PIXELS = 40_000_000

RESIZE_POLICIES = ("squash", "crop", "pad")


class Source(NamedTuple):
  """An input file and where its outputs go.

  Attributes:
    path: the file as found (absolute; through a symlink if it was reached by one).
    rel: its path relative to the common root of the arguments, POSIX form: the
      outputs mirror it under ``--out``, so two inputs never share a name.
  """

  path: Path
  rel: str


def _magic_free_prefix(pattern: str) -> Path:
  parts = Path(pattern).parts
  keep = []
  for p in parts:
    if glob.has_magic(p):
      break
    keep.append(p)
  return Path(*keep) if keep else Path(".")


def glob_reaches(pattern: str, path) -> bool:
  """Whether the glob `pattern`, as :func:`find_images` expands it, matches `path`
  or a folder above it (whose files it would then search), or enters it through
  ``**``: compared part by part on absolute paths, as ``glob`` does."""
  pat = Path(os.path.abspath(pattern)).parts
  parts = Path(os.path.abspath(path)).parts
  for i, piece in enumerate(pat):
    if piece == "**":
      return True
    if i >= len(parts) or not fnmatch.fnmatchcase(parts[i], piece):
      return False
  return True


def _walk(
  folder: Path,
  notes: list[str],
  folders: list | None = None,
  extensions: tuple[str, ...] = IMAGE_EXTENSIONS,
) -> Iterable[Path]:
  """Files of `extensions` below `folder`, following symlinked folders, each real folder once
  (a link back up the tree is reported in `notes` and not entered again); the real
  path of each folder entered goes to `folders`."""
  seen: set[tuple[int, int]] = set()
  for top, dirs, files in os.walk(folder, followlinks=True):
    st = os.stat(top)
    if (st.st_dev, st.st_ino) in seen:
      notes.append(f"{top}: folder already visited (symlink loop); not entered again")
      dirs[:] = []
      continue
    seen.add((st.st_dev, st.st_ino))
    if folders is not None:
      folders.append(os.path.realpath(top))
    dirs.sort()
    for name in sorted(files):
      if any(name.lower().endswith(e) and len(name) > len(e) for e in extensions):
        yield Path(top) / name


def find_images(
  paths: Iterable[str],
  folders: list | None = None,
  extensions: tuple[str, ...] = IMAGE_EXTENSIONS,
) -> tuple[list[Source], list[str], list[str]]:
  """Files, folders (recursive, files of `extensions` only, symlinks followed) and
  globs -> sources.

  An argument that exists is taken literally (``scan[1].png`` is that file); only
  arguments that do not exist are expanded as globs. Each real file is explained
  once, under the first path that reached it. `folders`, when given, receives the
  real path of every folder the search entered.

  Returns:
    ``(sources, missing, notes)``: the sources in a stable order, the arguments that
    matched nothing, and remarks on what was passed over (symlink loops).
  """
  found: list[tuple[Path, Path]] = []  # (absolute path, argument root)
  missing, notes = [], []
  for arg in paths:
    p = Path(os.path.abspath(arg))
    if os.path.lexists(p):
      matches, root = [p], (p if p.is_dir() else p.parent)
    elif glob.has_magic(arg):
      matches = [Path(os.path.abspath(m)) for m in sorted(glob.glob(arg, recursive=True))]
      root = Path(os.path.abspath(_magic_free_prefix(arg)))
    else:
      matches, root = [], p
    if not matches:
      missing.append(arg)
    for m in matches:
      if m.is_dir():
        found.extend((f, root) for f in _walk(m, notes, folders, extensions))
      else:
        found.append((m, root))  # named files are kept whatever their extension
  if not found:
    return [], missing, notes
  common = Path(os.path.commonpath([str(root) for _, root in found]))
  sources, real_seen = [], set()
  for path, _ in found:
    real = os.path.realpath(path)
    if real in real_seen:
      continue
    real_seen.add(real)
    sources.append(Source(path, path.relative_to(common).as_posix()))
  return sources, missing, notes


def _truncated_jpeg(data: bytes) -> bool:
  """Whether a JPEG's compressed data ends before its image does, found by decoding
  it (at 1/8 scale: every entropy-coded byte is still read). OpenCV fills a truncated
  JPEG with grey and says nothing; bytes after the end-of-image marker (the video a
  phone's "motion photo" appends) are not truncation."""
  if data[:2] != b"\xff\xd8":
    return False
  import io as _io

  from PIL import Image

  try:
    with Image.open(_io.BytesIO(data)) as im:
      im.draft("RGB", (max(1, im.size[0] // 8), max(1, im.size[1] // 8)))
      im.load()
  except OSError as err:
    return "truncated" in str(err)
  except Exception:  # noqa: BLE001 (not Pillow's to judge: OpenCV decides below)
    return False
  return False


def _header(data: bytes) -> tuple[int | None, int]:
  """Width x height (None: unknown) and the EXIF orientation (1: as stored) from the
  file's header, without decoding.

  Pillow refuses to open an image past its own decompression-bomb limit; the size is
  read from its message then, so that ``--max-pixels`` alone decides."""
  import io as _io
  import re

  from PIL import Image

  try:
    with Image.open(_io.BytesIO(data)) as im:
      pixels = im.size[0] * im.size[1]
      try:  # a damaged EXIF block leaves the image as stored
        orientation = im.getexif().get(0x0112, 1)
      except Exception:  # noqa: BLE001
        orientation = 1
      return pixels, orientation if orientation in range(1, 9) else 1
  except Image.DecompressionBombError as err:
    said = re.search(r"\((\d+) pixels\)", str(err))
    return (int(said.group(1)) if said else 2**63), 1
  except Exception:  # not a format Pillow reads: its size is unknown
    return None, 1


def orient(image: np.ndarray, orientation: int) -> np.ndarray:
  """`image` as a viewer shows it under EXIF `orientation` (1-8), as Pillow's
  ``ImageOps.exif_transpose`` does."""
  turned = {
    2: lambda a: a[:, ::-1],
    3: lambda a: a[::-1, ::-1],
    4: lambda a: a[::-1],
    5: lambda a: a.transpose(1, 0, 2),
    6: lambda a: np.rot90(a, -1),
    7: lambda a: np.rot90(a, -1)[::-1],
    8: lambda a: np.rot90(a, 1),
  }.get(orientation)
  return image if turned is None else np.ascontiguousarray(turned(image))


_NOT_AN_IMAGE = "not a decodable image (JPEG/PNG/BMP/TIFF/WebP expected)"


def read_image(
  path: Path, max_pixels: int | None = MAX_PIXELS, *, exif_orientation: bool = True
) -> tuple[np.ndarray | None, str | None]:
  """Decode any image OpenCV reads into uint8 RGB (H, W, 3).

  Grayscale is repeated to RGB, alpha is composited over white, 16-bit and float
  images are scaled to 8 bits. Images with more than `max_pixels` pixels (read from
  the header, before decoding) are refused: a small file can decode to gigabytes.
  The EXIF orientation is applied, as photo viewers and browsers do (a phone's
  portrait photo is stored on its side), unless `exif_orientation` is False.

  Returns:
    ``(image, None)`` or ``(None, reason)``.
  """
  image, error, _ = read_oriented(path, max_pixels, exif_orientation=exif_orientation)
  return image, error


def read_oriented(
  path: Path, max_pixels: int | None = MAX_PIXELS, *, exif_orientation: bool = True
) -> tuple[np.ndarray | None, str | None, int | None]:
  """:func:`read_image`, and the EXIF orientation applied (1: none; None when
  `exif_orientation` is False or the file could not be read)."""
  try:
    data = Path(path).read_bytes()
  except OSError as err:
    if not Path(path).exists() and os.path.islink(path):
      return None, "broken symbolic link", None
    return None, f"cannot read file: {err.strerror or err}", None
  if not data:
    return None, "empty file (0 bytes)", None
  if _truncated_jpeg(data):
    return None, "truncated JPEG (the compressed data ends before the image does)", None
  pixels, orientation = _header(data)
  if max_pixels is not None:
    if pixels is None and not cv2.haveImageReader(str(path)):
      return None, _NOT_AN_IMAGE, None
    if pixels is None:  # OpenCV knows the format, the size check does not
      reason = (
        "its size cannot be read from its header (a format or variant the size "
        "check does not know), so --max-pixels cannot be enforced before decoding: "
        "refused; convert it to PNG or JPEG"
      )
      return None, reason, None
    if pixels > max_pixels:
      size = "more than 2^63" if pixels == 2**63 else f"{pixels:,}"
      reason = (
        f"image too large: {size} pixels, the limit is {max_pixels:,} "
        "(raise it with --max-pixels)"
      )
      return None, reason, None
  img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
  if img is None or img.size == 0:
    return None, _NOT_AN_IMAGE, None
  if img.dtype == np.uint16:
    img = (img.astype(np.float32) / 257.0).round().astype(np.uint8)
  elif img.dtype != np.uint8:
    img = (
      np.clip(img.astype(np.float32) * (255.0 if img.max() <= 1.0 else 1.0), 0, 255)
      .round()
      .astype(np.uint8)
    )
  if img.ndim == 2:
    img = img[..., None]
  if img.shape[-1] == 1:
    img = np.repeat(img, 3, axis=-1)
  elif img.shape[-1] == 4:
    alpha = img[..., 3:].astype(np.float32) / 255.0
    img = (img[..., :3] * alpha + 255.0 * (1 - alpha)).round().astype(np.uint8)
  rgb = np.ascontiguousarray(img[..., :3][..., ::-1])
  if not exif_orientation:
    return rgb, None, None
  return orient(rgb, orientation), None, orientation


def fit_size(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
  """Resize uint8 RGB to (H, W): area averaging to shrink, bilinear to enlarge."""
  h, w = size
  if image.shape[:2] == (h, w):
    return image
  shrink = image.shape[0] > h or image.shape[1] > w
  return cv2.resize(
    image, (w, h), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR
  )


def resize_to(
  image: np.ndarray, size: tuple[int, int], policy: str, max_pixels: int | None = None
) -> np.ndarray:
  """Fit uint8 RGB `image` to the model's (H, W) input by `policy`.

  * ``"squash"``: resize to (H, W), ignoring the aspect ratio (Keras'
    ``load_img(target_size=...)``).
  * ``"crop"``: resize the shorter side to ``round(min(H, W) / 0.875)`` (256 for
    224), then take the centre (H, W) crop: torchvision's ``Resize(256)`` +
    ``CenterCrop(224)``, the convention of its ImageNet weights. Where that resized
    image would have more than `max_pixels` pixels (a 1 x 80,000 strip becomes
    256 x 20,480,000), only the crop's region of `image` is resized, so no
    intermediate image is larger than the cap.
  * ``"pad"``: resize the longer side to fit, keep the aspect ratio, pad with black
    to (H, W), the image centred.
  """
  h, w = size
  ih, iw = image.shape[:2]
  if policy == "squash":
    return fit_size(image, size)
  if policy == "crop":
    short = round(min(h, w) / 0.875)
    scale = short / min(ih, iw)
    rh, rw = max(h, round(ih * scale)), max(w, round(iw * scale))
    top, left = (rh - h) // 2, (rw - w) // 2
    if max_pixels is not None and rh * rw > max_pixels:
      # the crop box in the image's own pixels: (y0, y1) x (x0, x1)
      y0, y1 = int(top * ih / rh), min(ih, -(-((top + h) * ih) // rh))
      x0, x1 = int(left * iw / rw), min(iw, -(-((left + w) * iw) // rw))
      return fit_size(np.ascontiguousarray(image[y0:y1, x0:x1]), size)
    big = fit_size(image, (rh, rw))
    return np.ascontiguousarray(big[top : top + h, left : left + w])
  if policy == "pad":
    scale = min(h / ih, w / iw)
    rh, rw = max(1, min(h, round(ih * scale))), max(1, min(w, round(iw * scale)))
    out = np.zeros((h, w, 3), np.uint8)
    top, left = (h - rh) // 2, (w - rw) // 2
    out[top : top + rh, left : left + rw] = fit_size(image, (rh, rw))
    return out
  raise GradCAMError(f"resize: expected one of {RESIZE_POLICIES}; got {policy!r}.")


def __getattr__(name: str):
  if name in ("read_index", "merge_index"):  # the job's index, read where it is kept
    from gradcam_jax.cli import journal

    return getattr(journal, name)
  raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
