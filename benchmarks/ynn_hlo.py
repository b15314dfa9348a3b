"""What XLA's YNN-fusion setting changes in the compiled program: for each setting, in
its own process, compile a model's forward (or an explainer) and count, in the
optimised HLO, the convolutions and dots that XLA's CPU backend hands to YNNPACK
(inside fusions whose backend config names YNN) and those it keeps for its own
(Eigen/oneDNN) thunks.

    python benchmarks/ynn_hlo.py                          # ResNet-50 and VGG16 forward, batch 8
    python benchmarks/ynn_hlo.py --method guided_gradcam --models vgg16
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from _common import _xla_setting, run_worker, write_json  # noqa: E402

SETTINGS = ("default", "noynn", "ynn-individual")


def worker(model_name: str, method: str, batch: int) -> dict:
  import jax
  import gradcam_jax as gcj
  from gradcam_jax import zoo
  m = zoo.load(model_name, random_init=model_name != "demo")
  layer = {"resnet50": "layer4", "vgg16": "features_29"}.get(model_name, m.layer)
  fn = {"forward": m.apply_fn,
        "gradcam": gcj.gradcam(m.apply_fn, layer=layer),
        "guided_gradcam": gcj.guided_gradcam(m.apply_fn, layer=layer)}[method]
  x = jax.ShapeDtypeStruct((batch, *m.input_size, 3), jax.numpy.float32)
  start = time.perf_counter()
  text = jax.jit(fn).lower(m.variables, x).compile().as_text()
  compile_s = time.perf_counter() - start
  # computations called by a YNN fusion: their convolutions/dots run in YNNPACK
  ynn_called = set()
  for line in text.splitlines():
    if '"__ynn_fusion"' in line:
      ynn_called.update(re.findall(r"calls=%?([\w.\-]+)", line))
  counts = {"conv_in_ynn": 0, "conv_xla": 0, "dot_in_ynn": 0, "dot_xla": 0,
            "ynn_fusions": 0}
  current = None
  for line in text.splitlines():
    head = re.match(r"^(?:ENTRY )?%?([\w.\-]+) .*\{$", line)
    if head:
      current = head.group(1)
    if '"__ynn_fusion"' in line:
      counts["ynn_fusions"] += 1
    for op, key in ((" convolution(", "conv"), (" dot(", "dot")):
      if op in line:
        counts[f"{key}_in_ynn" if current in ynn_called else f"{key}_xla"] += 1
  return {"model": model_name, "method": method, "batch": batch,
          "compile_s": compile_s, "xla_flags": os.environ.get("XLA_FLAGS", ""),
          **counts}


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--models", nargs="+", default=["resnet50", "vgg16"])
  parser.add_argument("--method", default="forward",
                      choices=("forward", "gradcam", "guided_gradcam"))
  parser.add_argument("--batch", type=int, default=8)
  parser.add_argument("--json", default="benchmarks/results/ynn_hlo.json")
  parser.add_argument("--worker", nargs=3, metavar=("MODEL", "METHOD", "BATCH"))
  args = parser.parse_args()
  if args.worker:
    model_name, method, batch = args.worker
    print(json.dumps(worker(model_name, method, int(batch))))
    return
  rows = []
  print(f"{'model':9s} {'setting':15s} {'YNN fusions':>11s} {'conv in YNN':>11s} "
        f"{'conv XLA':>8s} {'dot in YNN':>10s} {'dot XLA':>7s} {'compile s':>9s}")
  for model_name in args.models:
    for name in SETTINGS:
      row = run_worker(__file__, ["--worker", model_name, args.method, args.batch],
                       {"XLA_FLAGS": _xla_setting.SETTINGS[name]})
      row["setting"] = name
      rows.append(row)
      print(f"{model_name:9s} {name:15s} {row['ynn_fusions']:11d} {row['conv_in_ynn']:11d} "
            f"{row['conv_xla']:8d} {row['dot_in_ynn']:10d} {row['dot_xla']:7d} "
            f"{row['compile_s']:9.2f}", flush=True)
  write_json(args.json, {"date": time.strftime("%Y-%m-%d"), "method": args.method,
                         "rows": rows})


if __name__ == "__main__":
  main()
