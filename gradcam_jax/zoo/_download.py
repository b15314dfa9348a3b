"""Pretrained weights by name: the files their authors publish, fetched once into a
cache, for ``zoo.load(name, weights="imagenet")`` and ``gradcam-jax explain --model
NAME --weights imagenet`` alike.

VGG16: the file Keras publishes (md5 as Keras' ``keras/applications/vgg16.py``
checks it); ResNet-50: torchvision's IMAGENET1K_V1 file (sha256 prefix as in its
name, as torchvision checks it; read without torch by ``_torch_file.py``). Each is
kept at ``$GRADCAM_JAX_HOME/weights/FILE`` (default home ``~/.cache/gradcam-jax``),
downloaded first if it is not there: streamed to a temporary file beside it, its
digest checked, then renamed into place, with a progress bar on
stderr. A failed, partial, mismatched, stalled (slower than ``MIN_RATE`` bytes/s
over ``RATE_WINDOW`` seconds) or SIGTERM-ed download leaves nothing behind, and a
temporary file of a download killed outright (SIGKILL) is removed by the next
attempt. Every server misbehaviour is a ``WeightsError``. ``GRADCAM_JAX_WEIGHTS_URL`` replaces
the base URL the files are fetched from (a mirror holding each file at its
``Published.path``, e.g. ``http://127.0.0.1:8000/``).
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import os
import signal
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Iterator, NamedTuple

from gradcam_jax._errors import ArgumentError, WeightsError

__all__ = [
  "PUBLISHED",
  "Published",
  "cache_path",
  "describe",
  "home",
  "url_of",
  "weights_file",
]

KERAS_BASE = "https://storage.googleapis.com/tensorflow/keras-applications/"
TORCHVISION_BASE = "https://download.pytorch.org/models/"


class Published(NamedTuple):
  """A weights file its authors publish.

  Attributes:
    origin: the base URL it is published under.
    path: its path under that base (and under a mirror, GRADCAM_JAX_WEIGHTS_URL).
    check: ``"md5:HEX"`` (the whole digest, as Keras checks it) or ``"sha256:HEX"``
      (a prefix of the digest, the one in torchvision's file names, as torchvision
      checks it).
    size: its size in bytes, to say what a download costs.
    about: what it is, in a few words.
  """

  origin: str
  path: str
  check: str
  size: int
  about: str


PUBLISHED = {
  "vgg16": Published(
    KERAS_BASE,
    "vgg16/vgg16_weights_tf_dim_ordering_tf_kernels.h5",
    "md5:64373286793e3c8b2b4e3219cbf3544b",
    553_467_096,
    "Keras' VGG16 ImageNet weights (keras.applications.VGG16)",
  ),
  # IMAGENET1K_V1: trained with the preprocessing the zoo's ResNet-50 uses (shorter
  # side to 256, centre crop 224); V2 was trained with a 232 resize.
  "resnet50": Published(
    TORCHVISION_BASE,
    "resnet50-0676ba61.pth",
    "sha256:0676ba61",
    102_530_333,
    "torchvision's ResNet-50 IMAGENET1K_V1 weights",
  ),
}


def home() -> Path:
  """``$GRADCAM_JAX_HOME``, default ``~/.cache/gradcam-jax``."""
  return Path(os.environ.get("GRADCAM_JAX_HOME") or Path.home() / ".cache" / "gradcam-jax")


def url_of(name: str) -> str:
  known = PUBLISHED[name]
  base = os.environ.get("GRADCAM_JAX_WEIGHTS_URL") or known.origin
  return base.rstrip("/") + "/" + known.path


def cache_path(name: str) -> Path:
  """Where the published weights of `name` are kept once downloaded."""
  return home() / "weights" / Path(PUBLISHED[name].path).name


def describe(name: str) -> str:
  """One line: what `weights="imagenet"` downloads for `name`, from where, how big."""
  known = PUBLISHED[name]
  return f"{known.about}, {known.size / 1e6:.0f} MB from {url_of(name)}"


class _Digest:
  """The digest a Published.check names, fed block by block."""

  def __init__(self, check: str):
    self.kind, _, self.want = check.partition(":")
    self.hash = hashlib.new(self.kind)

  def update(self, block: bytes) -> None:
    self.hash.update(block)

  def ok(self) -> bool:
    return self.hash.hexdigest().startswith(self.want)

  def got(self) -> str:
    return f"{self.kind} {self.hash.hexdigest()}"


def _file_digest(path: Path, check: str) -> _Digest:
  digest = _Digest(check)
  with path.open("rb") as f:
    for block in iter(lambda: f.read(1 << 20), b""):
      digest.update(block)
  return digest


def weights_file(name: str) -> Path:
  """The cached published weights file of zoo model `name`, downloaded if absent."""
  if name not in PUBLISHED:
    raise ArgumentError(
      f"weights='imagenet': published weights exist for {sorted(PUBLISHED)}; got "
      f"model {name!r}. Pass weights=PATH for it."
    )
  known = PUBLISHED[name]
  dest = cache_path(name)
  if dest.exists():
    digest = _file_digest(dest, known.check)
    if not digest.ok():
      raise WeightsError(
        f"{dest}: {digest.got()}, expected {known.check} (the file published at "
        f"{url_of(name)}). It is not the published file: delete it to download "
        "again, or pass weights=PATH to use it anyway."
      )
    return dest
  _download(url_of(name), known.check, dest)
  return dest


# A download slower than MIN_RATE bytes/s over any RATE_WINDOW seconds (or silent for
# RATE_WINDOW seconds) is given up on: no deadline for the whole file, which is
# large on a slow link, but a server that trickles or stalls is not waited on.
MIN_RATE = 10_000
RATE_WINDOW = 60.0
_BLOCK = 1 << 16


class _Terminated(BaseException):
  """SIGTERM during a download: unwinds it (its temporary file is removed), then
  the signal is delivered again with the handler that was there before."""


@contextlib.contextmanager
def _cleanup_on_sigterm() -> Iterator[None]:
  """Turn SIGTERM into an exception while the block runs, so that a download
  stopped by ``kill`` removes its temporary file; only in the main thread and only
  where SIGTERM has its default action (a program's own handler is left alone)."""
  if (
    threading.current_thread() is not threading.main_thread()
    or signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL
  ):
    yield
    return

  def on_term(signum, frame):
    raise _Terminated

  signal.signal(signal.SIGTERM, on_term)
  try:
    yield
  except _Terminated:
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    os.kill(os.getpid(), signal.SIGTERM)  # die of it, as without us
    raise
  finally:
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


def _remove_dead_parts(folder: Path, name: str) -> None:
  """Temporary files of downloads whose process is gone (killed with SIGKILL, which
  nothing can catch): removed before a new attempt, so none accumulate."""
  for part in folder.glob(f".{name}.*.part"):
    pid = part.name[len(name) + 2 :].split(".")[0]
    if not pid.isdigit():
      continue
    try:
      os.kill(int(pid), 0)
    except ProcessLookupError:
      part.unlink(missing_ok=True)
    except PermissionError:
      pass  # alive, someone else's


class _Progress:
  """One line on stderr, redrawn at most twice a second."""

  def __init__(self, total: int | None):
    self.total, self.start, self.shown = total, time.monotonic(), 0.0

  def update(self, size: int, final: bool = False) -> None:
    now = time.monotonic()
    if not final and now - self.shown < 0.5:
      return
    self.shown = now
    rate = size / max(now - self.start, 1e-9) / 1e6
    if self.total:
      fill = int(30 * size / self.total)
      line = (
        f"[{'#' * fill}{'.' * (30 - fill)}] {100 * size / self.total:3.0f}% "
        f"{size / 1e6:.1f}/{self.total / 1e6:.1f} MB {rate:.1f} MB/s"
      )
    else:
      line = f"{size / 1e6:.1f} MB {rate:.1f} MB/s"
    sys.stderr.write("\r  " + line + ("\n" if final else ""))
    sys.stderr.flush()


def _content_length(response, url: str, manual: str) -> int | None:
  value = response.headers.get("Content-Length")
  if value is None:
    return None
  if not value.strip().isdigit():
    raise WeightsError(
      f"could not download {url}: the server sent Content-Length {value!r}, "
      f"not a number of bytes. {manual}"
    )
  return int(value)


def _stream(
  response, out, url: str, manual: str, digest: _Digest
) -> tuple[int, int | None]:
  """Copy the body to `out`, feeding `digest`: (size, announced size). WeightsError
  when the server is slower than MIN_RATE over a window of RATE_WINDOW seconds."""
  expected = _content_length(response, url, manual)
  progress = _Progress(expected)
  size = 0
  window_start, window_size = time.monotonic(), 0
  while True:
    block = response.read1(_BLOCK)
    if not block:
      break
    digest.update(block)
    out.write(block)
    size += len(block)
    progress.update(size)
    now = time.monotonic()
    if now - window_start >= RATE_WINDOW:
      rate = (size - window_size) / (now - window_start)
      if rate < MIN_RATE:
        raise WeightsError(
          f"could not download {url}: the server sent {rate:.0f} bytes/s over the "
          f"last {now - window_start:.0f} s (at least {MIN_RATE} are needed), "
          f"after {size} bytes; given up. {manual}"
        )
      window_start, window_size = now, size
  progress.update(size, final=True)
  return size, expected


def _download(url: str, check: str, dest: Path) -> None:
  """`url` to `dest` through a temporary file in the same folder, renamed only once
  its digest passes `check` (see Published); the temporary file is removed on any
  failure, and on SIGTERM."""
  dest.parent.mkdir(parents=True, exist_ok=True)
  manual = (
    f"Download {url} yourself and put it at {dest} (or pass weights=PATH), "
    "or set GRADCAM_JAX_WEIGHTS_URL to a mirror of the folder."
  )
  _remove_dead_parts(dest.parent, dest.name)
  tmp = dest.parent / f".{dest.name}.{os.getpid()}.part"
  with _cleanup_on_sigterm():
    try:
      with open(tmp, "wb") as out:
        try:
          with urllib.request.urlopen(url, timeout=RATE_WINDOW) as response:
            print(f"gradcam-jax: downloading {url} to {dest}", file=sys.stderr)
            digest = _Digest(check)
            size, expected = _stream(response, out, url, manual, digest)
        except (OSError, http.client.HTTPException) as err:
          reason = getattr(err, "reason", None) or err
          raise WeightsError(
            f"could not download {url}: {type(err).__name__}: {reason}. {manual}"
          ) from err
      if expected is not None and size != expected:
        raise WeightsError(
          f"could not download {url}: the connection ended after "
          f"{size} of {expected} bytes. {manual}"
        )
      if not digest.ok():
        raise WeightsError(
          f"{url}: the downloaded file's {digest.got()}, expected {check}: not "
          "the published file; nothing was kept. " + manual
        )
      os.replace(tmp, dest)
    finally:
      tmp.unlink(missing_ok=True)
