"""Shared by the benchmark scripts: the machine and versions recorded with a result."""

from __future__ import annotations

import os
import platform
import sys
from typing import NamedTuple

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from gradcam_jax.cli import xla_setting as _xla_setting  # noqa: E402

# The benchmark scripts own their processes: like the command line, they run under
# the project's chosen XLA setting when XLA_FLAGS is unset (their workers inherit it);
# a comparison of settings passes XLA_FLAGS to each worker explicitly.
print(_xla_setting.describe(_xla_setting.apply(None)).strip(), file=sys.stderr)



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


class Timing(NamedTuple):
  first_s: dict    # name -> first call (trace + compile + run) seconds
  times_s: dict    # name -> steady-state call seconds (all rounds)
  switch_s: dict   # name -> seconds of each round's first call, right after another program
  faults: dict     # name -> minor page faults per steady-state call
  peak_gb: dict    # name -> max over its steady calls of (peak RSS during - RSS before)
  process_peak_gb: float  # the process's peak RSS over every call, compiles included


class Measured(NamedTuple):
  seconds: float
  faults: int       # minor page faults during the call
  peak_gb: float    # peak RSS during the call above the RSS before it (NaN if unknown)
  hwm_gb: float     # the process's RSS high-water mark before and during the call


def status_gb(field: str) -> float:
  with open("/proc/self/status") as f:
    for line in f:
      if line.startswith(field + ":"):
        return int(line.split()[1]) / 1e6
  return float("nan")


def measured(call) -> Measured:
  """Run `call()` and measure it. The peak is the kernel's high-water mark after
  resetting it (``/proc/self/clear_refs``, which also resets ``ru_maxrss``); the
  mark before the reset is carried into `hwm_gb`."""
  import resource
  import time
  hwm = status_gb("VmHWM")
  try:
    with open("/proc/self/clear_refs", "w") as f:
      f.write("5")
    before = status_gb("VmRSS")
  except OSError:
    before = float("nan")
  faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
  start = time.perf_counter()
  call()
  seconds = time.perf_counter() - start
  faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults
  after = status_gb("VmHWM")
  return Measured(seconds, faults, after - before, max(hwm, after))


def interleaved(fns: dict, call, rounds: int, reps: int = 2) -> Timing:
  """Time `call(fn)` for each fn: its first call (trace + compile + run), then
  `rounds` rounds in which each fn in turn runs `reps` calls.

  The first call of each block follows a different program and is kept apart
  (`switch_s`): on this CPU backend it can cost 2x more (HISTORY.md, "switch cost").
  The other calls are the steady state. `call` must block until the result is ready."""
  first = {name: measured(lambda: call(fn)) for name, fn in fns.items()}
  times, switch, faults, peak = ({name: [] for name in fns} for _ in range(4))
  hwm = max(m.hwm_gb for m in first.values())
  for _ in range(rounds):
    for name, fn in fns.items():
      for rep in range(reps):
        m = measured(lambda: call(fn))
        hwm = max(hwm, m.hwm_gb)
        if rep == 0 and reps > 1:
          switch[name].append(m.seconds)
          continue
        times[name].append(m.seconds)
        faults[name].append(m.faults)
        peak[name].append(m.peak_gb)
  return Timing({n: m.seconds for n, m in first.items()}, times, switch, faults,
                {n: max(v) for n, v in peak.items()}, hwm)


def run_worker(script: str, args: list, env_extra: dict | None = None,
               keep_going: bool = False) -> dict:
  """Run `script` with `args` in a fresh Python process; parse its last stdout line
  as JSON. With `keep_going`, a worker that fails gives ``{"error": <end of its
  stderr>}`` instead of raising, so that one failed cell (out of memory, say) does not
  lose the rest of a grid."""
  import json
  import subprocess
  import sys
  env = dict(os.environ, **(env_extra or {}))
  proc = subprocess.run([sys.executable, script, *map(str, args)], env=env,
                        capture_output=True, text=True)
  if proc.returncode != 0:
    if not keep_going:
      raise subprocess.CalledProcessError(proc.returncode, proc.args, proc.stdout,
                                          proc.stderr)
    return {"error": f"exit {proc.returncode}: {proc.stderr[-2000:]}"}
  return json.loads(proc.stdout.strip().splitlines()[-1])
