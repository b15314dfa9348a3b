"""The whole ``gradcam-jax explain`` job against its explainer alone, in one process.

A folder of 224x224 JPEGs is explained with ResNet-50 (random weights, torchvision
preprocessing, batch 8). The explainer's steady state is timed first (the job's own
explainer, compiled, several batches of preprocessed images, ``block_until_ready``).
Then the job runs over the folder for each output setting; its *marginal* rate
leaves out start-up and compilation: images after the first batch divided by the
time from the first batch's results on the host to the last record written (the
writers drained). The ratio is job marginal / explainer steady state, measured in
the same process (the explainer before and after the job; the faster reading is
used), so the machine's speed cancels.

    python benchmarks/cli_throughput.py                      # 256 images, ResNet-50
    python benchmarks/cli_throughput.py --images 64 --model demo   # quick look
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import cv2
import jax
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks._common import versions, write_json  # noqa: E402

import gradcam_jax as gcj  # noqa: E402
from gradcam_jax import io, zoo  # noqa: E402
from gradcam_jax.cli import job as _folder_job  # noqa: E402

SETTINGS = {
    "all outputs, float32 arrays": dict(),
    "all outputs, float16 arrays": dict(arrays_dtype="float16"),
    "overlay only": dict(save=("overlay",)),
}


def make_folder(folder: Path, n: int, size: int) -> None:
  rng = np.random.default_rng(0)
  for i in range(n):
    base = cv2.resize(rng.integers(0, 256, (size // 8, size // 8, 3), dtype=np.uint8),
                      (size, size), interpolation=cv2.INTER_CUBIC)
    cv2.imwrite(str(folder / f"img_{i:04d}.jpg"), base, [cv2.IMWRITE_JPEG_QUALITY, 90])


def explainer_rate(model, job, batch: int, reps: int) -> float:
  explain = gcj.jit(_folder_job.build_explainer(model, model.variables, job))
  h, w = model.input_size
  rng = np.random.default_rng(1)
  x = model.preprocess(rng.integers(0, 256, (batch, h, w, 3), dtype=np.uint8))
  jax.block_until_ready(explain(x))  # compile
  times = []
  for _ in range(reps):
    t = time.perf_counter()
    jax.block_until_ready(explain(x))
    times.append(time.perf_counter() - t)
  return batch / statistics.median(times)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--images", type=int, default=256)
  parser.add_argument("--model", default="resnet50", choices=("resnet50", "vgg16", "demo"))
  parser.add_argument("--batch", type=int, default=8)
  parser.add_argument("--reps", type=int, default=8)
  parser.add_argument("--json", default="benchmarks/results/cli_throughput.json")
  args = parser.parse_args()

  model = zoo.load(args.model, random_init=args.model != "demo")
  base = _folder_job.Job(layer=model.layer, resize=model.resize, weights="random")
  root = Path(tempfile.mkdtemp(prefix="cli_throughput_"))
  try:
    inputs = root / "in"
    inputs.mkdir()
    make_folder(inputs, args.images, model.input_size[0])
    sources, _, _ = io.find_images([str(inputs)])
    rows = []
    for name, change in SETTINGS.items():
      job = base._replace(**change)
      before = explainer_rate(model, job, args.batch, args.reps)
      out = root / f"out_{len(rows)}"
      s = _folder_job.explain_files(model, sources, out, job, batch_size=args.batch,
                                    progress=False)
      # the faster of the two readings around the job: the ratio is not flattered
      steady = max(before, explainer_rate(model, job, args.batch, args.reps))
      assert s.ok == args.images, s
      marginal = (args.images - args.batch) / (s.seconds - s.first_batch_seconds)
      disk = sum(p.stat().st_size for p in out.rglob("*") if p.is_file()
                 and ".gradcam-jax" not in p.parts and not p.name.startswith("index")
                 and p.name != "report.html") / args.images
      rows.append({"setting": name, "explainer_img_s": steady, "job_marginal_img_s":
                   marginal, "ratio": marginal / steady, "job_total_s": s.seconds,
                   "first_batch_s": s.first_batch_seconds, "disk_kb_per_image": disk / 1e3})
      print(f"{name:30s} explainer {steady:6.2f} img/s  job {marginal:6.2f} img/s  "
            f"ratio {marginal / steady:5.2f}  ({disk / 1e3:6.0f} kB/image, total "
            f"{s.seconds:5.1f} s, first batch {s.first_batch_seconds:4.1f} s)", flush=True)
  finally:
    shutil.rmtree(root, ignore_errors=True)
  write_json(args.json, {"versions": versions(), "model": args.model, "batch": args.batch,
                         "images": args.images, "rows": rows})


if __name__ == "__main__":
  main()
