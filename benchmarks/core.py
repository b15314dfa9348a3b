"""Core benchmark: forward vs Grad-CAM vs Guided Grad-CAM on a VGG16 at 224x224.

Prints a table and writes JSON. Steady-state times are medians of interleaved calls
(one call of each explainer per round), so drift on a shared machine hits all rows
alike; ratios are to the jitted forward measured in the same rounds. First-call
times (trace + compile + run) of the two API forms are measured in fresh
subprocesses, each with the environment named in its row.

    python benchmarks/core.py                      # batch 4, 7 rounds
    python benchmarks/core.py --batch 8 --rounds 5 --json benchmarks/results/core.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import _xla_setting, interleaved, run_worker, versions, write_json  # noqa: E402

def _model(batch: int, size: int):
  import jax
  from gradcam_jax.zoo.vgg import init_vgg16
  model, variables = init_vgg16(size=size)
  images = jax.random.normal(jax.random.key(1), (batch, size, size, 3))
  return model, jax.block_until_ready(variables), images


def first_call(form: str, batch: int, size: int) -> dict:
  """Trace + compile + first run of guided_gradcam in one API form (fresh process)."""
  import jax
  import gradcam_jax as gcj
  model, variables, images = _model(batch, size)
  start = time.perf_counter()
  if form == "closure":
    explain = jax.jit(gcj.guided_gradcam(model.apply, variables))
    out = explain(images)
  elif form == "gcj.jit":
    explain = gcj.jit(gcj.guided_gradcam(model.apply, variables))
    out = explain(images)
  else:
    explain = jax.jit(gcj.guided_gradcam(model.apply))
    out = explain(variables, images)
  out.guided_gradcam.block_until_ready()
  seconds = time.perf_counter() - start
  if form == "closure":
    hlo = explain.lower(images).as_text()
  elif form == "gcj.jit":
    hlo = jax.jit(gcj.guided_gradcam(model.apply)).lower(variables, images).as_text()
  else:
    hlo = explain.lower(variables, images).as_text()
  return {"form": form, "first_call_s": seconds, "hlo_mb": len(hlo) / 1e6}


def steady(batch: int, size: int, rounds: int) -> dict:
  import jax
  import gradcam_jax as gcj
  model, variables, images = _model(batch, size)
  fns = {
      "forward": jax.jit(model.apply),
      "gradcam": jax.jit(gcj.gradcam(model.apply)),
      "guided_backprop": jax.jit(gcj.guided_backprop(model.apply)),
      "guided_gradcam": jax.jit(gcj.guided_gradcam(model.apply)),
  }
  compile_s, times, *_ = interleaved(
      fns, lambda fn: jax.block_until_ready(fn(variables, images)), rounds)
  medians = {name: statistics.median(t) for name, t in times.items()}
  return {name: {"median_s": medians[name], "min_s": min(times[name]),
                 "ratio_to_forward": medians[name] / medians["forward"],
                 "images_per_s": batch / medians[name],
                 "first_call_s": compile_s[name]} for name in fns}


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--batch", type=int, default=4)
  parser.add_argument("--size", type=int, default=224)
  parser.add_argument("--rounds", type=int, default=7)
  parser.add_argument("--json", default="benchmarks/results/core.json")
  parser.add_argument("--first-call", choices=["closure", "params", "gcj.jit"])
  parser.add_argument("--steady-only", action="store_true")
  args = parser.parse_args()
  if args.first_call:
    print(json.dumps(first_call(args.first_call, args.batch, args.size)))
    return
  if args.steady_only:
    print(json.dumps(steady(args.batch, args.size, args.rounds)))
    return

  common = ["--batch", str(args.batch), "--size", str(args.size)]
  configs = {"default flags": {"XLA_FLAGS": ""}, "ynn individual fusion": {
      "XLA_FLAGS": _xla_setting.SETTINGS["ynn-individual"]}}
  result = {"versions": versions(), "batch": args.batch, "size": args.size,
            "rounds": args.rounds, "date": time.strftime("%Y-%m-%d"),
            "command": " ".join([os.path.basename(sys.executable), *sys.argv]),
            "steady": {}, "first_call": []}
  for label, env in configs.items():
    result["steady"][label] = run_worker(
        __file__, ["--steady-only", "--rounds", str(args.rounds), *common], env)
  for label, env in {"default": {},
                     "JAX_USE_SIMPLIFIED_JAXPR_CONSTANTS=True":
                         {"JAX_USE_SIMPLIFIED_JAXPR_CONSTANTS": "True"}}.items():
    for form in ("closure", "params", "gcj.jit"):
      if label != "default" and form != "closure":
        continue
      row = run_worker(__file__, ["--first-call", form, *common], env)
      row["env"] = label
      result["first_call"].append(row)

  print(f"VGG16 {args.size}x{args.size}, batch {args.batch}, {args.rounds} interleaved "
        f"rounds, {result['versions']}")
  for label, rows in result["steady"].items():
    print(f"\n[{label}]\n{'method':18s} {'median s':>9s} {'img/s':>7s} "
          f"{'x forward':>9s} {'first call s':>12s}")
    for name, row in rows.items():
      print(f"{name:18s} {row['median_s']:9.3f} {row['images_per_s']:7.2f} "
            f"{row['ratio_to_forward']:9.2f} {row['first_call_s']:12.2f}")
  print(f"\n{'API form (guided_gradcam)':28s} {'env':42s} {'first call s':>12s} "
        f"{'HLO MB':>7s}")
  for row in result["first_call"]:
    print(f"{row['form']:28s} {row['env']:42s} {row['first_call_s']:12.2f} "
          f"{row['hlo_mb']:7.1f}")
  write_json(args.json, result)


if __name__ == "__main__":
  main()
