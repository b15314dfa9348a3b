"""Methods table: images/s of every CAM method on ResNet-50 or VGG16 (random weights,
224x224) at two batch sizes, on this machine, with the jitted forward as the reference.

Calls of all methods are interleaved round by round, and each row reports the
median; Score-CAM scores the top-N channels (Faster Score-CAM) since all 2048
channels of layer4 cost 2048 forward passes per image.

    python benchmarks/methods.py                       # batch 1 and 4, 3 rounds
    python benchmarks/methods.py --batches 2 8 --rounds 5 --json out.json
    python benchmarks/methods.py --only forward gradcam guided_backprop saliency
    python benchmarks/methods.py --model vgg16 --batches 8 --only forward gradcam fullgrad

The original CAM (the fc layer's weights, found after the global average pool; not
for VGG16, whose head is three dense layers), Random-CAM, FinerCAM, ShapleyCAM,
FullGrad (every conv's and batch norm's bias gradient; no layer), Smooth Grad-CAM++
(torch-cam's: 4 noisy copies) and Deep Feature Factorization (5 concepts, 500 NMF
updates) have rows too; IS-CAM and SS-CAM do not: 10 and 35 masked forwards per channel of layer4's
2048, far beyond a CPU run.

The pixel-space rows: saliency, input x gradient, deconvnet and Integrated
Gradients with --ig-steps steps (32 by default), whose target is at most 1.5x the
time of that many guided backprops (ig_x_guided in the JSON).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import interleaved, versions, write_json  # noqa: E402


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--batches", type=int, nargs="+", default=[1, 4])
  parser.add_argument("--model", choices=["resnet50", "vgg16"], default="resnet50")
  parser.add_argument("--size", type=int, default=224)
  parser.add_argument("--rounds", type=int, default=3)
  parser.add_argument("--scorecam-top-n", type=int, default=64)
  parser.add_argument("--chunk", type=int, default=16, help="Score/Ablation-CAM batch_size")
  parser.add_argument("--ig-steps", type=int, default=32)
  parser.add_argument("--only", nargs="+", help="these rows only (names as printed)")
  parser.add_argument("--json", default="benchmarks/results/methods.json")
  args = parser.parse_args()

  import jax
  import gradcam_jax as gcj
  from gradcam_jax.zoo.resnet import init_resnet50
  from gradcam_jax.zoo.vgg import init_vgg16

  init = {"resnet50": init_resnet50, "vgg16": init_vgg16}[args.model]
  model, variables = init(size=args.size)
  layer = {"resnet50": "layer4", "vgg16": "features_29"}[args.model]
  jax.block_until_ready(variables)
  methods = ["forward", "gradcam", "hirescam", "gradcam_elementwise", "xgradcam",
             "gradcam++", "layercam", "eigencam", "eigengradcam", "fem", "kpcacam", "ablationcam",
             f"scorecam(top {args.scorecam_top_n})", "guided_backprop", "guided_gradcam",
             "saliency", "input_x_gradient", "deconvnet",
             f"integrated_gradients({args.ig_steps})", "cam", "randomcam",
             "finercam", "shapleycam", "fullgrad", "smoothgradcam++",
             "feature_factorization"]
  if args.model == "vgg16":
    methods.remove("cam")
  if args.only:
    methods = [m for m in methods if m in args.only or m.split("(")[0] in args.only]

  def build(name):
    if name == "forward":
      return jax.jit(model.apply)
    if name == "guided_backprop":
      return jax.jit(gcj.guided_backprop(model.apply))
    if name == "guided_gradcam":
      return jax.jit(gcj.guided_gradcam(model.apply, layer=layer))
    if name in ("saliency", "input_x_gradient", "deconvnet"):
      return jax.jit(getattr(gcj, name)(model.apply))
    if name.startswith("integrated_gradients"):
      return jax.jit(gcj.integrated_gradients(model.apply, steps=args.ig_steps))
    if name in ("randomcam", "smoothgradcam++"):  # keyed: weights or noise from a key
      explain = gcj.cam(model.apply, method=name, layer=layer)
      return jax.jit(lambda v, x: explain(v, x, key=jax.random.key(0)))
    if name == "feature_factorization":  # 5 concepts, 500 NMF updates
      return jax.jit(gcj.feature_factorization(model.apply, layer=layer))
    if name.startswith("scorecam"):
      return jax.jit(gcj.cam(model.apply, method="scorecam", layer=layer,
                             top_n=args.scorecam_top_n, batch_size=args.chunk))
    if name == "fullgrad":  # every conv and batch norm: no layer
      return jax.jit(gcj.cam(model.apply, method="fullgrad"))
    return jax.jit(gcj.cam(model.apply, method=name, layer=layer,
                           batch_size=args.chunk))

  rows = []
  for batch in args.batches:
    x = jax.random.normal(jax.random.key(1), (batch, args.size, args.size, 3))
    fns = {name: build(name) for name in methods}
    first, times, *_ = interleaved(fns, lambda fn: jax.block_until_ready(fn(variables, x)),
                               args.rounds)
    fwd = statistics.median(times["forward"])
    for name in methods:
      med = statistics.median(times[name])
      rows.append({"method": name, "batch": batch, "median_s": med,
                   "images_per_s": batch / med, "x_forward": med / fwd,
                   "first_call_s": first[name]})
      print(f"batch {batch:3d}  {name:26s} {med:8.3f} s  {batch / med:8.2f} img/s  "
            f"{med / fwd:6.2f}x fwd  first call {first[name]:6.2f} s", flush=True)

  for batch in args.batches:  # Integrated Gradients against as many guided backprops
    by = {r["method"]: r["median_s"] for r in rows if r["batch"] == batch}
    ig = by.get(f"integrated_gradients({args.ig_steps})")
    if ig is not None and "guided_backprop" in by:
      ratio = ig / (args.ig_steps * by["guided_backprop"])
      rows.append({"method": "ig_x_guided", "batch": batch, "ratio": ratio})
      print(f"batch {batch:3d}  integrated_gradients({args.ig_steps}) / "
            f"{args.ig_steps} guided backprops: {ratio:.2f}x", flush=True)

  result = {"date": time.strftime("%Y-%m-%d"), "model": args.model, "size": args.size,
            "rounds": args.rounds,
            "chunk": args.chunk, "scorecam_top_n": args.scorecam_top_n,
            "versions": versions(),
            "rows": rows}
  write_json(args.json, result)


if __name__ == "__main__":
  main()
