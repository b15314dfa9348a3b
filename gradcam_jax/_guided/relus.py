"""ReLUs: the guided ReLU, and finding the ReLU activations in a jaxpr (for
:func:`guided`).

Guided backpropagation changes the backward rule of the network's ReLU activations
and nothing else (Springenberg et al.; Captum and pytorch-grad-cam replace the
``torch.nn.ReLU`` modules). Recognised as activations (float dtypes only):

* ``jax.nn.relu`` / ``flax.linen.relu`` (a ``custom_jvp_call`` whose body is
  ``max(x, 0)``, possibly inside a nested ``jit``);
* a bare ``max(x, 0)`` (``jnp.maximum(x, 0.)``), also when the zero is a broadcast or,
  under ``shard_map``, a ``pvary`` of zero;
* ``select_n(x > 0, 0, x)`` (``jnp.where(x > 0, x, 0)``) and ``jnp.clip(x, 0)``, whose
  zero and predicate reach jnp's inner ``jit`` as arguments (see :func:`_call_facts`).

Not activations, left with their plain gradient and listed by :func:`guided_report`:

* a clamp of a *statistic*: ``max(v, 0)`` where ``v`` is computed from a reduction
  (``reduce_sum``, ``reduce_max``, ...) through elementwise and shape operations only,
  e.g. the variance clamp ``jnp.maximum(0., mean(x**2) - mean(x)**2)`` inside Flax's
  and Equinox's LayerNorm and GroupNorm, a norm or a count; also any ``max(v, 0)`` of
  a scalar (a loss term). The values of a layer's output pass through a convolution
  or a matrix product (not a reduction) on their way to a ReLU;
* ``jax.nn.relu6`` (a ReLU capped at 6), also inside ``jax.nn.hard_sigmoid`` and
  ``hard_swish``: the peers leave ``ReLU6``/``Hardswish`` modules alone, and so do
  we. A hand-written ``jnp.minimum(jnp.maximum(x, 0), 6)`` has its ``max`` guided.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax.extend import core as jcore

from gradcam_jax._guided.fast_vjp import is_float as _is_float

__all__ = ["guided_relu", "inner_facts", "is_relu6_call", "relu_form"]


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


def _relu_operand(eqn, tracker):
  """The ``x`` of a ``max(x, 0)`` or ``select_n(x > 0, 0, x)`` equation, or None if
  `eqn` is no such ReLU."""
  if eqn.primitive.name == "select_n":
    return _select_relu_operand(eqn, tracker)
  if eqn.primitive.name != "max" or len(eqn.invars) != 2:
    return None
  a, b = eqn.invars
  out = eqn.outvars[0].aval
  for x, z in ((a, b), (b, a)):
    if (
      tracker(z)
      and not tracker(x)
      and _is_float(x.aval)
      and x.aval.shape == out.shape
      and x.aval.dtype == out.dtype
    ):
      return x
  return None


# Primitives through which a statistic stays a statistic (elementwise and shape
# operations), and those that make one (reductions over the values).
_STAT_PASSTHROUGH = frozenset(
  {
    "add", "sub", "mul", "div", "neg", "abs", "square", "integer_pow", "pow", "sqrt",
    "rsqrt", "exp", "log", "log1p", "max", "min", "clamp", "select_n", "sign",
    "broadcast_in_dim", "reshape", "squeeze", "expand_dims", "transpose",
    "convert_element_type", "copy", "copy_p", "pvary", "psum", "pmax", "pmin",
    "reduce_precision", "stop_gradient",
  }
)  # fmt: skip
_REDUCTIONS = frozenset(
  {"reduce_sum", "reduce_max", "reduce_min", "reduce_prod", "argmax", "argmin"}
)


class _Tracker:
  """Follows, through one jaxpr, which variables are zero, which booleans are
  ``x > 0`` (or ``x >= 0``) of a float ``x`` (``pred[p] = x``), and which values are
  statistics (computed from a reduction through elementwise and shape operations)
  or neutral (literals, scalars, broadcasts of them). `facts` seeds what a caller
  knows of `invars` (see :func:`_call_facts`). Called on an atom: whether it is
  zero."""

  def __init__(self, facts: tuple = (), invars=()):
    self.zeros: set = set()
    self.pred: dict = {}
    self.stats: set = set()
    self.neutral: set = set()
    for v in invars:
      if not getattr(v.aval, "shape", None):
        self.neutral.add(v)
    for v, fact in zip(invars, facts):
      if fact == "zero":
        self.zeros.add(v)
      elif fact == "stat":
        self.stats.add(v)
      elif fact is not None:
        self.pred[v] = invars[fact[1]]

  def __call__(self, atom) -> bool:
    return _literal_is_zero(atom) or (
      not isinstance(atom, jcore.Literal) and atom in self.zeros
    )

  def is_stat(self, atom) -> bool:
    """Whether `atom` holds a statistic or a scalar: no layer's activation values."""
    if isinstance(atom, jcore.Literal):
      return False
    return atom in self.stats or not getattr(atom.aval, "shape", None)

  def _kind(self, atom) -> str:
    if isinstance(atom, jcore.Literal) or atom in self.neutral:
      return "neutral"
    return "stat" if atom in self.stats else "other"

  def update(self, eqn) -> None:
    name = eqn.primitive.name
    if name in _ZERO_PASSTHROUGH and eqn.invars and all(self(v) for v in eqn.invars):
      self.zeros.update(eqn.outvars)
    elif name in ("gt", "ge") and self(eqn.invars[1]) and not self(eqn.invars[0]):
      self.pred[eqn.outvars[0]] = eqn.invars[0]  # x > 0
    elif name in ("lt", "le") and self(eqn.invars[0]) and not self(eqn.invars[1]):
      self.pred[eqn.outvars[0]] = eqn.invars[1]  # 0 < x
    self._update_stats(eqn)

  def _update_stats(self, eqn) -> None:
    name = eqn.primitive.name
    kinds = [self._kind(v) for v in eqn.invars]
    if name in _REDUCTIONS:
      outs = ["neutral" if kinds and kinds[0] == "neutral" else "stat"] * len(eqn.outvars)
    elif name in _STAT_PASSTHROUGH:
      kind = "other" if "other" in kinds else "stat" if "stat" in kinds else "neutral"
      outs = [kind] * len(eqn.outvars)
    elif (inner := _single_sub_jaxpr(eqn)) is not None:
      outs = list(_stat_outputs(inner, inner_facts(eqn, self)))
    else:
      outs = ["other"] * len(eqn.outvars)
    for v, kind in zip(eqn.outvars, outs):
      if kind == "other" and not getattr(v.aval, "shape", None):
        kind = "neutral"  # a scalar: never a layer's activation
      if kind == "stat":
        self.stats.add(v)
      elif kind == "neutral":
        self.neutral.add(v)


_CALLS = frozenset({"jit", "custom_jvp_call", "custom_vjp_call", "remat2", "checkpoint"})


def _single_sub_jaxpr(eqn):
  """The body of a call-like equation (``jit``, ``custom_jvp_call``, ``remat``: its
  body runs once, on the call's own inputs), or None. Loops and branches are not
  calls: what holds of a loop's initial carry need not hold of later ones."""
  if eqn.primitive.name not in _CALLS:
    return None
  subs = _sub_jaxprs(eqn)
  if (
    len(subs) == 1
    and len(subs[0].invars) == len(eqn.invars)
    and len(subs[0].outvars) == len(eqn.outvars)
  ):
    return subs[0]
  return None


@functools.lru_cache(maxsize=4096)
def _stat_outputs(jaxpr, facts: tuple) -> tuple:
  """For each output of `jaxpr`: "stat", "neutral" or "other"."""
  tracker = _Tracker(facts, jaxpr.invars)
  for eqn in jaxpr.eqns:
    tracker.update(eqn)
  return tuple(tracker._kind(v) for v in jaxpr.outvars)


def _select_relu_operand(eqn, tracker):
  """The ``x`` of ``select_n(x > 0, 0, x)`` (``jnp.where(x > 0, x, 0)``), or None."""
  if eqn.primitive.name != "select_n" or len(eqn.invars) != 3:
    return None
  p, if_false, if_true = eqn.invars
  out = eqn.outvars[0].aval
  if (
    not isinstance(p, jcore.Literal)
    and tracker.pred.get(p) is if_true
    and tracker(if_false)
    and _is_float(if_true.aval)
    and if_true.aval.shape == out.shape
    and if_true.aval.dtype == out.dtype
  ):
    return if_true
  return None


def inner_facts(eqn, tracker) -> tuple:
  """What is known of a call-like equation's inputs, for its body: zeros, ``x > 0``
  predicates and statistics (empty for other equations)."""
  if _single_sub_jaxpr(eqn) is None:
    return ()
  return _call_facts(eqn, tracker, stats=True)


def _call_facts(eqn, tracker, stats: bool = False) -> tuple:
  """What is known of a ``jit`` equation's inputs, for its inner jaxpr: "zero", or
  ("gt0", j) for a boolean that is ``x > 0`` of the call's input j (how
  ``jnp.where(x > 0, x, 0)`` and ``jnp.clip(x, 0)`` reach their inner jaxprs); with
  `stats`, also "stat" for a statistic (and for any call-like equation)."""
  if eqn.primitive.name != "jit" and not stats:
    return ()
  facts = []
  for v in eqn.invars:
    if tracker(v):
      facts.append("zero")
    elif not isinstance(v, jcore.Literal) and v in tracker.pred:
      x = tracker.pred[v]
      facts.append(("gt0", eqn.invars.index(x)) if x in eqn.invars else None)
    elif stats and not isinstance(v, jcore.Literal) and v in tracker.stats:
      facts.append("stat")
    else:
      facts.append(None)
  return tuple(facts) if any(f is not None for f in facts) else ()


def _is_relu_body(jaxpr) -> bool:
  """Whether an open jaxpr of one input computes exactly ``max(x, 0)``."""
  if len(jaxpr.invars) != 1 or len(jaxpr.outvars) != 1:
    return False
  x = jaxpr.invars[0]
  tracker = _Tracker()
  relu_outs = set()
  for eqn in jaxpr.eqns:
    tracker.update(eqn)
    if all(tracker(v) for v in eqn.invars) and eqn.invars:
      continue
    if _relu_operand(eqn, tracker) is x:
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


def relu_form(eqn, tracker) -> tuple:
  """``(x, is_activation)`` for a ReLU form (a ``jax.nn.relu`` call, ``max(x, 0)``,
  ``where(x > 0, x, 0)``): an activation unless `x` is a statistic or a scalar (then
  a clamp); ``(None, False)`` for any other equation."""
  x = eqn.invars[0] if _is_relu_call(eqn) else _relu_operand(eqn, tracker)
  return x, x is not None and not tracker.is_stat(x)


def _unwrapped(jaxpr):
  """`jaxpr` without the single ``jit`` equations wrapping its body."""
  while (
    len(jaxpr.eqns) == 1
    and jaxpr.eqns[0].primitive.name == "jit"
    and list(jaxpr.eqns[0].invars) == list(jaxpr.invars)
  ):
    jaxpr = jaxpr.eqns[0].params["jaxpr"].jaxpr
  return jaxpr


def is_relu6_call(eqn) -> bool:
  """A ``jax.nn.relu6`` call: a ``custom_jvp_call`` whose body is ``min(max(x, 0),
  c)`` with a literal ``c > 0``."""
  if eqn.primitive.name != "custom_jvp_call" or len(eqn.invars) != 1:
    return False
  body = _unwrapped(eqn.params["call_jaxpr"].jaxpr)
  if len(body.eqns) != 2 or len(body.invars) != 1:
    return False
  first, second = body.eqns
  tracker = _Tracker()
  cap = [v for v in second.invars if v is not first.outvars[0]]
  return (
    _relu_operand(first, tracker) is body.invars[0]
    and second.primitive.name == "min"
    and first.outvars[0] in second.invars
    and len(cap) == 1
    and isinstance(cap[0], jcore.Literal)
    and float(np.asarray(cap[0].val)) > 0
    and body.outvars[0] is second.outvars[0]
  )


def _is_guided_call(eqn) -> bool:
  """A :func:`guided_relu` already in the jaxpr (e.g. ``guided(guided(f))``)."""
  bwd = eqn.params.get("bwd") if eqn.primitive.name == "custom_vjp_call" else None
  return getattr(bwd, "f", None) is _guided_relu_bwd


def _sub_jaxprs(eqn) -> list:
  if _is_guided_call(eqn) or is_relu6_call(eqn):  # left as they are
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
