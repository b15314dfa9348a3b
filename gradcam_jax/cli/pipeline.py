"""The job's device pipeline: a thread pool reads inputs a few batches ahead, and
the device explains batch k+1 while batch k goes back to the host.

Every batch has the same shape (the last one is padded), so the explainer compiles
once; a job smaller than one batch runs at a smaller size (:func:`job_batch`); with
several local devices the batch is sharded across them.
"""

from __future__ import annotations

from collections import deque
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Iterator, NamedTuple

import jax
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P

from gradcam_jax.io import Source

__all__ = ["Batch", "decoded", "device_batch", "explained_batches", "job_batch"]


class Batch(NamedTuple):
  """One batch's outcome, on the host.

  Attributes:
    failed: ``(source, reason)`` for the inputs that could not be read.
    good: ``(source, input)`` for the read ones, in the batch's order.
    out: the Explanation of `good` (padded rows after them), or None if none.
    extras: how each of `good` was read (``inputs.Read.extra``: the EXIF
      orientation applied to a photo; a scan's affine and voxel grid).
  """

  failed: list
  good: list
  out: Any
  extras: list


def decoded(sources, read: Callable, workers: int, ahead: int) -> Iterator[tuple]:
  """(source, ``Read``) in order, each ``read(path)`` (``inputs.read_input``) run by
  a thread pool at most `ahead` inputs in advance (memory stays bounded whatever the
  folder size)."""
  pending: deque = deque()
  with ThreadPoolExecutor(workers) as pool:
    for source in sources:
      pending.append(pool.submit(lambda s: (s, read(s.path)), source))
      if len(pending) >= ahead:
        yield pending.popleft().result()
    while pending:
      yield pending.popleft().result()


def _chunks(items: Iterator[tuple], size: int) -> Iterator[list]:
  chunk = []
  for item in items:
    chunk.append(item)
    if len(chunk) == size:
      yield chunk
      chunk = []
  if chunk:
    yield chunk


def job_batch(todo: int, batch_size: int) -> int:
  """The batch a job of `todo` inputs runs at: `batch_size`, or, for a job smaller
  than that, the next power of two that holds it (memory for the job, not for the
  batch size; the few sizes keep compiles few). Every batch of a job has the same
  size: the last one is padded, and the explainer compiles once."""
  if todo >= batch_size:
    return batch_size
  return min(batch_size, 1 << max(0, todo - 1).bit_length())


def device_batch(batch: int) -> tuple[int, NamedSharding | None]:
  """The batch rounded up to a multiple of the local devices, and the sharding that
  splits it across them (None on one device)."""
  devices = jax.local_devices()
  if len(devices) == 1:
    return batch, None
  batch = -(-batch // len(devices)) * len(devices)
  mesh = jax.sharding.Mesh(np.array(devices), ("batch",))
  return batch, NamedSharding(mesh, P("batch"))


def explained_batches(
  explain: Callable,
  preprocess: Callable,
  todo: list[Source],
  *,
  read: Callable,
  shape: tuple[int, ...],
  dtype,
  target,
  batch: int,
  sharding,
  workers: int,
) -> Iterator[Batch]:
  """Read, preprocess and explain `todo` batch by batch (`read(path)` gives an
  ``inputs.Read`` of `shape` and `dtype`); each batch is yielded once its results
  are on the host, while the next one computes."""
  in_flight = None  # the previous batch, computing while this one is prepared

  def landed(failed, good, out, extras) -> Batch:
    return Batch(failed, good, None if out is None else jax.device_get(out), extras)

  stream = decoded(todo, read, workers, 2 * batch)
  for chunk in _chunks(stream, batch):
    failed = [(s, r.error) for s, r in chunk if r.data is None]
    good = [(s, r.data) for s, r in chunk if r.data is not None]
    extras = [r.extra for _, r in chunk if r.data is not None]
    out = None
    if good:
      inputs = np.zeros((batch, *shape), dtype)
      inputs[: len(good)] = np.stack([x for _, x in good])
      x = preprocess(inputs)
      targets = None if target is None else np.full(batch, target, np.int32)
      if sharding is not None:
        x = jax.device_put(x, sharding)
        targets = None if targets is None else jax.device_put(targets, sharding)
      out = explain(x, targets)  # dispatched: runs while the previous batch lands
    if in_flight is not None:
      yield landed(*in_flight)
    in_flight = (failed, good, out, extras)
  if in_flight is not None:
    yield landed(*in_flight)
