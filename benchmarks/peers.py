"""gradcam-jax vs Captum, side by side: Grad-CAM, guided backprop and Guided Grad-CAM
on the same architecture, batch and input, each (implementation, model, method) in
its own process, the processes interleaved round by round.

Needs the optional peers (never dependencies of the library):
``pip install torch==2.13.0 captum`` (the CPU torch pin). pytorch-grad-cam also needs
torchvision, which does not install beside that pin here; it is skipped when absent.

    python benchmarks/peers.py                       # batch 8, ResNet-50 and VGG16
    python benchmarks/peers.py --models resnet50 --rounds 3

Each worker times `--reps` calls after one warm-up (compile) call and reports the
median and its process's peak resident memory (``ru_maxrss``: weights, compiled
program and activations together).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from _common import run_worker, versions, write_json  # noqa: E402

METHODS = ("gradcam", "guided_backprop", "guided_gradcam")


def _ours(model_name, method, batch, reps):
  import jax
  import numpy as np
  import gradcam_jax as gcj
  from gradcam_jax import zoo
  m = zoo.load(model_name, random_init=True)
  layer = "layer4" if model_name == "resnet50" else "features_28"
  build = {"gradcam": lambda: gcj.gradcam(m.apply_fn, layer=layer),
           "guided_backprop": lambda: gcj.guided_backprop(m.apply_fn),
           "guided_gradcam": lambda: gcj.guided_gradcam(m.apply_fn, layer=layer)}[method]
  explain = jax.jit(build())
  x = jax.numpy.asarray(np.random.default_rng(0).normal(size=(batch, 224, 224, 3)),
                        jax.numpy.float32)
  t = jax.numpy.arange(batch) % 1000
  run = lambda: jax.block_until_ready(explain(m.variables, x, t))
  return run


def _captum(model_name, method, batch, reps):
  import numpy as np
  import torch
  from captum import attr
  sys.path.insert(0, os.path.dirname(HERE))
  from tests.torch_reference import torch_resnet50, torch_vgg16
  torch.set_num_threads(os.cpu_count() or 1)
  net = (torch_resnet50() if model_name == "resnet50" else torch_vgg16()).eval()
  for mod in net.modules():  # captum's guided backprop needs non-inplace ReLUs
    if isinstance(mod, torch.nn.ReLU):
      mod.inplace = False
  layer = net.layer4 if model_name == "resnet50" else net.features[28]
  explainer = {"gradcam": lambda: attr.LayerGradCam(net, layer),
               "guided_backprop": lambda: attr.GuidedBackprop(net),
               "guided_gradcam": lambda: attr.GuidedGradCam(net, layer)}[method]()
  x = torch.from_numpy(np.random.default_rng(0).normal(size=(batch, 3, 224, 224))
                       .astype(np.float32))
  t = torch.arange(batch) % 1000
  kwargs = {"relu_attributions": True} if method == "gradcam" else {}

  def run():
    out = explainer.attribute(x.clone().requires_grad_(), target=t, **kwargs)
    return out.detach()

  return run


def worker(impl, model_name, method, batch, reps) -> dict:
  run = (_ours if impl == "gradcam-jax" else _captum)(model_name, method, batch, reps)
  start = time.perf_counter()
  run()
  first = time.perf_counter() - start
  times = []
  for _ in range(reps):
    start = time.perf_counter()
    run()
    times.append(time.perf_counter() - start)
  return {"impl": impl, "model": model_name, "method": method, "batch": batch,
          "median_s": statistics.median(times), "first_call_s": first,
          "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6}


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--models", nargs="+", default=["resnet50", "vgg16"])
  parser.add_argument("--methods", nargs="+", default=list(METHODS))
  parser.add_argument("--batch", type=int, default=8)
  parser.add_argument("--reps", type=int, default=3)
  parser.add_argument("--rounds", type=int, default=2)
  parser.add_argument("--json", default="benchmarks/results/peers.json")
  parser.add_argument("--worker", nargs=3, metavar=("IMPL", "MODEL", "METHOD"))
  args = parser.parse_args()
  if args.worker:
    print(json.dumps(worker(*args.worker, args.batch, args.reps)))
    return
  try:
    import captum  # noqa: F401
  except ImportError:
    raise SystemExit("peers.py needs captum and torch: pip install torch==2.13.0 captum")
  rows = []
  for r in range(args.rounds):
    for model_name in args.models:
      for method in args.methods:
        for impl in ("gradcam-jax", "captum"):
          row = run_worker(__file__, ["--worker", impl, model_name, method,
                                      "--batch", args.batch, "--reps", args.reps])
          row["round"] = r
          rows.append(row)
          print(f"round {r} {model_name:9s} {method:16s} {impl:12s} "
                f"{row['median_s']:7.3f} s  peak {row['peak_rss_gb']:5.2f} GB  "
                f"first call {row['first_call_s']:6.2f} s", flush=True)
  summary = []
  for model_name in args.models:
    for method in args.methods:
      med = {impl: statistics.median(x["median_s"] for x in rows if x["impl"] == impl
                                     and x["model"] == model_name and x["method"] == method)
             for impl in ("gradcam-jax", "captum")}
      mem = {impl: max(x["peak_rss_gb"] for x in rows if x["impl"] == impl
                       and x["model"] == model_name and x["method"] == method)
             for impl in ("gradcam-jax", "captum")}
      summary.append({"model": model_name, "method": method, "ours_s": med["gradcam-jax"],
                      "captum_s": med["captum"],
                      "speedup": med["captum"] / med["gradcam-jax"],
                      "ours_peak_gb": mem["gradcam-jax"], "captum_peak_gb": mem["captum"]})
      s = summary[-1]
      print(f"{model_name:9s} {method:16s} ours {s['ours_s']:.3f} s, Captum "
            f"{s['captum_s']:.3f} s: {s['speedup']:.2f}x; peak RSS {s['ours_peak_gb']:.2f}"
            f" vs {s['captum_peak_gb']:.2f} GB")
  write_json(args.json, {"date": time.strftime("%Y-%m-%d"), "versions": versions(),
                         "batch": args.batch, "reps": args.reps, "rounds": args.rounds,
                         "rows": rows, "summary": summary})


if __name__ == "__main__":
  main()
