"""Helpers for the batch-job tests: image folders, running the command in a real
process, and comparing two output folders."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np

from gradcam_jax import io
from gradcam_jax import visualize as vis
from gradcam_jax.zoo import demo as demo_model

ROOT = Path(__file__).resolve().parents[1]
# one device in child processes: the same arithmetic in every run that is compared
CHILD_ENV = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=1",
                 PYTHONPATH=str(ROOT))


# Eigen-CAM's SVD in a batch sharded over the 4 fake CPU devices of this test session
# wedges XLA's CPU thread pool (an XLA issue, not reproduced on one device): the
# command runs those two methods in a one-device child process in the tests.
ONE_DEVICE = {"eigencam", "eigengradcam"}


def scenes(n: int, seed: int = 0) -> list[np.ndarray]:
  """`n` distinct 64x64 RGB scenes: the shipped samples, shifted and with noise."""
  images, _ = demo_model.load_samples()
  rng = np.random.default_rng(seed)
  out = []
  for i in range(n):
    base = np.roll(images[i % len(images)], (i // len(images)) % 7 - 3, axis=1)
    noise = rng.integers(-12, 13, base.shape)
    out.append(np.clip(base.astype(int) + noise, 0, 255).astype(np.uint8))
  return out


def write_png(path: Path, rgb: np.ndarray) -> None:
  path.parent.mkdir(parents=True, exist_ok=True)
  assert cv2.imwrite(str(path), rgb[..., ::-1]), path


def command(*args) -> list[str]:
  return [sys.executable, "-m", "gradcam_jax.cli", "explain", *map(str, args)]


def run(*args, timeout: float = 300) -> subprocess.CompletedProcess:
  return subprocess.run(command(*args), env=CHILD_ENV, capture_output=True, text=True,
                        timeout=timeout)


def run_cli(*args, timeout: float = 600) -> subprocess.CompletedProcess:
  """``gradcam-jax ARGS`` in a child process (any subcommand)."""
  return subprocess.run([sys.executable, "-m", "gradcam_jax.cli", *map(str, args)],
                        env=dict(CHILD_ENV, XLA_FLAGS="", KERAS_BACKEND="jax"),
                        capture_output=True, text=True, timeout=timeout)


def job_files(out: Path) -> set[str]:
  """The output files of a job folder (not the index, the report or the marker)."""
  return {p.relative_to(out).as_posix() for p in out.rglob("*")
          if p.is_file() and ".gradcam-jax" not in p.parts
          and not p.name.startswith("index") and p.name != "report.html"}


def assert_same_results(out: Path, ref: Path) -> None:
  """`out` holds what `ref` holds: one finished record per input with the same
  prediction, outputs of one computation each, arrays equal to float tolerance."""
  merged = [json.loads(l) for l in (out / "index.jsonl").read_text().splitlines()]
  paths = [r["path"] for r in merged]
  assert len(paths) == len(set(paths)), "an input has more than one record"
  got = {r["path"]: r for r in io.read_index(out)}
  want = {r["path"]: r for r in io.read_index(ref)}
  assert set(got) == set(want)
  assert job_files(out) == job_files(ref)
  for path, r in got.items():
    w = want[path]
    assert r["status"] == w["status"] == "ok", (path, r)
    assert (r["predicted"], r["target"], r["outputs"]) == (
        w["predicted"], w["target"], w["outputs"]), path
    a, b = np.load(out / r["outputs"]["arrays"]), np.load(ref / w["outputs"]["arrays"])
    meta = json.loads(str(a["meta"]))
    assert meta["id"] == r["id"] and meta["path"] == path  # the record's computation
    for key in ("cam", "cam_raw", "guided", "guided_gradcam", "logits"):
      np.testing.assert_allclose(a[key], b[key], rtol=1e-5, atol=1e-6, err_msg=path)
    for kind in ("overlay", "guided_gradcam"):
      x = cv2.imread(str(out / r["outputs"][kind]))
      y = cv2.imread(str(ref / w["outputs"][kind]))
      assert np.abs(x.astype(int) - y.astype(int)).max() <= 1, (path, kind)
    # and the overlay is the picture of this very computation's map
    overlay = cv2.imread(str(out / r["outputs"]["overlay"]))[..., ::-1]
    image = cv2.imread(str(out / r["outputs"]["input"]))[..., ::-1]
    assert overlay.shape == image.shape
    heat = vis.heatmap(a["cam"])
    assert np.abs(overlay - (0.5 * image + 0.5 * heat)).max() <= 0.5, path


def slow_demo():
  """``--model tests.job_helpers:slow_demo``: the demo model whose preprocessing
  takes 0.2 s a batch, so that a job lasts long enough to be caught running."""
  import time
  from gradcam_jax import zoo
  model = zoo.load("demo")

  def preprocess(images):
    time.sleep(0.2)
    return model.preprocess(images)

  return model._replace(preprocess=preprocess)


def named_classes_model():
  """``--model tests.job_helpers:named_classes_model``: a tiny model whose classes
  have ImageNet-like names (for --target by name)."""
  from gradcam_jax import zoo
  from tests import models
  module, variables = models.init(models.VggNet)
  return zoo.ZooModel("named", module, module.apply, variables, "conv2",
                      lambda im: np.asarray(im, np.float32)[..., :3] / 255.0,
                      ["tabby", "tiger cat", "Persian cat", "boxer"], (8, 8))


def journal_lines(out) -> int:
  """Lines in process 0's journal part under `out` so far (a claim and a done per
  input)."""
  part = out / "index.part-0000.jsonl"
  try:
    return part.read_bytes().count(b"\n")
  except FileNotFoundError:
    return 0


def kill_at(args, out, lines: int, sig, delay: float = 0.0, retry: bool = True,
            sigint_ignored: bool = False):
  """Start the command, wait until its journal has `lines` lines (then `delay`
  seconds), send `sig`; returns the exit code, how far it got, stderr.

  On a loaded machine this test process can be starved long enough for the child to
  finish before the kill point is seen (CI failed so once: exit 0, nothing to resume).
  Then (with `retry`, for a run that starts from no folder) the output folder is
  removed and the run repeated with the kill point halved, up to three times, so the
  signal always lands on a running job."""
  for attempt in range(4 if retry else 1):
    if attempt:
      shutil.rmtree(out, ignore_errors=True)
    line = command(*args)
    if sigint_ignored:  # as a shell starts a background job: SIGINT ignored, then exec
      line = ["sh", "-c", "trap '' INT; exec \"$0\" \"$@\"", *line]
    proc = subprocess.Popen(line, env=CHILD_ENV, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 240
    while journal_lines(out) < lines and proc.poll() is None:
      assert time.monotonic() < deadline, "the run never reached the kill point"
      time.sleep(0.002)
    time.sleep(delay)
    if proc.poll() is None:
      proc.send_signal(sig)
      _, err = proc.communicate(timeout=120)
      return proc.returncode, journal_lines(out), err
    proc.communicate()
    lines, delay = lines // 2, 0.0  # it ended first: try again, earlier
  raise AssertionError(f"the run ended before the kill point ({attempt + 1} tries)")
