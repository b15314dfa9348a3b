"""Volumes: a 3-D ResNet-18 (MedicalNet / torchvision r3d_18 layout: 7^3 stride-2
stem, 3^3 max pool, four stages of two basic blocks, widths 64-512; random weights,
BatchNorm in inference mode) on 64^3 single-channel volumes, batch 2, on this
machine. Grad-CAM and Guided Grad-CAM at layer4 against the jitted forward, calls
interleaved round by round (medians); then Score-CAM (top-N channels) and
Ablation-CAM with chunked masked forwards, each with the peak memory its call
added to the process (RSS high-water mark, reset before the call).

    python benchmarks/volumes.py                      # 64^3, batch 2, 3 rounds
    python benchmarks/volumes.py --size 32 --rounds 2 --json /tmp/v.json
    python benchmarks/volumes.py --gradients-only --json /tmp/v.json
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import interleaved, measured, versions, write_json  # noqa: E402


def resnet18_3d():
  import flax.linen as nn

  class Block(nn.Module):
    features: int
    stride: int = 1

    @nn.compact
    def __call__(self, x):
      bn = lambda name: nn.BatchNorm(use_running_average=True, name=name)  # noqa: E731
      y = nn.Conv(self.features, (3, 3, 3), (self.stride,) * 3, use_bias=False,
                  name="conv1")(x)
      y = nn.relu(bn("bn1")(y))
      y = bn("bn2")(nn.Conv(self.features, (3, 3, 3), use_bias=False, name="conv2")(y))
      if self.stride != 1 or x.shape[-1] != self.features:
        x = bn("bn_down")(nn.Conv(self.features, (1, 1, 1), (self.stride,) * 3,
                                  use_bias=False, name="down")(x))
      return nn.relu(x + y)

  class Stage(nn.Module):
    features: int
    stride: int

    @nn.compact
    def __call__(self, x):
      return Block(self.features, name="1")(Block(self.features, self.stride, name="0")(x))

  class ResNet18_3D(nn.Module):
    classes: int = 2

    @nn.compact
    def __call__(self, x):
      x = nn.Conv(64, (7, 7, 7), (2, 2, 2), padding=3, use_bias=False, name="stem")(x)
      x = nn.relu(nn.BatchNorm(use_running_average=True, name="bn")(x))
      x = nn.max_pool(x, (3, 3, 3), (2, 2, 2), padding="SAME")
      for i, (width, stride) in enumerate([(64, 1), (128, 2), (256, 2), (512, 2)]):
        x = Stage(width, stride, name=f"layer{i + 1}")(x)
      return nn.Dense(self.classes, name="fc")(x.mean((1, 2, 3)))

  return ResNet18_3D()


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--size", type=int, default=64)
  parser.add_argument("--batch", type=int, default=2)
  parser.add_argument("--rounds", type=int, default=3)
  parser.add_argument("--scorecam-top-n", type=int, default=32)
  parser.add_argument("--chunk", type=int, default=8, help="Score/Ablation-CAM batch_size")
  parser.add_argument("--json", default="benchmarks/results/volumes.json")
  parser.add_argument("--gradients-only", action="store_true",
                      help="skip Score-CAM and Ablation-CAM")
  args = parser.parse_args()

  import jax
  import gradcam_jax as gcj

  net = resnet18_3d()
  x = jax.random.normal(jax.random.key(1), (args.batch, *(args.size,) * 3, 1))
  variables = net.init(jax.random.key(0), x[:1])
  jax.block_until_ready(variables)
  fns = {
    "forward": jax.jit(net.apply),
    "gradcam": jax.jit(gcj.gradcam(net.apply, layer="layer4")),
    "guided_gradcam": jax.jit(gcj.guided_gradcam(net.apply, layer="layer4")),
    # context for Guided Grad-CAM: its guided half alone (XLA's own input gradient
    # through this network, gcj.saliency, takes minutes: its 7^3 stride-2 stem)
    "guided_backprop": jax.jit(gcj.guided_backprop(net.apply)),
  }
  first, times, *_ = interleaved(fns, lambda fn: jax.block_until_ready(fn(variables, x)),
                                 args.rounds)
  fwd = statistics.median(times["forward"])
  rows = []
  for name in fns:
    med = statistics.median(times[name])
    rows.append({"method": name, "median_s": med, "x_forward": med / fwd,
                 "first_call_s": first[name]})
    print(f"{name:28s} {med:8.3f} s  {med / fwd:6.2f}x forward  first call "
          f"{first[name]:6.2f} s", flush=True)

  chunked = {
    f"scorecam(top {args.scorecam_top_n})": gcj.cam(
      net.apply, method="scorecam", layer="layer4", top_n=args.scorecam_top_n,
      batch_size=args.chunk),
    "ablationcam": gcj.cam(net.apply, method="ablationcam", layer="layer4",
                           batch_size=args.chunk),
  }
  for name, explain in {} if args.gradients_only else chunked.items():
    fn = jax.jit(explain)
    jax.block_until_ready(fn(variables, x))  # compile outside the measurement
    m = measured(lambda: jax.block_until_ready(fn(variables, x)))
    rows.append({"method": name, "median_s": m.seconds, "x_forward": m.seconds / fwd,
                 "batch_size": args.chunk, "peak_gb": m.peak_gb, "process_hwm_gb": m.hwm_gb})
    print(f"{name:28s} {m.seconds:8.3f} s  {m.seconds / fwd:6.2f}x forward  peak "
          f"+{m.peak_gb:.2f} GB during the call (process high-water {m.hwm_gb:.2f} GB)",
          flush=True)

  write_json(args.json, {"date": time.strftime("%Y-%m-%d"), "size": args.size,
                         "batch": args.batch, "rounds": args.rounds, "chunk": args.chunk,
                         "versions": versions(), "rows": rows})


if __name__ == "__main__":
  main()
