"""Memory and file sizes of a folder job's bookkeeping at scale: a journal of
200,000 inputs (each a claim and a finished record as the job writes them, 5%
failed), read as a resume reads it, and turned into index.jsonl and report.html as
the end of a job does. No image is decoded: this measures what grows with the
number of inputs, not the images.

Each stage runs in its own process; its cost is the peak resident memory (ru_maxrss)
above what the process held once the inputs were listed.

    python benchmarks/journal_scale.py                  # 200,000 inputs
    python benchmarks/journal_scale.py --inputs 20000   # quick look
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

ROOT = "/data/photos/"


def _sources(n: int):
  from gradcam_jax.io import Source

  rels = [f"dir_{i // 1000:03d}/img_{i:06d}.jpg" for i in range(n)]
  return [Source(Path(ROOT + r), r) for r in rels]


def make_journal(out: Path, n: int) -> None:
  """The lines the job writes for `n` inputs, in one journal part."""
  from gradcam_jax.cli import outputs
  from gradcam_jax.cli.job import Job, settings_of
  from gradcam_jax.zoo import ZooModel

  model = ZooModel("resnet50", None, None, None, "layer4", None, (), (224, 224))
  settings = settings_of(model, Job(layer="layer4", weights="sha256:0123456789abcdef"))
  out.mkdir(parents=True, exist_ok=True)
  (out / ".gradcam-jax").mkdir(exist_ok=True)
  t = time.time_ns()
  with open(out / "index.part-0000.jsonl", "w") as f:
    for i, s in enumerate(_sources(n)):
      path = str(s.path)
      if i % 20 == 7:
        done = {"event": "done", "path": path, "status": "error", "settings": settings,
                "error": "could not decode: not an image file", "t": t + 2 * i}
        f.write(json.dumps(done) + "\n")
        continue
      rid = f"{i:032x}"
      kinds = {k: s.rel + outputs.SUFFIXES[k] for k in outputs.KINDS}
      claim = {"event": "claim", "path": path, "id": rid, "name": s.rel, "outputs": kinds,
               "t": t + 2 * i}
      done = {"event": "done", "path": path, "status": "ok", "id": rid, "name": s.rel,
              "outputs": kinds, "settings": settings,
              "input": {"size": 50_000 + i, "mtime_ns": t - i},
              "predicted": i % 1000, "predicted_name": f"class name {i % 1000}",
              "probability": 0.5 + (i % 97) / 200, "target": i % 1000,
              "target_name": f"class name {i % 1000}",
              "target_probability": 0.5 + (i % 97) / 200,
              "probability_from": "softmax of the model's scores",
              "exif_orientation": 1, "t": t + 2 * i + 1}
      f.write(json.dumps(claim) + "\n" + json.dumps(done) + "\n")


def stage(name: str, out: Path, n: int) -> dict:
  """Run one stage in this process: {"mb": peak MB above the baseline, "s": seconds}."""
  from gradcam_jax.cli import journal, plan, report

  sources = _sources(n)
  base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
  start = time.perf_counter()
  if name == "resume":  # what a rerun holds before it explains anything
    state = journal.read_state(out)
    todo, skipped = plan.plan(sources, out, {"save": []}, state.latest)
    assert len(todo) == n
  else:  # the end of a job: index.jsonl, report.html, the failures listed
    state = journal.read_state(out)
    journal.merge_index(out, state)
    report.write_report(out, state)
    failed = journal.failures(out, state)
    assert len(failed) == n // 20
  seconds = time.perf_counter() - start
  peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
  return {"mb": (peak - base) / 1024, "s": seconds}


def main() -> None:
  parser = argparse.ArgumentParser()
  parser.add_argument("--inputs", type=int, default=200_000)
  parser.add_argument("--stage")
  parser.add_argument("--out")
  parser.add_argument("--json", default="benchmarks/results/journal_scale.json")
  args = parser.parse_args()
  if args.stage:
    print(json.dumps(stage(args.stage, Path(args.out), args.inputs)))
    return
  from benchmarks._common import versions, write_json

  with tempfile.TemporaryDirectory() as tmp:
    out = Path(tmp) / "out"
    make_journal(out, args.inputs)
    journal_mb = (out / "index.part-0000.jsonl").stat().st_size / 1e6
    result = {"inputs": args.inputs, "journal_mb": journal_mb, "versions": versions()}
    for name in ("resume", "finish"):
      said = subprocess.run([sys.executable, __file__, "--stage", name, "--out", str(out),
                             "--inputs", str(args.inputs)], capture_output=True, text=True)
      if said.returncode:
        sys.exit(said.stderr)
      result[name] = json.loads(said.stdout.strip().splitlines()[-1])
    result["index_mb"] = (out / "index.jsonl").stat().st_size / 1e6
    result["report_mb"] = (out / "report.html").stat().st_size / 1e6
  n = args.inputs
  print(f"{n} inputs, journal {journal_mb:.0f} MB")
  print(f"{'stage':<8} {'peak MB':>8} {'bytes/input':>12} {'seconds':>8}")
  for name in ("resume", "finish"):
    r = result[name]
    print(f"{name:<8} {r['mb']:8.0f} {r['mb'] * 2**20 / n:12.0f} {r['s']:8.1f}")
  print(f"index.jsonl {result['index_mb']:.1f} MB, report.html {result['report_mb']:.1f} MB")
  write_json(args.json, result)


if __name__ == "__main__":
  main()
