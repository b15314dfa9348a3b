"""Shared by the benchmark scripts: the machine and versions recorded with a result."""

from __future__ import annotations

import os
import platform


def versions() -> dict:
  import flax
  import jax
  return {"jax": jax.__version__, "flax": flax.__version__,
          "python": platform.python_version(), "machine": platform.machine(),
          "cpus": os.cpu_count(), "device": str(jax.devices()[0].device_kind)}


def write_json(path: str, result: dict) -> None:
  """Write a result, creating its folder, and say where it went."""
  import json
  os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
  with open(path, "w") as f:
    json.dump(result, f, indent=2)
  print(f"wrote {path}")


def interleaved(fns: dict, call, rounds: int) -> tuple[dict, dict]:
  """Time `call(fn)` for each fn: its first call (trace + compile + run), then
  `rounds` rounds of one call each, interleaved so that drift hits all alike.

  `call` must block until the result is ready. Returns (first_s, times_s lists)."""
  import time
  first = {}
  for name, fn in fns.items():
    start = time.perf_counter()
    call(fn)
    first[name] = time.perf_counter() - start
  times = {name: [] for name in fns}
  for _ in range(rounds):
    for name, fn in fns.items():
      start = time.perf_counter()
      call(fn)
      times[name].append(time.perf_counter() - start)
  return first, times


def run_worker(script: str, args: list, env_extra: dict | None = None) -> dict:
  """Run `script` with `args` in a fresh Python process; parse its last stdout line
  as JSON."""
  import json
  import subprocess
  import sys
  env = dict(os.environ, **(env_extra or {}))
  out = subprocess.run([sys.executable, script, *map(str, args)], env=env, check=True,
                       capture_output=True, text=True).stdout
  return json.loads(out.strip().splitlines()[-1])
