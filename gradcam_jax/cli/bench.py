"""gradcam-jax bench: find the fastest XLA setting for a model on this machine.

Each XLA setting (:data:`gradcam_jax.cli.xla_setting.SETTINGS`) runs in its own process,
since XLA reads its flags once per process; the processes alternate round by round,
so a drift of the machine hits every setting alike. Each process times the jitted
forward and the explainer that ``gradcam-jax explain`` would run (same model, layer
and method), on random images of the model's input size, after one compiling call.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time

from gradcam_jax.cli.usage import UsageError

from gradcam_jax.cli import xla_setting as _xla_setting

# A setting must beat XLA's defaults by more than this to be recommended: two
# processes of the same setting differ by a few percent on a shared machine.
MARGIN = 0.05


def worker(args) -> dict:
  """Runs in the child: time forward and explainer; one JSON line on stdout."""
  import jax
  import numpy as np
  from gradcam_jax._adapters import pick
  from gradcam_jax.cli.inputs import sample_batch
  from gradcam_jax.cli.job import Job, build_explainer
  from gradcam_jax.cli.model_options import load_model

  model, _ = load_model(args.model, args.weights, args.random_weights, args.output)
  job = Job(layer=args.layer or model.layer, method=args.method)
  pixels = sample_batch(model, args.batch_size)
  images = jax.device_put(np.asarray(model.preprocess(pixels)))
  adapter, _ = pick(model.apply_fn, model.variables)  # any model form the command takes
  calls = {
    "forward": jax.jit(lambda v, x: adapter(adapter.variables(v), x)),
    "explain": jax.jit(lambda v, x: build_explainer(model, v, job)(x)),
  }
  out = {}
  for name, fn in calls.items():
    start = time.perf_counter()
    jax.block_until_ready(fn(model.variables, images))
    first = time.perf_counter() - start
    times = []
    for _ in range(args.calls):
      start = time.perf_counter()
      jax.block_until_ready(fn(model.variables, images))
      times.append(time.perf_counter() - start)
    out[name] = {"first_s": first, "median_s": statistics.median(times)}
  return out


def _worker_command(args) -> list:
  command = [
    sys.executable,
    "-m",
    "gradcam_jax.cli.bench",
    "--model",
    args.model,
    "--method",
    args.method,
    "--batch-size",
    str(args.batch_size),
    "--calls",
    str(args.calls),
  ]
  if args.weights:
    command += ["--weights", args.weights]
  if args.random_weights:
    command.append("--random-weights")
  if args.layer:
    command += ["--layer", args.layer]
  if args.output:
    command += ["--output", args.output]
  return command


def run(args) -> int:
  """The parent: run the workers, print the table and the flag to use."""
  rounds = 1 if args.quick else args.rounds
  base = os.environ.get("XLA_FLAGS", "")
  print(
    f"gradcam-jax bench: model {args.model}, method {args.method}, batch "
    f"{args.batch_size}, {rounds} round(s) x {len(_xla_setting.SETTINGS)} settings, "
    f"{args.calls} timed calls each, one process per setting and round"
    + (
      f"; your XLA_FLAGS ({base}) are kept and each setting is added to them"
      if base
      else ""
    ),
    flush=True,
  )
  times: dict = {name: {} for name in _xla_setting.SETTINGS}
  for r in range(rounds):
    for name, flags in _xla_setting.SETTINGS.items():
      env = dict(os.environ, XLA_FLAGS=" ".join(f for f in (base, flags) if f))
      proc = subprocess.run(_worker_command(args), env=env, capture_output=True, text=True)
      if proc.returncode == 2:  # a usage error, found by the worker that loads the model
        raise UsageError(proc.stderr.strip().splitlines()[-1])
      if proc.returncode != 0:
        print(
          f"gradcam-jax bench: the {name} process failed:\n{proc.stderr[-2000:]}",
          file=sys.stderr,
        )
        return 1
      for call, t in json.loads(proc.stdout.strip().splitlines()[-1]).items():
        times[name].setdefault(call, []).append(t["median_s"])
      print(f"  round {r + 1}: {name} done", flush=True)
  calls = list(times["default"])
  median = {n: {c: statistics.median(v) for c, v in t.items()} for n, t in times.items()}
  spread = {  # of the explainer's per-round medians: how far apart the rounds were
    n: (max(t["explain"]) - min(t["explain"])) / statistics.median(t["explain"])
    for n, t in times.items()
  }
  print(
    f"\n{'setting':16s}"
    + "".join(f"{c if c == 'forward' else f'explain ({args.method})':>22s}" for c in calls)
    + ("  spread of explain over rounds" if rounds > 1 else "")
  )
  for name, by_call in median.items():
    print(
      f"{name:16s}"
      + "".join(
        f"{by_call[c]:9.4f} s ({by_call[c] / median['default'][c]:5.2f}x)" for c in calls
      )
      + (f"  {spread[name]:6.1%}" if rounds > 1 else "")
    )
  if rounds == 1:
    print(
      "\nnote: --quick ran one round: on a busy machine one round can flip the "
      "answer; drop --quick to run 3 rounds and see their spread."
    )
  best = min(median, key=lambda n: median[n]["explain"])
  gain = 1 - median[best]["explain"] / median["default"]["explain"]
  if best == "default" or gain <= MARGIN:
    print(
      f"\nfastest for {args.method}: XLA's defaults (no setting beats them by more "
      f"than {MARGIN:.0%}). Run gradcam-jax explain with --xla-flags default; in your "
      "own code, set nothing."
    )
  else:
    flags = _xla_setting.SETTINGS[best]
    print(
      f"\nfastest for {args.method}: {best}, {gain:.0%} faster than XLA's defaults."
      f" gradcam-jax explain: --xla-flags {best}. In your own code, before "
      f"importing jax:\n  import os; os.environ['XLA_FLAGS'] = "
      f"(os.environ.get('XLA_FLAGS', '') + ' {flags}').strip()"
    )
  return 0


def main(argv=None) -> None:
  """The worker's entry point (``python -m gradcam_jax.cli.bench``)."""
  import argparse

  parser = argparse.ArgumentParser()
  for option in ("--model", "--method", "--weights", "--layer", "--output"):
    parser.add_argument(option)
  parser.add_argument("--random-weights", action="store_true")
  parser.add_argument("--batch-size", type=int)
  parser.add_argument("--calls", type=int)
  try:
    print(json.dumps(worker(parser.parse_args(argv))))
  except UsageError as err:
    print(err, file=sys.stderr)
    sys.exit(2)


if __name__ == "__main__":
  main()
