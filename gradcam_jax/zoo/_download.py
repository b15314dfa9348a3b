"""Pretrained weights by name: the files Keras publishes, fetched once into a cache.

``zoo.load("vgg16", weights="imagenet")`` reads
``$GRADCAM_JAX_HOME/weights/vgg16_weights_tf_dim_ordering_tf_kernels.h5`` (default
home ``~/.cache/gradcam-jax``), downloading it first if it is not there: streamed to
a temporary file beside it, its md5 checked against the one Keras' own
``keras/applications/vgg16.py`` checks, then renamed into place, with a progress bar on
stderr. A failed, partial, mismatched, stalled (slower than ``MIN_RATE`` bytes/s
over ``RATE_WINDOW`` seconds) or SIGTERM-ed download leaves nothing behind, and a
temporary file of a download killed outright (SIGKILL) is removed by the next
attempt. Every server misbehaviour is a ``WeightsError``. ``GRADCAM_JAX_WEIGHTS_URL`` replaces
the folder the files are fetched from (a mirror of Keras' ``keras-applications``
folder, e.g. ``http://127.0.0.1:8000/``).
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

__all__ = ["KERAS_FILES", "home", "url_of", "weights_file"]

KERAS_BASE = "https://storage.googleapis.com/tensorflow/keras-applications/"


class KerasFile(NamedTuple):
  """A file Keras publishes: its path under the base URL, and its md5."""

  path: str
  md5: str


KERAS_FILES = {
  "vgg16": KerasFile(
    "vgg16/vgg16_weights_tf_dim_ordering_tf_kernels.h5", "64373286793e3c8b2b4e3219cbf3544b"
  ),
}


def home() -> Path:
  """``$GRADCAM_JAX_HOME``, default ``~/.cache/gradcam-jax``."""
  return Path(os.environ.get("GRADCAM_JAX_HOME") or Path.home() / ".cache" / "gradcam-jax")


def url_of(name: str) -> str:
  base = os.environ.get("GRADCAM_JAX_WEIGHTS_URL") or KERAS_BASE
  return base.rstrip("/") + "/" + KERAS_FILES[name].path


def _md5(path: Path) -> str:
  digest = hashlib.md5()
  with path.open("rb") as f:
    for block in iter(lambda: f.read(1 << 20), b""):
      digest.update(block)
  return digest.hexdigest()


def weights_file(name: str) -> Path:
  """The cached weights file of zoo model `name`, downloaded if absent."""
  if name not in KERAS_FILES:
    raise ArgumentError(
      f"weights='imagenet': pretrained weights by name exist for "
      f"{sorted(KERAS_FILES)}; got model {name!r}. Pass weights=PATH (a torchvision "
      "state dict) for it."
    )
  known = KERAS_FILES[name]
  dest = home() / "weights" / Path(known.path).name
  if dest.exists():
    got = _md5(dest)
    if got != known.md5:
      raise WeightsError(
        f"{dest}: md5 {got}, expected {known.md5} (the file Keras publishes at "
        f"{url_of(name)}). It is not the published file: delete it to download "
        "again, or pass weights=PATH to use it anyway."
      )
    return dest
  _download(url_of(name), known.md5, dest)
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


def _stream(response, out, url: str, manual: str) -> tuple[str, int, int | None]:
  """Copy the body to `out`: (md5, size, announced size). WeightsError when the
  server is slower than MIN_RATE over a window of RATE_WINDOW seconds."""
  expected = _content_length(response, url, manual)
  progress = _Progress(expected)
  digest, size = hashlib.md5(), 0
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
  return digest.hexdigest(), size, expected


def _download(url: str, md5: str, dest: Path) -> None:
  """`url` to `dest` through a temporary file in the same folder, renamed only once
  its md5 is `md5`; the temporary file is removed on any failure, and on SIGTERM."""
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
            got, size, expected = _stream(response, out, url, manual)
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
      if got != md5:
        raise WeightsError(
          f"{url}: the downloaded file's md5 is {got}, "
          f"expected {md5}: not the published file; nothing was kept. " + manual
        )
      os.replace(tmp, dest)
    finally:
      tmp.unlink(missing_ok=True)
