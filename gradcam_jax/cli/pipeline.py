"""The job's device pipeline: a thread pool decodes images a few batches ahead, and
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

from gradcam_jax import io
from gradcam_jax.io import Source

__all__ = ["Batch", "decoded", "device_batch", "explained_batches", "job_batch"]


class Batch(NamedTuple):
  """One batch's outcome, on the host.

  Attributes:
    failed: ``(source, reason)`` for the inputs that could not be decoded.
    good: ``(source, image)`` for the decoded ones, in the batch's order.
    orientations: the EXIF orientation applied to each of `good` (None: not read).
    out: the Explanation of `good` (padded rows after them), or None if none.
  """

  failed: list
  good: list
  out: Any
  orientations: list


def decoded(
  sources,
  size,
  resize: str,
  max_pixels,
  workers: int,
  ahead: int,
  exif_orientation: bool = True,
) -> Iterator[tuple]:
  """(source, image or None, error or None, EXIF orientation applied) in order,
  decoded by a thread pool at most `ahead` images in advance (memory stays bounded
  whatever the folder size)."""

  def load(source):
    image, error, orientation = io.read_oriented(
      source.path, max_pixels, exif_orientation=exif_orientation
    )
    fitted = None if image is None else io.resize_to(image, size, resize, max_pixels)
    return source, fitted, error, orientation

  pending: deque = deque()
  with ThreadPoolExecutor(workers) as pool:
    for source in sources:
      pending.append(pool.submit(load, source))
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
  size: tuple[int, int],
  resize: str,
  max_pixels,
  target,
  batch: int,
  sharding,
  workers: int,
  exif_orientation: bool = True,
) -> Iterator[Batch]:
  """Decode, preprocess and explain `todo` batch by batch; each batch is yielded
  once its results are on the host, while the next one computes."""
  h, w = size
  in_flight = None  # the previous batch, computing while this one is prepared

  def landed(failed, good, out, orientations) -> Batch:
    return Batch(failed, good, None if out is None else jax.device_get(out), orientations)

  stream = decoded(todo, size, resize, max_pixels, workers, 2 * batch, exif_orientation)
  for chunk in _chunks(stream, batch):
    failed = [(s, err) for s, _, err, _ in chunk if err is not None]
    good = [(s, im) for s, im, _, _ in chunk if im is not None]
    orientations = [o for _, im, _, o in chunk if im is not None]
    out = None
    if good:
      images = np.zeros((batch, h, w, 3), np.uint8)
      images[: len(good)] = np.stack([im for _, im in good])
      x = preprocess(images)
      targets = None if target is None else np.full(batch, target, np.int32)
      if sharding is not None:
        x = jax.device_put(x, sharding)
        targets = None if targets is None else jax.device_put(targets, sharding)
      out = explain(x, targets)  # dispatched: runs while the previous batch lands
    if in_flight is not None:
      yield landed(*in_flight)
    in_flight = (failed, good, out, orientations)
  if in_flight is not None:
    yield landed(*in_flight)
