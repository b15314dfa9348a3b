"""``gradcam-jax explain``: explain every image of files, folders and globs.

Three stages overlap: a thread pool decodes images a few batches ahead, the device
explains batch k+1 while batch k is handed to a bounded writer pool, and the main
thread keeps the journal (``gradcam_jax._journal``). Every batch has the same shape
(the last one is padded), so the explainer compiles once; with several local
devices the batch is sharded across them. Under ``jax.distributed`` each process
explains its own slice of the sorted inputs and keeps its own journal part.

Resume: an input is skipped when its latest record is a finished result of the
same settings (model, weights, layer, method, target, resize, what to save,
package version) for the same file (size and modification time) with all its
outputs present; anything else is redone. Bad files are recorded and skipped.
"""

from __future__ import annotations

import json
import shutil
import sys
import time
import uuid
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Iterator, NamedTuple

import jax
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P

import gradcam_jax as gcj
from gradcam_jax import _outputs, io
from gradcam_jax import visualize as vis
from gradcam_jax._journal import MARKER, Journal, read_state
from gradcam_jax._methods import ALL_METHODS

__all__ = ["Job", "Summary", "build_explainer", "explain_files"]


class Job(NamedTuple):
  """What to compute and what to keep (the recorded settings derive from it).

  Attributes:
    layer: target layer path.
    method: a CAM method name (``gcj.ALL_METHODS``).
    target: class index to explain, or None for the predicted class.
    resize: ``"squash"``, ``"crop"`` or ``"pad"`` (see :func:`io.resize_to`).
    save: output kinds to write (``_outputs.KINDS``).
    arrays_dtype: ``"float32"`` or ``"float16"`` for the arrays in the ``.npz``.
    weights: an identity of the weights (a hash), recorded with each result.
    max_pixels: inputs with more pixels are refused before decoding.
  """
  layer: str
  method: str = "gradcam"
  target: int | None = None
  resize: str = "squash"
  save: tuple = _outputs.KINDS
  arrays_dtype: str = "float32"
  weights: str = ""
  max_pixels: int | None = io.MAX_PIXELS


class Summary(NamedTuple):
  ok: int
  skipped: int
  failed: int
  seconds: float
  first_batch_seconds: float  # start to the first batch's results on the host


def settings_of(model, job: Job) -> dict:
  """What produced a result: a changed value means the result is redone."""
  return {"model": model.name, "weights": job.weights, "layer": str(job.layer),
          "method": job.method, "target": job.target, "resize": job.resize,
          "save": sorted(job.save), "arrays_dtype": job.arrays_dtype,
          "version": gcj.__version__}


def _input_identity(path: Path) -> dict | None:
  try:
    st = path.stat()
  except OSError:
    return None
  return {"size": st.st_size, "mtime_ns": st.st_mtime_ns}


def _finished(record, settings: dict, identity, out_dir: Path) -> bool:
  return (record is not None and record.get("event") == "done"
          and record.get("status") == "ok" and record.get("settings") == settings
          and record.get("input") == identity
          and all((out_dir / rel).exists() for rel in record["outputs"].values()))


def build_explainer(model, variables, job: Job):
  """``explain(images, targets)`` with every field of an Explanation, for any method:
  Guided Grad-CAM for gradient methods; a perturbation method's map times guided
  backprop for Score-CAM and Ablation-CAM. Raises a GradCAMError for a bad layer or
  method when traced."""
  if ALL_METHODS[job.method].kind == "gradient":
    return gcj.guided_gradcam(model.apply_fn, variables, layer=job.layer,
                              method=job.method)
  cam = gcj.cam(model.apply_fn, variables, layer=job.layer, method=job.method,
                batch_size=64)
  gbp = gcj.guided_backprop(model.apply_fn, variables)

  def explain(images, targets=None):
    c = cam(images, targets)
    g = gbp(images, c.targets)
    return c._replace(guided=g.guided,
                      guided_gradcam=g.guided * c.cam[..., None].astype(g.guided.dtype))
  return explain


def _decoded(sources, size, resize: str, max_pixels, workers: int,
             ahead: int) -> Iterator[tuple]:
  """(source, image or None, error or None) in order, decoded by a thread pool at
  most `ahead` images in advance (memory stays bounded whatever the folder size)."""
  def load(source):
    image, error = io.read_image(source.path, max_pixels)
    return source, None if image is None else io.resize_to(image, size, resize), error

  pending: deque = deque()
  with ThreadPoolExecutor(workers) as pool:
    for source in sources:
      pending.append(pool.submit(load, source))
      if len(pending) >= ahead:
        yield pending.popleft().result()
    while pending:
      yield pending.popleft().result()


def _batches(items: Iterator[tuple], batch: int) -> Iterator[list]:
  chunk = []
  for item in items:
    chunk.append(item)
    if len(chunk) == batch:
      yield chunk
      chunk = []
  if chunk:
    yield chunk


class _Progress:
  def __init__(self, total: int, stream=sys.stderr):
    self.total, self.done, self.stream = total, 0, stream
    self.start = time.perf_counter()

  def update(self, n: int) -> None:
    self.done += n
    rate = self.done / max(time.perf_counter() - self.start, 1e-9)
    fill = int(30 * self.done / max(self.total, 1))
    self.stream.write(f"\r[{'#' * fill}{'.' * (30 - fill)}] {self.done}/{self.total}"
                      f" {rate:6.1f} img/s")
    self.stream.flush()

  def close(self) -> None:
    if self.total:
      self.stream.write("\n")


def _device_batch(batch: int) -> tuple[int, NamedSharding | None]:
  devices = jax.local_devices()
  if len(devices) == 1:
    return batch, None
  batch = -(-batch // len(devices)) * len(devices)
  mesh = jax.sharding.Mesh(np.array(devices), ("batch",))
  return batch, NamedSharding(mesh, P("batch"))


def _payload(image, out, i, meta: dict) -> dict:
  """What the writer encodes for image i of a batch (views into the batch)."""
  return {"image": image, "cam": out.cam[i], "cam_raw": out.cam_raw[i],
          "guided": out.guided[i], "guided_gradcam": out.guided_gradcam[i],
          "logits": out.logits[i], "target": out.targets[i], "meta": meta}


def _encode(p: dict, job: Job) -> dict[str, bytes]:
  files = {}
  if "input" in job.save:
    files["input"] = _outputs.encode_png(p["image"])
  if "overlay" in job.save:
    files["overlay"] = _outputs.encode_png(vis.overlay(p["image"], p["cam"]))
  if "guided_gradcam" in job.save:
    files["guided_gradcam"] = _outputs.encode_png(
        vis.deprocess_gradient(p["guided_gradcam"]))
  if "arrays" in job.save:
    dt = np.dtype(job.arrays_dtype)
    files["arrays"] = _outputs.encode_npz(
        {"cam": p["cam"].astype(dt), "cam_raw": p["cam_raw"].astype(dt),
         "guided": p["guided"].astype(dt),
         "guided_gradcam": p["guided_gradcam"].astype(dt),
         "logits": np.asarray(p["logits"], np.float32), "target": p["target"],
         "meta": np.array(json.dumps(p["meta"]))})
  return files


def _write(out_dir: Path, tmp_dir: Path, name: str, p: dict, job: Job,
           record: dict) -> dict:
  """Encode and write one image's outputs; the finished record, or an error record."""
  try:
    files = _encode(p, job)
    paths = _outputs.output_paths(out_dir, name)
    _outputs.write_atomically({paths[k]: data for k, data in files.items()}, tmp_dir)
    for kind, path in paths.items():  # an earlier run's kinds no longer asked for:
      if kind not in files:          # ours (the name is this input's), and stale
        path.unlink(missing_ok=True)
    return record
  except Exception as err:  # noqa: BLE001 (one bad write never stops the others)
    return {"path": record["path"], "status": "error", "id": record["id"],
            "name": name, "settings": record["settings"],
            "error": f"could not write outputs: {type(err).__name__}: {err}"}


def explain_files(model, sources: list[io.Source], out_dir: Path, job: Job, *,
                  batch_size: int = 16, overwrite: bool = False,
                  process: tuple[int, int] = (0, 1), workers: int = 4,
                  writers: int = 2, progress: bool = True,
                  on_start=None) -> Summary:
  """Explain `sources` with `model` (a ``ZooModel``) into `out_dir` as `job` says.

  Args:
    process: (index, count) of this process; it takes every count-th source.
    on_start: called with (todo, skipped) counts once the journal is read.
  """
  start = time.perf_counter()
  out_dir = Path(out_dir)
  (out_dir / MARKER).mkdir(parents=True, exist_ok=True)
  index, count = process
  tmp_dir = out_dir / MARKER / f"tmp-{index:04d}"
  shutil.rmtree(tmp_dir, ignore_errors=True)  # a killed run's half-written files
  settings = settings_of(model, job)
  state = read_state(out_dir)
  todo, skipped = [], 0
  for s in sources[index::count]:
    if not overwrite and _finished(state.latest.get(str(s.path)), settings,
                                   _input_identity(s.path), out_dir):
      skipped += 1
    else:
      todo.append(s)
  if on_start:
    on_start(len(todo), skipped)
  batch, sharding = _device_batch(batch_size)
  variables = model.variables
  if sharding is not None:  # params replicated on every device, images split
    variables = jax.device_put(variables, NamedSharding(sharding.mesh, P()))
  explain = gcj.jit(build_explainer(model, variables, job))
  h, w = model.input_size
  bar = _Progress(len(todo)) if progress else None
  journal = Journal(out_dir, index)
  ok = failed = 0
  first_batch_seconds = 0.0
  writing: deque = deque()

  def finish(record):
    nonlocal ok, failed
    journal.write("done", record)
    if record["status"] == "ok":
      ok += 1
    else:
      failed += 1

  def hand_over(chunk_good, out, n_chunk):
    """Results of one batch on the host: claim names, give them to the writers."""
    nonlocal first_batch_seconds
    out = jax.device_get(out)
    if not first_batch_seconds:
      first_batch_seconds = time.perf_counter() - start
    probs = np.asarray(jax.nn.softmax(np.asarray(out.logits, np.float32)))
    for i, (s, image) in enumerate(chunk_good):
      path = str(s.path)
      name = _outputs.assign_name(s.rel, path, out_dir, state.owners)
      if name is None:
        finish({"path": path, "status": "error", "settings": settings,
                "error": "every output name for it is taken by files gradcam-jax "
                         "did not write"})
        continue
      state.owners[name] = path
      pred, tgt = int(np.argmax(probs[i])), int(out.targets[i])
      rid = uuid.uuid4().hex
      outputs = {k: name + _outputs.SUFFIXES[k] for k in job.save}
      journal.write("claim", {"path": path, "id": rid, "name": name,
                              "outputs": outputs})
      record = {"path": path, "status": "ok", "id": rid, "name": name,
                "outputs": outputs, "settings": settings,
                "input": _input_identity(s.path), "predicted": pred,
                "predicted_name": model.class_names[pred],
                "probability": float(probs[i, pred]), "target": tgt,
                "target_name": model.class_names[tgt],
                "target_probability": float(probs[i, tgt])}
      meta = {"path": path, "id": rid, "settings": settings}
      writing.append(pool.submit(_write, out_dir, tmp_dir, name,
                                 _payload(image, out, i, meta), job, record))
    while len(writing) > 2 * batch:  # bounded: at most two batches being written
      finish(writing.popleft().result())
    if bar:
      bar.update(n_chunk)

  try:
    with ThreadPoolExecutor(writers) as pool:
      in_flight = None  # the previous batch, computing while this one is prepared
      for chunk in _batches(_decoded(todo, (h, w), job.resize, job.max_pixels,
                                     workers, ahead=2 * batch), batch):
        for s, _, err in chunk:
          if err is not None:
            finish({"path": str(s.path), "status": "error", "settings": settings,
                    "error": err})
        good = [(s, im) for s, im, err in chunk if im is not None]
        launched = None
        if good:
          images = np.zeros((batch, h, w, 3), np.uint8)
          images[:len(good)] = np.stack([im for _, im in good])
          x = model.preprocess(images)
          targets = np.full(batch, job.target, np.int32) if job.target is not None \
              else None
          if sharding is not None:
            x = jax.device_put(x, sharding)
            targets = None if targets is None else jax.device_put(targets, sharding)
          launched = (good, explain(x, targets), len(chunk))
        elif bar:
          bar.update(len(chunk))
        if in_flight:
          hand_over(*in_flight)
        in_flight = launched
      if in_flight:
        hand_over(*in_flight)
      while writing:
        finish(writing.popleft().result())
  finally:
    while writing:  # interrupted: what was handed over is still written and recorded
      finish(writing.popleft().result())
    journal.close()
    if bar:
      bar.close()
  return Summary(ok, skipped, failed, time.perf_counter() - start, first_batch_seconds)
