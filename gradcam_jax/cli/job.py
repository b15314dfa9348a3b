"""``gradcam-jax explain``'s folder job: explain every input (images, signals,
volumes or clips: ``inputs.py``) of files, folders and globs into an output folder.

:func:`explain_files` runs three stages: the plan (``plan.py``: what is left to do),
the device pipeline (``pipeline.py``: decode ahead, explain batch k+1 while batch k
lands) and the records (``records.py``: claim names, write files, record results
in the journal, ``journal.py``). Under ``jax.distributed`` each process explains
its own slice of the sorted inputs and keeps its own journal part. Bad files are
recorded and skipped.
"""

from __future__ import annotations

import sys
import time
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path
from typing import NamedTuple

import jax
from jax.sharding import NamedSharding, PartitionSpec as P

import gradcam_jax as gcj
from gradcam_jax import io, media
from gradcam_jax._methods import ALL_METHODS
from gradcam_jax.cli import inputs, outputs
from gradcam_jax.cli.atomic import work_dir
from gradcam_jax.cli.journal import Journal, read_state
from gradcam_jax.cli.pipeline import device_batch, explained_batches, job_batch
from gradcam_jax.cli.plan import plan
from gradcam_jax.cli.records import Recorder

__all__ = ["Job", "Summary", "build_explainer", "explain_files", "settings_of"]


class Job(NamedTuple):
  """What to compute and what to keep (the recorded settings derive from it).

  Attributes:
    layer: target layer path.
    method: a CAM method name (``gcj.ALL_METHODS``).
    target: class index to explain, or None for the predicted class.
    resize: ``"squash"``, ``"crop"`` or ``"pad"`` (see :func:`io.resize_to`).
    save: output kinds to write (``outputs.KINDS``).
    arrays_dtype: ``"float32"`` or ``"float16"`` for the arrays in the ``.npz``.
    weights: an identity of the weights (a hash), recorded with each result.
    max_pixels: images (and video frames) with more pixels are refused before
      decoding.
    exif_orientation: apply each photo's EXIF orientation (as viewers do).
    max_elements: ``.npy`` arrays and NIfTI volumes with more values are refused
      before reading.
  """

  layer: str
  method: str = "gradcam"
  target: int | None = None
  resize: str = "squash"
  save: tuple = outputs.KINDS
  arrays_dtype: str = "float32"
  weights: str = ""
  max_pixels: int | None = io.MAX_PIXELS
  exif_orientation: bool = True
  max_elements: int = media.MAX_ELEMENTS


class Summary(NamedTuple):
  ok: int
  skipped: int
  failed: int
  seconds: float
  first_batch_seconds: float  # start to the first batch's results on the host
  unrecorded: tuple = ()  # (path, reason): failed, and not in the journal


def settings_of(model, job: Job) -> dict:
  """What produced a result: a changed value means the result is redone."""
  return {
    "model": model.name,
    "weights": job.weights,
    "layer": str(job.layer),
    "method": job.method,
    "target": job.target,
    "resize": job.resize,
    "save": sorted(job.save),
    "exif_orientation": job.exif_orientation,
    "arrays_dtype": job.arrays_dtype,
    "version": gcj.__version__,
  }


def build_explainer(model, variables, job: Job):
  """``explain(images, targets)`` with every field of an Explanation, for any method:
  Guided Grad-CAM for gradient methods; the map of any other (Score-CAM, FullGrad,
  ...) times guided backprop. Raises a GradCAMError for a bad layer or
  method when traced."""
  if ALL_METHODS[job.method].kind == "gradient":
    return gcj.guided_gradcam(model.apply_fn, variables, layer=job.layer, method=job.method)
  whole = ALL_METHODS[job.method].kind == "model"  # FullGrad reads every layer
  cam = gcj.cam(
    model.apply_fn,
    variables,
    layer=None if whole else job.layer,
    method=job.method,
    batch_size=64,
  )
  gbp = gcj.guided_backprop(model.apply_fn, variables)

  def explain(images, targets=None):
    c = cam(images, targets)
    g = gbp(images, c.targets)
    return c._replace(
      guided=g.guided, guided_gradcam=g.guided * c.cam[..., None].astype(g.guided.dtype)
    )

  return explain


class _Progress:
  def __init__(self, total: int, stream=sys.stderr):
    self.total, self.done, self.stream = total, 0, stream
    self.start = time.perf_counter()

  def update(self, n: int) -> None:
    self.done += n
    rate = self.done / max(time.perf_counter() - self.start, 1e-9)
    fill = int(30 * self.done / max(self.total, 1))
    self.stream.write(
      f"\r[{'#' * fill}{'.' * (30 - fill)}] {self.done}/{self.total} {rate:6.1f} img/s"
    )
    self.stream.flush()

  def close(self) -> None:
    if self.total:
      self.stream.write("\n")


def explain_files(
  model,
  sources: list[io.Source],
  out_dir: Path,
  job: Job,
  *,
  batch_size: int = 16,
  overwrite: bool = False,
  process: tuple[int, int] = (0, 1),
  workers: int = 4,
  writers: int = 2,
  progress: bool = True,
  on_start=None,
) -> Summary:
  """Explain `sources` with `model` (a ``ZooModel``) into `out_dir` as `job` says.

  Args:
    process: (index, count) of this process; it takes every count-th source.
    on_start: called with (todo, skipped) counts once the journal is read.
  """
  start = time.perf_counter()
  out_dir = Path(out_dir)
  tmp_dir = work_dir(out_dir, f"tmp-{process[0]:04d}", fresh=True)
  settings = settings_of(model, job)
  state = read_state(out_dir)
  todo, skipped = plan(
    sources,
    out_dir,
    settings,
    state.latest,
    overwrite=overwrite,
    process=process,
    media=model.media,
  )
  if on_start:
    on_start(len(todo), skipped)
  batch, sharding = device_batch(job_batch(len(todo), batch_size))
  variables = model.variables
  if sharding is not None:  # params replicated on every device, images split
    variables = jax.device_put(variables, NamedSharding(sharding.mesh, P()))
  explain = gcj.jit(build_explainer(model, variables, job))
  bar = _Progress(len(todo)) if progress else None
  first_batch_seconds = 0.0
  with Journal(out_dir, process[0]) as journal, ThreadPoolExecutor(writers) as pool:
    recorder = Recorder(
      out_dir, tmp_dir, journal, pool, model, job, settings, state.owners, state.latest
    )
    try:
      for b in explained_batches(
        explain,
        model.preprocess,
        todo,
        read=partial(
          inputs.read_input,
          model=model,
          resize=job.resize,
          max_pixels=job.max_pixels,
          max_elements=job.max_elements,
          exif_orientation=job.exif_orientation,
        ),
        shape=(*model.input_size, model.channels),
        dtype=inputs.input_dtype(model.media),
        target=job.target,
        batch=batch,
        sharding=sharding,
        workers=workers,
      ):
        if b.out is not None and not first_batch_seconds:
          first_batch_seconds = time.perf_counter() - start
        recorder.batch(b)
        recorder.drain(keep=2 * batch)  # bounded: at most two batches being written
        if bar:
          bar.update(len(b.failed) + len(b.good))
    finally:  # also when interrupted: what was handed over is written and recorded
      recorder.drain()
      if bar:
        bar.close()
  return Summary(
    recorder.ok,
    skipped,
    recorder.failed,
    time.perf_counter() - start,
    first_batch_seconds,
    tuple(recorder.unrecorded),
  )
