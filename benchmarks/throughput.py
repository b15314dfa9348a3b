"""Throughput of the explainers on VGG16 and ResNet-50 (random weights, 224x224) by
batch size and dtype, with the same model's jitted forward measured in the same
process, interleaved call by call.

One process per (environment, model, dtype, batch): it compiles every method (first
call = trace + compile + run, params-as-argument form), then runs rounds in which each
method makes two calls in a row: the first, right after another program, is reported
apart as `switch` (on this CPU backend it can cost twice the steady state), the second
is the steady state. Rows report medians, images/s, the ratio to that process's
forward, minor page faults per call and the call's peak memory above the RSS before
it. Then the first call of the closure form, under ``jax.jit`` and ``gcj.jit``.
``peak_rss_gb`` is the process's peak over everything. bfloat16 casts params and
images. ``--envs`` runs the table under XLA's per-operation YNN fusion or another
malloc as well.

    python benchmarks/throughput.py                                  # CPU defaults
    python benchmarks/throughput.py --envs default ynn jemalloc --batches 4
    python benchmarks/throughput.py --batches 64 256 --rounds 5      # on a GPU
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from _common import (_xla_setting, interleaved, measured, run_worker, versions,  # noqa: E402
                     write_json)

METHODS = ("forward", "gradcam", "guided_backprop", "guided_gradcam", "ablationcam",
           "scorecam")
# Process environments to compare (each row says which it ran under): XLA's defaults
# ("default": XLA_FLAGS empty), XLA's YNN fusion
# per operation ("ynn"), YNN fusion disabled altogether ("noynn": the flag with an empty
# value), and malloc replacements (Debian: apt install libjemalloc2
# libtcmalloc-minimal4) that keep freed pages instead of unmapping them.
ENVS = {"default": {"XLA_FLAGS": ""},
        "ynn": {"XLA_FLAGS": _xla_setting.SETTINGS["ynn-individual"]},
        "noynn": {"XLA_FLAGS": _xla_setting.SETTINGS["noynn"]},
        "jemalloc": {"LD_PRELOAD": "/usr/lib/x86_64-linux-gnu/libjemalloc.so.2"},
        "tcmalloc": {"LD_PRELOAD": "/usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4"}}


MODELS = ("resnet50", "vgg16", "demo", "vit")


def _model(name):
  """(apply_fn, variables, layer, input size, explainer options) for a benchmark model:
  the zoo's VGG16 and ResNet-50 with random weights at 224x224, the shipped demo
  model at 64x64, and the tiny ViT (2 blocks, random init) at 64x64."""
  import gradcam_jax as gcj
  from gradcam_jax import zoo
  if name == "vit":
    from gradcam_jax.zoo.vit import init_tiny_vit
    vit, variables = init_tiny_vit(size=64)
    return vit.apply, variables, "blocks_0", 64, {"reshape": gcj.tokens_to_grid()}
  if name == "demo":
    m = zoo.load("demo")
    return m.apply_fn, m.variables, m.layer, m.input_size[0], {}
  m = zoo.load(name, random_init=True)
  return (m.apply_fn, m.variables, "layer4" if name == "resnet50" else "features_29",
          224, {})


def worker(model_name: str, dtype: str, batch: int, rounds: int, top_n: int,
           methods=METHODS, closure: bool = True) -> dict:
  import jax
  import jax.numpy as jnp
  import gradcam_jax as gcj
  apply_fn, variables, layer, size, extra = _model(model_name)
  dt = jnp.bfloat16 if dtype == "bfloat16" else jnp.float32
  variables = jax.tree_util.tree_map(lambda a: a.astype(dt), variables)
  x = jax.random.normal(jax.random.key(1), (batch, size, size, 3), dt)
  builders = {
      "forward": jax.jit(apply_fn),
      "gradcam": jax.jit(gcj.gradcam(apply_fn, layer=layer, **extra)),
      "guided_backprop": jax.jit(gcj.guided_backprop(apply_fn)),
      "guided_gradcam": jax.jit(gcj.guided_gradcam(apply_fn, layer=layer, **extra)),
      "ablationcam": jax.jit(gcj.cam(apply_fn, method="ablationcam", layer=layer,
                                     batch_size=64, **extra)),
      "scorecam": jax.jit(gcj.cam(apply_fn, method="scorecam", layer=layer,
                                  top_n=top_n, batch_size=8, **extra)),
  }
  fns = {name: builders[name] for name in dict.fromkeys(("forward", *methods))}
  timing = interleaved(fns, lambda fn: jax.block_until_ready(fn(variables, x)), rounds)
  fwd = statistics.median(timing.times_s["forward"])
  rows = [{"model": model_name, "dtype": dtype, "batch": batch, "method": name,
           "median_s": statistics.median(t), "images_per_s": batch / statistics.median(t),
           "x_forward": statistics.median(t) / fwd, "first_call_s": timing.first_s[name],
           "switch_s": statistics.median(timing.switch_s[name]),
           "page_faults": statistics.median(timing.faults[name]),
           "peak_above_gb": timing.peak_gb[name]}
          for name, t in timing.times_s.items()]
  closure, peak = {}, timing.process_peak_gb
  for name in [n for n in ("forward", "gradcam", "guided_gradcam")
               if n in methods and closure]:
    # closure form: params captured by the jitted function
    build = {"forward": lambda: lambda images: apply_fn(variables, images),
             "gradcam": lambda: gcj.gradcam(apply_fn, variables, layer=layer, **extra),
             "guided_gradcam": lambda: gcj.guided_gradcam(apply_fn, variables,
                                                          layer=layer, **extra)}[name]
    for form, jit in (("jax.jit", jax.jit), ("gcj.jit", gcj.jit)):
      if name == "forward" and form == "gcj.jit":
        continue
      fn = jit(build())
      first = measured(lambda: jax.block_until_ready(fn(x)))
      closure[f"{name} [{form}(closure)]"] = first.seconds
      peak = max(peak, first.hwm_gb)
  return {"rows": rows, "closure_first_call_s": closure,
          "peak_rss_gb": peak,
          "device": str(jax.devices()[0].device_kind), "versions": versions(),
          "xla_flags": os.environ.get("XLA_FLAGS", "")}


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--models", nargs="+", default=["resnet50", "vgg16"],
                      choices=MODELS)
  parser.add_argument("--dtypes", nargs="+", default=["float32", "bfloat16"])
  parser.add_argument("--batches", type=int, nargs="+", default=[1, 4])
  parser.add_argument("--rounds", type=int, default=3)
  parser.add_argument("--scorecam-top-n", type=int, default=16)
  parser.add_argument("--envs", nargs="+", default=["default"], choices=sorted(ENVS),
                      help="process environments (XLA flags, allocator) to run the table "
                           "under, each in its own processes")
  parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
  parser.add_argument("--repeats", type=int, default=1,
                      help="run the whole grid this many times (environments alternate)")
  parser.add_argument("--no-closure", action="store_true",
                      help="skip the first-call timings of the closure form")
  parser.add_argument("--json", default="benchmarks/results/throughput.json")
  parser.add_argument("--worker", nargs=3, metavar=("MODEL", "DTYPE", "BATCH"))
  args = parser.parse_args()
  if args.worker:
    model_name, dtype, batch = args.worker
    print(json.dumps(worker(model_name, dtype, int(batch), args.rounds,
                            args.scorecam_top_n, args.methods, not args.no_closure)))
    return
  for flags in args.envs:
    env = ENVS[flags]
    if "LD_PRELOAD" in env and not os.path.exists(env["LD_PRELOAD"]):
      raise SystemExit(f"--envs {flags}: {env['LD_PRELOAD']} is not installed")
  results = []
  # environments innermost: their processes alternate, so a drift of the machine
  # hits every environment alike; --repeats runs the whole grid again
  for repeat in range(args.repeats):
    for model_name in args.models:
      for dtype in args.dtypes:
        for batch in args.batches:
          for flags in args.envs:
            res = run_worker(__file__, ["--worker", model_name, dtype, batch,
                                        "--rounds", args.rounds, "--methods",
                                        *args.methods, "--scorecam-top-n",
                                        args.scorecam_top_n,
                                        *(["--no-closure"] if args.no_closure else [])],
                             ENVS[flags],
                             keep_going=True)
            res.update(env=flags, repeat=repeat, model=model_name, dtype=dtype,
                       batch=batch)
            results.append(res)
            if "error" in res:
              print(f"{flags:7s} {model_name:9s} {dtype:8s} b{batch:<4d} FAILED: "
                    f"{res['error'][-400:]}", flush=True)
            else:
              _print_rows(flags, model_name, dtype, batch, res)
            # written after every process, so that a grid stopped part-way keeps its cells
            # versions as a worker read them: JAX is never started in this process,
            # which on a GPU would hold the memory the workers need
            write_json(args.json, {"date": time.strftime("%Y-%m-%d"), "versions":
                                   next((r["versions"] for r in results
                                         if "versions" in r), None),
                                   "rounds": args.rounds,
                                   "repeats": args.repeats,
                                   "scorecam_top_n": args.scorecam_top_n,
                                   "results": results})


def _print_rows(flags, model_name, dtype, batch, res) -> None:
  for r in res["rows"]:
    print(f"{flags:7s} {model_name:9s} {dtype:8s} b{batch:<4d} "
          f"{r['method']:16s} {r['median_s']:8.3f} s "
          f"{r['images_per_s']:8.2f} img/s {r['x_forward']:6.2f}x fwd  "
          f"switch {r['switch_s']:6.3f} s  first {r['first_call_s']:6.2f} s  "
          f"faults {r['page_faults']:8.0f}  peak+ {r['peak_above_gb']:5.2f} GB",
          flush=True)
  for name, s in res["closure_first_call_s"].items():
    print(f"  first call {name}: {s:.2f} s", flush=True)
  print(f"  process peak RSS {res['peak_rss_gb']:.2f} GB on {res['device']}", flush=True)


if __name__ == "__main__":
  main()
