"""Guided backprop on the 3-D ResNet-18 of ``volumes.py`` (64³, batch 2) under variants
of the faster backward rules of ``gradcam_jax/_guided/fast_vjp.py``, each traced in
this one process and timed beside the others (interleaved rounds, medians, the
forward as the reference): which rule choice is fastest on this machine.

    python benchmarks/volumes_rules.py --json benchmarks/results/volumes_rules.json

Variants: ``shipped`` (the rules as they are); ``xla_3`` (XLA's own input gradient for
the strided convolutions with 16 or more input channels: the 3³ stride-2 ones);
``xla_1x1`` (XLA's own for the 1³ strided shortcuts); ``merge_all`` (every strided
convolution's phases zero-padded into one convolution, as the stem's are);
``phases_stride1`` (the phase rule for the stride-1 convolutions too). The rules are
switched by patching the module's selectors at trace time, which only a benchmark
does.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import interleaved, versions, write_json  # noqa: E402
from volumes import resnet18_3d  # noqa: E402


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--size", type=int, default=64)
  parser.add_argument("--batch", type=int, default=2)
  parser.add_argument("--rounds", type=int, default=3)
  parser.add_argument("--json", default="benchmarks/results/volumes_rules.json")
  args = parser.parse_args()

  import jax
  import gradcam_jax as gcj
  import gradcam_jax._guided.fast_vjp as fv

  net = resnet18_3d()
  x = jax.random.normal(jax.random.key(1), (args.batch, *(args.size,) * 3, 1))
  variables = net.init(jax.random.key(0), x[:1])
  shipped, merge_below = fv._is_strided_conv, fv._MERGE_BELOW

  def stride1_too(eqn):
    if shipped(eqn) or eqn.primitive.name != "conv_general_dilated":
      return shipped(eqn)
    p = eqn.params
    return (max(p["window_strides"]) == 1 and not isinstance(p["padding"], str)
            and all(d == 1 for d in (*p["lhs_dilation"], *p["rhs_dilation"]))
            and p["feature_group_count"] == 1 and p["batch_group_count"] == 1)

  variants = {
    "shipped": (shipped, merge_below),
    "xla_3": (lambda e: shipped(e) and e.invars[0].aval.shape[-1] < 16, merge_below),
    "xla_1x1": (lambda e: shipped(e) and e.invars[1].aval.shape[0] != 1, merge_below),
    "merge_all": (shipped, 10**9),
    "phases_stride1": (stride1_too, merge_below),
  }
  fns = {"forward": jax.jit(net.apply)}
  jax.block_until_ready(fns["forward"](variables, x))
  try:
    for name, (rule, merge) in variants.items():
      fv._is_strided_conv, fv._MERGE_BELOW = rule, merge
      fn = jax.jit(gcj.guided_backprop(net.apply))
      jax.block_until_ready(fn(variables, x))  # traced and compiled under the variant
      fns[name] = fn
  finally:
    fv._is_strided_conv, fv._MERGE_BELOW = shipped, merge_below
  _, times, *_ = interleaved(fns, lambda fn: jax.block_until_ready(fn(variables, x)),
                             args.rounds)
  fwd = statistics.median(times["forward"])
  rows = []
  for name in fns:
    med = statistics.median(times[name])
    rows.append({"variant": name, "median_s": med, "x_forward": med / fwd})
    print(f"{name:16s} {med:8.3f} s  {med / fwd:6.2f}x forward", flush=True)
  write_json(args.json, {"date": time.strftime("%Y-%m-%d"), "size": args.size,
                         "batch": args.batch, "rounds": args.rounds,
                         "versions": versions(), "rows": rows})


if __name__ == "__main__":
  main()
