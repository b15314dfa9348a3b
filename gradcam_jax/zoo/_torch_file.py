"""A PyTorch state dict file (``torch.save``'s zip format, as torchvision publishes its
weights) read into NumPy arrays without torch, and without running its pickle.

The pickle inside names the functions that rebuild each tensor. A general unpickler
would import and call whatever it names (a file can run any code that way); this
one knows the few names a state dict of tensors uses (an ordered dict, the tensor
rebuild function, the storage types) and refuses every other name with a
``WeightsError``. Each tensor is rebuilt from its storage's bytes with its offset,
shape and strides, in NumPy.
"""

from __future__ import annotations

import collections
import pickle
import zipfile
from pathlib import Path

import numpy as np

from gradcam_jax._errors import WeightsError

__all__ = ["read_torch_file"]

_STORAGES = {
  "FloatStorage": np.float32,
  "DoubleStorage": np.float64,
  "HalfStorage": np.float16,
  "LongStorage": np.int64,
  "IntStorage": np.int32,
  "ShortStorage": np.int16,
  "CharStorage": np.int8,
  "ByteStorage": np.uint8,
  "BoolStorage": np.bool_,
}


class _Storage:
  """A storage type named by the pickle (``torch.FloatStorage``): its dtype."""

  def __init__(self, name: str):
    self.dtype = np.dtype(_STORAGES[name])


def _rebuild_tensor(storage, offset, size, stride, requires_grad=False, hooks=None, *_):
  """``torch._utils._rebuild_tensor_v2`` in NumPy: a copy of the strided view."""
  if not size:
    return np.array(storage[offset])
  view = np.lib.stride_tricks.as_strided(
    storage[offset:], shape=tuple(size), strides=[s * storage.itemsize for s in stride]
  )
  return np.array(view)


class _Unpickler(pickle.Unpickler):
  def __init__(self, file, archive: zipfile.ZipFile, prefix: str, order: str, name: str):
    super().__init__(file)
    self.archive, self.prefix, self.order, self.name = archive, prefix, order, name
    self.storages: dict = {}

  def find_class(self, module: str, name: str):
    if (module, name) == ("collections", "OrderedDict"):
      return collections.OrderedDict
    if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
      return _rebuild_tensor
    if module == "torch" and name in _STORAGES:
      return _Storage(name)
    raise WeightsError(
      f"{self.name}: its pickle names {module}.{name}; a state dict of tensors needs "
      "only an ordered dict, tensors and their storages, so it is not read (a "
      "pickle runs what it names). Load it with torch.load(..., weights_only=True) "
      "and save it as .safetensors."
    )

  def persistent_load(self, pid):
    kind, storage, key, _location, _numel = pid
    if kind != "storage" or not isinstance(storage, _Storage):
      raise WeightsError(f"{self.name}: an unknown persistent object {kind!r}.")
    if key not in self.storages:
      data = self.archive.read(f"{self.prefix}/data/{key}")
      self.storages[key] = np.frombuffer(data, storage.dtype.newbyteorder(self.order))
    return self.storages[key]


def read_torch_file(path) -> dict[str, np.ndarray]:
  """The tensors of a ``torch.save`` zip file, by name, as NumPy arrays (native
  byte order). A ``{"state_dict": ...}`` wrapper is unwrapped."""
  path = Path(path)
  if not zipfile.is_zipfile(path):
    raise WeightsError(
      f"{path.name}: not a zip archive: the legacy torch.save format (before torch "
      "1.6) needs torch to read (pip install torch)."
    )
  with zipfile.ZipFile(path) as archive:
    pickles = [n for n in archive.namelist() if n.endswith("/data.pkl")]
    if len(pickles) != 1:
      raise WeightsError(f"{path.name}: expected one data.pkl in the archive.")
    prefix = pickles[0][: -len("/data.pkl")]
    names = set(archive.namelist())
    order = "<"
    if f"{prefix}/byteorder" in names:
      order = "<" if archive.read(f"{prefix}/byteorder").strip() == b"little" else ">"
    with archive.open(pickles[0]) as f:
      state = _Unpickler(f, archive, prefix, order, path.name).load()
  if isinstance(state, dict) and "state_dict" in state:
    state = state["state_dict"]
  if not isinstance(state, dict) or not all(
    isinstance(v, np.ndarray) for v in state.values()
  ):
    raise WeightsError(f"{path.name}: expected a dict of tensors (a state dict).")
  return {k: v.astype(v.dtype.newbyteorder("=")) for k, v in state.items()}
