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
