"""What :func:`guided` replaces in a function and what it leaves, and why
(:func:`guided_report`); the ReLU counts the rewrite asks for."""

from __future__ import annotations

import functools
from typing import Callable, NamedTuple

import jax

from gradcam_jax._guided.fast_vjp import is_float as _is_float
from gradcam_jax._guided.relus import (
  _sub_jaxprs,
  _Tracker,
  inner_facts,
  is_relu6_call,
  relu_form,
)

__all__ = ["LEFT_BECAUSE", "GuidedReport", "guided_report", "relu_count"]


def relu_count(jaxpr) -> int:
  """Number of ReLUs `guided` would replace in a (closed or open) jaxpr."""
  return _relu_count(getattr(jaxpr, "jaxpr", jaxpr))


_LOOKALIKES = ("max", "min", "clamp", "select_n")

# why each kind of operation guided_report lists is left with its plain gradient
LEFT_BECAUSE = {
  "statistic clamp": "max(v, 0) of a value computed by a reduction (a normalisation's "
  "variance, a norm, a count) or of a scalar: a clamp, not an activation",
  "relu6": "jax.nn.relu6, also inside hard_sigmoid and hard_swish: a capped ReLU, "
  "which Captum and pytorch-grad-cam do not guide either",
  "max": "a max against something other than 0 (leaky ReLU, a cap)",
  "min": "a min (a cap, as in a hand-written relu6)",
  "clamp": "a clamp",
  "select_n": "a select other than where(x > 0, x, 0)",
}


class GuidedReport(NamedTuple):
  """What :func:`guided` does to a function: the ReLU activations it replaces, and
  the ReLU-like operations on floats it leaves with their plain gradient, by kind
  (the keys of ``LEFT_BECAUSE``: statistic clamps, relu6, a ``max`` against
  something other than 0, a ``min`` or ``clamp``, a ``select_n`` other than
  ``where(x > 0, x, 0)``). ``str`` gives one line, and one more per kind left
  saying why."""

  replaced: int
  left: dict

  def __str__(self) -> str:
    left = ", ".join(f"{n} {k}" for k, n in sorted(self.left.items())) or "none"
    why = "".join(f"\n  {k}: {LEFT_BECAUSE[k]}" for k in sorted(self.left))
    return f"guided replaces {self.replaced} ReLU(s); left unguided: {left}{why}"


def _report(jaxpr, facts: tuple, left: dict) -> int:
  tracker = _Tracker(facts, jaxpr.invars)
  replaced = 0

  def leave(kind):
    left[kind] = left.get(kind, 0) + 1

  for eqn in jaxpr.eqns:
    tracker.update(eqn)
    x, activation = relu_form(eqn, tracker)
    if activation:
      replaced += 1
    elif x is not None:
      leave("statistic clamp")
    elif is_relu6_call(eqn):
      leave("relu6")
    else:
      out = eqn.outvars[0] if eqn.outvars else None
      if eqn.primitive.name in _LOOKALIKES and out is not None and _is_float(out.aval):
        if not tracker.is_stat(out):  # a select or cap among statistics: no activation
          leave(eqn.primitive.name)
      inner = inner_facts(eqn, tracker)
      replaced += sum(_report(sub, inner, left) for sub in _sub_jaxprs(eqn))
  return replaced


@functools.lru_cache(maxsize=4096)
def _relu_count(jaxpr, facts: tuple = ()) -> int:
  """ReLUs in `jaxpr` (cached: the re-evaluation asks once per sub-jaxpr)."""
  return _report(jaxpr, facts, {})


def guided_report(fn: Callable, *args, **kwargs) -> GuidedReport:
  """How many ReLUs :func:`guided` replaces in ``fn(*args, **kwargs)`` and which
  activation-like operations it leaves unguided (traced, not run), so that a partial
  rewrite is visible.

  Example:
    >>> import jax, jax.numpy as jnp, gradcam_jax as gcj
    >>> f = lambda x: jax.nn.relu6(jnp.where(x > 0, x, 0.0)) + jnp.maximum(x, 0.1 * x)
    >>> print(gcj.guided_report(f, jnp.ones(3)))
    guided replaces 1 ReLU(s); left unguided: 1 max, 1 relu6
      max: a max against something other than 0 (leaky ReLU, a cap)
      relu6: jax.nn.relu6, also inside hard_sigmoid and hard_swish: a capped ReLU, which Captum and pytorch-grad-cam do not guide either
  """
  closed = jax.make_jaxpr(functools.partial(fn, **kwargs))(*args)
  left: dict = {}
  return GuidedReport(_report(closed.jaxpr, (), left), left)
