"""``gradcam-jax explain``: explain every image of files, folders and globs.

Streaming: images are decoded by a thread pool a few batches ahead while the device
computes, so memory stays bounded whatever the folder size. Every batch has the
same shape (the last one is padded), so the explainer compiles once; with several
local devices the batch is sharded across them. Under ``jax.distributed`` each
process explains its own slice of the sorted inputs and writes its own index
part. Bad files are recorded in the index and skipped; finished outputs are
skipped on a second run unless ``overwrite``.
"""

from __future__ import annotations

import json
import sys
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Iterator, NamedTuple

import cv2
import jax
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P

import gradcam_jax as gcj
from gradcam_jax import io
from gradcam_jax import visualize as vis

SUFFIXES = ("_overlay.png", "_guided_gradcam.png", ".npz")


class Summary(NamedTuple):
  ok: int
  skipped: int
  failed: int
  seconds: float
  records: list


def _outputs(out_dir: Path, stem: str) -> list[Path]:
  return [out_dir / f"{stem}{s}" for s in SUFFIXES]


def _decoded(sources, size, workers: int, ahead: int) -> Iterator[tuple]:
  """(source, image or None, error or None) in order, decoded by a thread pool at
  most `ahead` images in advance (memory stays bounded whatever the folder size)."""
  def load(source):
    image, error = io.read_image(source.path)
    return source, None if image is None else io.fit_size(image, size), error

  pending: deque = deque()
  todo = iter(sources)
  with ThreadPoolExecutor(workers) as pool:
    for source in todo:
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
    width = 30
    fill = int(width * self.done / max(self.total, 1))
    self.stream.write(f"\r[{'#' * fill}{'.' * (width - fill)}] {self.done}/{self.total}"
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


def explain_files(model, sources: list[io.Source], out_dir: Path, *, layer=None,
                  target: int | None = None, batch_size: int = 16,
                  overwrite: bool = False, process: tuple[int, int] = (0, 1),
                  workers: int = 4, progress: bool = True) -> Summary:
  """Explain `sources` with `model` (a ``ZooModel``), writing into `out_dir`.

  Args:
    process: (index, count) of this process; it takes every count-th source.
  """
  start = time.perf_counter()
  out_dir.mkdir(parents=True, exist_ok=True)
  index, count = process
  mine = sources[index::count]
  index_path = out_dir / f"index.part-{index:04d}.jsonl"
  done = [] if overwrite else [
      s for s in mine if all(p.exists() for p in _outputs(out_dir, s.stem))]
  todo = [s for s in mine if s not in set(done)]
  skipped = len(done)
  batch, sharding = _device_batch(batch_size)
  variables = model.variables
  if sharding is not None:  # params replicated on every device, images split
    variables = jax.device_put(variables, NamedSharding(sharding.mesh, P()))
  explain = gcj.jit(gcj.guided_gradcam(model.apply_fn, variables,
                                       layer=layer or model.layer))
  h, w = model.input_size
  bar = _Progress(len(todo)) if progress else None
  ok = failed = 0
  records = []
  with index_path.open("a") as log:
    for chunk in _batches(_decoded(todo, (h, w), workers, ahead=2 * batch), batch):
      good = [(s, im) for s, im, err in chunk if im is not None]
      for s, _, err in chunk:
        if err is not None:
          failed += 1
          records.append({"path": str(s.path), "status": "error", "error": err})
          log.write(json.dumps(records[-1]) + "\n")
      if good:
        images = np.zeros((batch, h, w, 3), np.uint8)
        images[:len(good)] = np.stack([im for _, im in good])
        x = model.preprocess(images)
        targets = None if target is None else np.full(batch, target, np.int32)
        if sharding is not None:
          x = jax.device_put(x, sharding)
          targets = None if targets is None else jax.device_put(targets, sharding)
        out = jax.device_get(explain(x, targets) if targets is not None else explain(x))
        probs = np.asarray(jax.nn.softmax(out.logits.astype(np.float32)))
        for i, (s, image) in enumerate(good):
          records.append(_write_one(out_dir, s, image, out, probs, i, model.class_names))
          log.write(json.dumps(records[-1]) + "\n")
          ok += 1
      log.flush()
      if bar:
        bar.update(len(chunk))
  if bar:
    bar.close()
  return Summary(ok, skipped, failed, time.perf_counter() - start, records)


def _write_one(out_dir, source, image, out, probs, i, class_names) -> dict:
  paths = _outputs(out_dir, source.stem)
  paths[0].parent.mkdir(parents=True, exist_ok=True)
  cv2.imwrite(str(paths[0]), vis.overlay(image, out.cam[i])[..., ::-1])
  cv2.imwrite(str(paths[1]), vis.deprocess_gradient(out.guided_gradcam[i])[..., ::-1])
  tmp = paths[2].with_name(paths[2].name + ".tmp.npz")
  np.savez_compressed(tmp, cam=out.cam[i], cam_raw=out.cam_raw[i], guided=out.guided[i],
                      guided_gradcam=out.guided_gradcam[i], logits=out.logits[i],
                      target=out.targets[i])
  tmp.replace(paths[2])  # written last and atomically: its presence means "done"
  pred, tgt = int(np.argmax(probs[i])), int(out.targets[i])
  return {"path": str(source.path), "status": "ok",
          "predicted": pred, "predicted_name": class_names[pred],
          "probability": float(probs[i, pred]), "target": tgt,
          "target_name": class_names[tgt], "target_probability": float(probs[i, tgt]),
          "outputs": [str(p.relative_to(out_dir)) for p in paths]}
