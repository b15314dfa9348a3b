"""Test-session set-up: 4 fake CPU devices (before JAX initialises) and strict numerics."""

import os

_flag = "--xla_force_host_platform_device_count=4"
if _flag not in os.environ.get("XLA_FLAGS", ""):
  os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " " + _flag).strip()

import jax  # noqa: E402  (after XLA_FLAGS)

jax.config.update("jax_numpy_rank_promotion", "raise")

# a helper module, not tests: imported by the parity tests only when torch is present
collect_ignore = ["tests/torch_reference.py"]
