"""ReLUs: the guided ReLU, and finding ReLUs in a jaxpr (for :func:`guided`).

Recognised ReLUs (float dtypes only):

* ``jax.nn.relu`` / ``flax.linen.relu`` (a ``custom_jvp_call`` whose body is
  ``max(x, 0)``, possibly inside a nested ``jit``);
* a bare ``max(x, 0)`` (``jnp.maximum(x, 0.)``), also when the zero is a broadcast or,
  under ``shard_map``, a ``pvary`` of zero;
* ``select_n(x > 0, 0, x)`` (``jnp.where(x > 0, x, 0)``) and ``jnp.clip(x, 0)``, whose
  zero and predicate reach jnp's inner ``jit`` as arguments (see :func:`_call_facts`).

:func:`guided_report` counts them and the ReLU-like operations left alone.
"""

from __future__ import annotations

import functools
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.extend import core as jcore

from gradcam_jax._guided.fast_vjp import is_float as _is_float

__all__ = ["guided_relu", "guided_report", "GuidedReport", "relu_count"]


@jax.custom_vjp
def guided_relu(x):
  """ReLU whose backward pass is guided backpropagation (Springenberg et al. 2014).

  Forward: ``max(x, 0)``, bit-identical to ``jax.nn.relu``.
  Backward: ``g_in = g_out * [g_out > 0] * [x > 0]`` (strict at zero).

  Example:
    >>> import jax, jax.numpy as jnp, gradcam_jax as gcj
    >>> x = jnp.array([-1.0, 0.0, 2.0, 3.0])
    >>> _, vjp = jax.vjp(gcj.guided_relu, x)
    >>> vjp(jnp.array([1.0, 1.0, 1.0, -1.0]))[0]
    Array([0., 0., 1., 0.], dtype=float32)

  References:
    Springenberg et al., "Striving for Simplicity: The All Convolutional Net", 2014.
  """
  return jnp.maximum(x, 0)


def _guided_relu_fwd(x):
  y = jnp.maximum(x, 0)
  return y, y  # y > 0 exactly where x > 0; keeping y shares the forward's buffer


def _guided_relu_bwd(y, g):
  return (jnp.where((g > 0) & (y > 0), g, jnp.zeros_like(g)),)


guided_relu.defvjp(_guided_relu_fwd, _guided_relu_bwd)

# ----------------------------------------------------------------------------------
# Recognising ReLUs in a jaxpr.

_ZERO_PASSTHROUGH = frozenset(
  {"pvary", "broadcast_in_dim", "convert_element_type", "reshape", "copy"}
)


def _literal_is_zero(atom) -> bool:
  if not isinstance(atom, jcore.Literal):
    return False
  try:
    return bool(np.all(np.asarray(atom.val) == 0))
  except Exception:  # an opaque literal (key, token): never a zero
    return False


def _relu_operand(eqn, is_zero: Callable[[Any], bool]):
  """The ``x`` of a ``max(x, 0)`` or ``select_n(x > 0, 0, x)`` equation, or None if
  `eqn` is no such ReLU."""
  if eqn.primitive.name == "select_n":
    return _select_relu_operand(eqn, is_zero)
  if eqn.primitive.name != "max" or len(eqn.invars) != 2:
    return None
  a, b = eqn.invars
  out = eqn.outvars[0].aval
  for x, z in ((a, b), (b, a)):
    if (
      is_zero(z)
      and not is_zero(x)
      and _is_float(x.aval)
      and x.aval.shape == out.shape
      and x.aval.dtype == out.dtype
    ):
      return x
  return None


def _zero_tracker(facts: tuple = (), invars=()):
  """Follows, through one jaxpr, which variables are zero and which booleans are
  ``x > 0`` (or ``x >= 0``) of a float ``x``: ``pred[p] = x``. `facts` seeds what a
  caller knows of `invars` (see :func:`_call_facts`)."""
  zeros: set = set()
  pred: dict = {}
  for v, fact in zip(invars, facts):
    if fact == "zero":
      zeros.add(v)
    elif fact is not None:
      pred[v] = invars[fact[1]]

  def is_zero(atom) -> bool:
    return _literal_is_zero(atom) or (not isinstance(atom, jcore.Literal) and atom in zeros)

  def update(eqn) -> None:
    name = eqn.primitive.name
    if name in _ZERO_PASSTHROUGH and eqn.invars and all(is_zero(v) for v in eqn.invars):
      zeros.update(eqn.outvars)
    elif name in ("gt", "ge") and is_zero(eqn.invars[1]) and not is_zero(eqn.invars[0]):
      pred[eqn.outvars[0]] = eqn.invars[0]  # x > 0
    elif name in ("lt", "le") and is_zero(eqn.invars[0]) and not is_zero(eqn.invars[1]):
      pred[eqn.outvars[0]] = eqn.invars[1]  # 0 < x

  is_zero.pred = pred
  return is_zero, update


def _select_relu_operand(eqn, is_zero):
  """The ``x`` of ``select_n(x > 0, 0, x)`` (``jnp.where(x > 0, x, 0)``), or None."""
  if eqn.primitive.name != "select_n" or len(eqn.invars) != 3:
    return None
  p, if_false, if_true = eqn.invars
  out = eqn.outvars[0].aval
  if (
    not isinstance(p, jcore.Literal)
    and is_zero.pred.get(p) is if_true
    and is_zero(if_false)
    and _is_float(if_true.aval)
    and if_true.aval.shape == out.shape
    and if_true.aval.dtype == out.dtype
  ):
    return if_true
  return None


def _call_facts(eqn, is_zero) -> tuple:
  """What is known of a ``jit`` equation's inputs, for its inner jaxpr: "zero", or
  ("gt0", j) for a boolean that is ``x > 0`` of the call's input j (how
  ``jnp.where(x > 0, x, 0)`` and ``jnp.clip(x, 0)`` reach their inner jaxprs)."""
  if eqn.primitive.name != "jit":
    return ()
  facts = []
  for v in eqn.invars:
    if is_zero(v):
      facts.append("zero")
    elif not isinstance(v, jcore.Literal) and v in is_zero.pred:
      x = is_zero.pred[v]
      facts.append(("gt0", eqn.invars.index(x)) if x in eqn.invars else None)
    else:
      facts.append(None)
  return tuple(facts) if any(f is not None for f in facts) else ()


def _is_relu_body(jaxpr) -> bool:
  """Whether an open jaxpr of one input computes exactly ``max(x, 0)``."""
  if len(jaxpr.invars) != 1 or len(jaxpr.outvars) != 1:
    return False
  x = jaxpr.invars[0]
  is_zero, update = _zero_tracker()
  relu_outs = set()
  for eqn in jaxpr.eqns:
    update(eqn)
    if all(is_zero(v) for v in eqn.invars) and eqn.invars:
      continue
    if _relu_operand(eqn, is_zero) is x:
      relu_outs.add(eqn.outvars[0])
    elif (
      eqn.primitive.name == "jit"
      and eqn.invars == [x]
      and _is_relu_body(eqn.params["jaxpr"].jaxpr)
    ):
      relu_outs.add(eqn.outvars[0])
    else:
      return False
  return jaxpr.outvars[0] in relu_outs


def _is_relu_call(eqn) -> bool:
  return (
    eqn.primitive.name == "custom_jvp_call"
    and len(eqn.invars) == 1
    and _is_float(eqn.invars[0].aval)
    and _is_relu_body(eqn.params["call_jaxpr"].jaxpr)
  )


def _is_guided_call(eqn) -> bool:
  """A :func:`guided_relu` already in the jaxpr (e.g. ``guided(guided(f))``)."""
  bwd = eqn.params.get("bwd") if eqn.primitive.name == "custom_vjp_call" else None
  return getattr(bwd, "f", None) is _guided_relu_bwd


def _sub_jaxprs(eqn) -> list:
  if _is_guided_call(eqn):
    return []
  params = eqn.params
  subs = []
  for value in params.values():
    for item in value if isinstance(value, (tuple, list)) else (value,):
      if isinstance(item, jcore.ClosedJaxpr):
        subs.append(item.jaxpr)
      elif isinstance(item, jcore.Jaxpr):
        subs.append(item)
  return subs


def relu_count(jaxpr) -> int:
  """Number of ReLUs `guided` would replace in a (closed or open) jaxpr."""
  return _relu_count(getattr(jaxpr, "jaxpr", jaxpr))


_LOOKALIKES = ("max", "min", "clamp", "select_n")


class GuidedReport(NamedTuple):
  """What :func:`guided` does to a function: the ReLUs it replaces, and the
  activation-like operations on floats it leaves with their plain gradient (a
  ``max`` against something other than 0, as in leaky ReLU; a ``min`` or ``clamp``,
  as in relu6's cap at 6; a ``select_n`` other than ``where(x > 0, x, 0)``)."""

  replaced: int
  left: dict

  def __str__(self) -> str:
    left = ", ".join(f"{n} {k}" for k, n in sorted(self.left.items())) or "none"
    return f"guided replaces {self.replaced} ReLU(s); left unguided: {left}"


def _report(jaxpr, facts: tuple, left: dict) -> int:
  is_zero, update = _zero_tracker(facts, jaxpr.invars)
  replaced = 0
  for eqn in jaxpr.eqns:
    update(eqn)
    if _is_relu_call(eqn) or _relu_operand(eqn, is_zero) is not None:
      replaced += 1
      continue
    if eqn.primitive.name in _LOOKALIKES and eqn.outvars and _is_float(eqn.outvars[0].aval):
      left[eqn.primitive.name] = left.get(eqn.primitive.name, 0) + 1
    inner = _call_facts(eqn, is_zero)
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
    guided replaces 2 ReLU(s); left unguided: 1 max, 1 min
  """
  closed = jax.make_jaxpr(functools.partial(fn, **kwargs))(*args)
  left: dict = {}
  return GuidedReport(_report(closed.jaxpr, (), left), left)
