"""Pretrained weights by name: the files Keras publishes, fetched once into a cache.

``zoo.load("vgg16", weights="imagenet")`` reads
``$GRADCAM_JAX_HOME/weights/vgg16_weights_tf_dim_ordering_tf_kernels.h5`` (default
home ``~/.cache/gradcam-jax``), downloading it first if it is not there: streamed to
a temporary file beside it, its md5 checked against the one Keras' own
``keras/applications/vgg16.py`` checks, then renamed into place. A failed, partial
or mismatched download leaves nothing behind. ``GRADCAM_JAX_WEIGHTS_URL`` replaces
the folder the files are fetched from (a mirror of Keras' ``keras-applications``
folder, e.g. ``http://127.0.0.1:8000/``).
"""

from __future__ import annotations

import hashlib
import http.client
import os
import sys
import tempfile
import urllib.error
import urllib.request
from pathlib import Path
from typing import NamedTuple

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


def _download(url: str, md5: str, dest: Path) -> None:
  """`url` to `dest` through a temporary file in the same folder, renamed only once
  its md5 is `md5`; the temporary file is removed on any failure."""
  dest.parent.mkdir(parents=True, exist_ok=True)
  manual = (
    f"Download {url} yourself and put it at {dest} (or pass weights=PATH), "
    "or set GRADCAM_JAX_WEIGHTS_URL to a mirror of the folder."
  )
  fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
  tmp = Path(tmp)
  try:
    digest, size = hashlib.md5(), 0
    with os.fdopen(fd, "wb") as out:
      try:
        with urllib.request.urlopen(url, timeout=60) as response:
          expected = response.headers.get("Content-Length")
          print(
            f"gradcam-jax: downloading {url} ({int(expected) / 1e6:.0f} MB) to {dest}"
            if expected
            else f"gradcam-jax: downloading {url} to {dest}",
            file=sys.stderr,
          )
          for block in iter(lambda: response.read(1 << 20), b""):
            digest.update(block)
            out.write(block)
            size += len(block)
      except (OSError, http.client.HTTPException) as err:
        reason = getattr(err, "reason", None) or err
        raise WeightsError(
          f"could not download {url}: {type(err).__name__}: {reason}. {manual}"
        ) from err
    if expected is not None and size != int(expected):
      raise WeightsError(
        f"could not download {url}: the connection ended after "
        f"{size} of {expected} bytes. {manual}"
      )
    if digest.hexdigest() != md5:
      raise WeightsError(
        f"{url}: the downloaded file's md5 is {digest.hexdigest()}, "
        f"expected {md5}: not the published file; nothing was kept. " + manual
      )
    os.replace(tmp, dest)
  finally:
    tmp.unlink(missing_ok=True)
