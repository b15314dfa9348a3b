"""The job's records: each explained input gets an output name (claimed in the
journal before any of its files is written), its files written by a writer pool,
and a finished record once they are in place; an input that could not be explained
gets an error record. The counts of both are kept here."""

from __future__ import annotations

import json
import uuid
from collections import deque
from concurrent.futures import Executor
from pathlib import Path

import jax
import numpy as np

from gradcam_jax import visualize as vis
from gradcam_jax.cli import outputs
from gradcam_jax.cli.atomic import write_atomically
from gradcam_jax.cli.inputs import fit_array
from gradcam_jax.cli.journal import Journal
from gradcam_jax.cli.pipeline import Batch
from gradcam_jax.cli.plan import done_alike, input_identity

__all__ = ["Recorder"]


PROBABILITY_FROM = {
  "logits": "softmax of the model's scores",
  "probabilities": "the model's output",
  "sigmoid": "the model's output (sigmoid)",
}


def probabilities(scores, output: str) -> np.ndarray:
  """The model's own probabilities (B, classes) from its explained output `scores`
  (``ZooModel.output`` says what they are): the softmax of logits, or the output
  itself when the model ends in a probability."""
  scores = np.asarray(scores, np.float32)
  if output == "logits":
    return np.asarray(jax.nn.softmax(scores, axis=-1))
  return scores


def _payload(image, out, i, meta: dict, media_kind: str, extra: dict) -> dict:
  """What the writer encodes for input i of a batch (views into the batch)."""
  return {
    "image": image,
    "cam": out.cam[i],
    "cam_raw": out.cam_raw[i],
    "guided": out.guided[i],
    "guided_gradcam": out.guided_gradcam[i],
    "logits": out.logits[i],
    "target": out.targets[i],
    "meta": meta,
    "media": media_kind,
    "extra": extra,
  }


def _overlay(p: dict) -> np.ndarray:
  """The map over its input, as the input's kind is looked at: the image; the
  signal with a colour band; three slices through the map's maximum; a row of at
  most 16 frames (slices and frames enlarged to about 128 and 96 pixels)."""
  image, cam, kind = p["image"], p["cam"], p["media"]
  if kind == "signal":
    return vis.signal_overlay(image, cam)
  if kind == "volume":
    return vis.volume_view(image, cam, scale=max(1, 128 // max(cam.shape)))
  if kind == "video":
    every = -(-len(cam) // 16)
    frames = vis.clip_frames(image, cam, every=every)
    titles = [f"t={t}" for t in range(0, len(cam), every)]
    return vis.panel(frames, titles, scale=max(1, 96 // max(cam.shape[1:])))
  return vis.overlay(image, cam)


def _nifti(p: dict) -> bytes:
  """The map resampled to the scan's voxel grid, with the scan's affine."""
  shape, cam = p["extra"]["shape"], p["cam"]
  return outputs.encode_nifti(
    fit_array(cam[..., None], shape)[..., 0], p["extra"]["affine"]
  )


def _encode(p: dict, save, arrays_dtype: str) -> dict[str, bytes]:
  files = {}
  if "input" in save:
    files["input"] = outputs.encode_png(p["image"])
  if "overlay" in save:
    files["overlay"] = outputs.encode_png(_overlay(p))
  if "guided_gradcam" in save:
    files["guided_gradcam"] = outputs.encode_png(
      vis.deprocess_gradient(p["guided_gradcam"])
    )
  if "nifti" in save:
    files["nifti"] = _nifti(p)
  if "arrays" in save:
    dt = np.dtype(arrays_dtype)
    files["arrays"] = outputs.encode_npz(
      {
        "cam": p["cam"].astype(dt),
        "cam_raw": p["cam_raw"].astype(dt),
        "guided": p["guided"].astype(dt),
        "guided_gradcam": p["guided_gradcam"].astype(dt),
        "logits": np.asarray(p["logits"], np.float32),
        "target": p["target"],
        "meta": np.array(json.dumps(p["meta"])),
      }
    )
  return files


def write_outputs(
  out_dir: Path, tmp_dir: Path, name: str, p: dict, job, record: dict
) -> dict:
  """Encode and write one image's outputs; the finished record, or an error record.
  Files of this name of other kinds are removed unless the record keeps them (an
  earlier result of the same computation): a name never mixes two computations."""
  try:
    files = _encode(p, record["outputs"], job.arrays_dtype)
    paths = outputs.output_paths(out_dir, name)
    write_atomically({paths[k]: data for k, data in files.items()}, tmp_dir)
    for kind, path in paths.items():  # an earlier computation's kinds not redone:
      if kind not in files and kind not in record["outputs"]:  # ours, and stale
        path.unlink(missing_ok=True)
    return record
  except Exception as err:  # noqa: BLE001 (one bad write never stops the others)
    return {
      "path": record["path"],
      "status": "error",
      "id": record["id"],
      "name": name,
      "settings": record["settings"],
      "error": f"could not write outputs: {type(err).__name__}: {err}",
    }


class Recorder:
  """Records one process's results in `journal`, writing outputs with `pool`.

  Attributes:
    ok, failed: inputs finished so far, by status.
    unrecorded: (path, reason) of the inputs whose record the journal could not
      take (a full disk): failed, reported by the summary, redone on resume.
  """

  def __init__(
    self,
    out_dir: Path,
    tmp_dir: Path,
    journal: Journal,
    pool: Executor,
    model,
    job,
    settings: dict,
    owners: dict,
    latest: dict | None = None,
  ):
    self.out_dir, self.tmp_dir = out_dir, tmp_dir
    self.journal, self.pool = journal, pool
    self.model, self.job, self.settings, self.owners = model, job, settings, owners
    self.latest = latest or {}
    self.writing: deque = deque()
    self.ok = self.failed = 0
    self.unrecorded: list[tuple[str, str]] = []  # (path, why) the journal lacks

  def _record(self, event: str, record: dict) -> str | None:
    """Append to the journal; None, or why it could not (a full disk)."""
    try:
      self.journal.write(event, record)
      return None
    except OSError as err:
      return f"could not record it in the journal: {err.strerror or err}"

  def finish(self, record: dict) -> None:
    problem = self._record("done", record)
    if problem is not None:  # counted as failed, reported by the summary
      reason = record.get("error")
      self.unrecorded.append(
        (record["path"], f"{reason}; {problem}" if reason else problem)
      )
      self.failed += 1
    elif record["status"] == "ok":
      self.ok += 1
    else:
      self.failed += 1

  def fail(self, path: str, error: str) -> None:
    self.finish(
      {"path": path, "status": "error", "settings": self.settings, "error": error}
    )

  def batch(self, batch: Batch) -> None:
    """Record a batch: its decode failures, then a name, a claim and a write for
    each explained image."""
    for s, error in batch.failed:
      self.fail(str(s.path), error)
    if batch.out is None:
      return
    out = batch.out
    kind = getattr(self.model, "output", "logits")
    probs = probabilities(out.logits, kind)
    names = self.model.class_names
    media_kind = getattr(self.model, "media", "image")
    for i, ((s, image), extra) in enumerate(zip(batch.good, batch.extras)):
      path = str(s.path)
      name = outputs.assign_name(s.rel, path, self.out_dir, self.owners)
      if name is None:
        self.fail(
          path, "every output name for it is taken by files gradcam-jax did not write"
        )
        continue
      self.owners[name] = path
      pred, tgt = int(np.argmax(probs[i])), int(out.targets[i])
      rid = uuid.uuid4().hex
      kinds = {
        k: name + outputs.SUFFIXES[k]
        for k in outputs.kinds_for(self.job.save, media_kind, path)
      }
      kinds = {**self._kept(path, name), **kinds}
      problem = self._record(
        "claim", {"path": path, "id": rid, "name": name, "outputs": kinds}
      )
      if problem is not None:  # no file is written under a name not claimed
        self.fail(path, problem)
        continue
      record = {
        "path": path,
        "status": "ok",
        "id": rid,
        "name": name,
        "outputs": kinds,
        "settings": self.settings,
        "input": input_identity(s.path),
        "predicted": pred,
        "predicted_name": names[pred],
        "probability": float(probs[i, pred]),
        "target": tgt,
        "target_name": names[tgt],
        "target_probability": float(probs[i, tgt]),
        "probability_from": PROBABILITY_FROM[kind],
      }
      if media_kind == "image":
        record["exif_orientation"] = extra["exif_orientation"]
      meta = {"path": path, "id": rid, "settings": self.settings}
      self.writing.append(
        self.pool.submit(
          write_outputs,
          self.out_dir,
          self.tmp_dir,
          name,
          _payload(image, out, i, meta, media_kind, extra),
          self.job,
          record,
        )
      )

  def _kept(self, path: str, name: str) -> dict:
    """The outputs of this input's earlier result that stay: kinds not asked for
    now, of the same computation under the same name (asking for fewer kinds
    deletes nothing); an earlier computation's files are not kept."""
    before = self.latest.get(path)
    if not done_alike(before, self.settings):
      return {}
    return {
      k: rel
      for k, rel in before.outputs.items()
      if k not in self.job.save
      and rel == name + outputs.SUFFIXES[k]
      and (self.out_dir / rel).exists()
    }

  def drain(self, keep: int = 0) -> None:
    """Record finished writes, oldest first, until at most `keep` are pending."""
    while len(self.writing) > keep:
      self.finish(self.writing.popleft().result())
