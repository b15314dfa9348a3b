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
