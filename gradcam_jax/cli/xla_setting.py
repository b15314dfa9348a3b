"""Which XLA flags the ``gradcam-jax`` command runs its own process under.

The library never touches process-wide settings: this module is used only by the
command line (and the benchmark scripts), for the process they own, and only before
JAX starts its backend (XLA reads ``XLA_FLAGS`` once, when the first backend starts).

jaxlib 0.10's CPU backend sends chains of convolutions and dots into YNNPACK fusions
by default; ``--xla_cpu_experimental_ynn_fusion_type=`` (an empty value) turns that
off. Which is faster depends on the CPU, the model and the method (see
``benchmarks/RESULTS.md``); ``gradcam-jax bench`` measures it for a given model.
"""

from __future__ import annotations

import os
from typing import Mapping, NamedTuple

# name -> XLA_FLAGS value; "default" is XLA's own defaults.
SETTINGS = {
  "default": "",
  "noynn": "--xla_cpu_experimental_ynn_fusion_type=",
  "ynn-individual": (
    "--xla_cpu_experimental_ynn_fusion_type=individual_dot,individual_convolution"
  ),
}
# What the command uses when the user set neither XLA_FLAGS nor --xla-flags
# (chosen from the grid in benchmarks/HISTORY.md, "XLA's YNN fusion: the grid").
CHOSEN = "noynn"


class Choice(NamedTuple):
  flags: str  # the XLA_FLAGS value the process runs under
  source: str  # "--xla-flags", "XLA_FLAGS" or "gradcam-jax"
  set_here: bool  # whether this module changed the environment


def choose(explicit: str | None, environ: Mapping[str, str]) -> Choice:
  """The flags to run under: ``--xla-flags`` when given (a setting's name or raw
  flags), else the user's ``XLA_FLAGS`` untouched, else :data:`CHOSEN`."""
  if explicit is not None:
    return Choice(SETTINGS.get(explicit, explicit), "--xla-flags", True)
  if "XLA_FLAGS" in environ:
    return Choice(environ["XLA_FLAGS"], "XLA_FLAGS", False)
  return Choice(SETTINGS[CHOSEN], "gradcam-jax", True)


def apply(explicit: str | None, environ=os.environ) -> Choice:
  """Put the chosen flags into `environ` (before JAX's backend starts) and return
  the choice."""
  choice = choose(explicit, environ)
  if choice.set_here:
    environ["XLA_FLAGS"] = choice.flags
  return choice


def describe(choice: Choice) -> str:
  """One start-up line saying which flags run and why."""
  shown = choice.flags or "(none: XLA's defaults)"
  name = next((n for n, f in SETTINGS.items() if f == choice.flags), None)
  named = f" [{name}]" if name else ""
  why = {
    "--xla-flags": "from --xla-flags",
    "XLA_FLAGS": "from your XLA_FLAGS, left as it is",
    "gradcam-jax": (
      "set by gradcam-jax for this process because XLA_FLAGS is "
      "unset; --xla-flags default gives XLA's own defaults"
    ),
  }
  return f"  XLA flags: {shown}{named}, {why[choice.source]}"
