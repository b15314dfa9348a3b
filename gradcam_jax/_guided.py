"""Guided backpropagation: the guided ReLU and the `guided(fn)` function transform.

`guided(fn)` is the JAX analogue of TensorFlow's ``gradient_override_map``: it traces
`fn` to a jaxpr and evaluates that jaxpr again with every ReLU replaced by
:func:`guided_relu`. The forward values are bit-identical (the guided ReLU computes
``max(x, 0)`` exactly as ``jax.nn.relu`` does); only the backward rule changes. The
user's function and model are never touched.

Recognised ReLUs (float dtypes only):

* ``jax.nn.relu`` / ``flax.linen.relu`` (a ``custom_jvp_call`` whose body is
  ``max(x, 0)``, possibly inside a nested ``jit``);
* a bare ``max(x, 0)`` (``jnp.maximum(x, 0.)``), also when the zero is a broadcast or,
  under ``shard_map``, a ``pvary`` of zero.

They are found inside nested ``jit``, ``remat``/``checkpoint``, ``scan``, ``cond``,
``while`` and ``shard_map``. A custom-derivative function (``custom_jvp``/``custom_vjp``)
that contains ReLUs is evaluated through its body, so its own derivative rule is
replaced by the guided derivative of that body. Other higher-order primitives that
contain ReLUs raise ``NotImplementedError`` rather than silently skip them, and a
function with no ReLU at all raises :class:`NoReLUError`.

While re-evaluating, max pools and strided NHWC convolutions get faster backward
rules than XLA's CPU defaults (same forward, same gradient up to summation order; see
``_fast_vjp``).

The jaxpr APIs used here (``jax.extend``) carry no compatibility promise; the
project pins the JAX versions it is tested on.
"""

from __future__ import annotations

import functools
from typing import Any, Callable, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.extend import core as jcore

from gradcam_jax._errors import NoReLUError, UnsupportedError
from gradcam_jax._fast_vjp import bind as _bind, fast_backward
from gradcam_jax._fast_vjp import is_float as _is_float

__all__ = ["guided_relu", "guided", "guided_report", "GuidedReport", "relu_count"]


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
    {"pvary", "broadcast_in_dim", "convert_element_type", "reshape", "copy"})


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
    if (is_zero(z) and not is_zero(x) and _is_float(x.aval)
        and x.aval.shape == out.shape and x.aval.dtype == out.dtype):
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
      pred[eqn.outvars[0]] = eqn.invars[0]   # x > 0
    elif name in ("lt", "le") and is_zero(eqn.invars[0]) and not is_zero(eqn.invars[1]):
      pred[eqn.outvars[0]] = eqn.invars[1]   # 0 < x

  is_zero.pred = pred
  return is_zero, update


def _select_relu_operand(eqn, is_zero):
  """The ``x`` of ``select_n(x > 0, 0, x)`` (``jnp.where(x > 0, x, 0)``), or None."""
  if eqn.primitive.name != "select_n" or len(eqn.invars) != 3:
    return None
  p, if_false, if_true = eqn.invars
  out = eqn.outvars[0].aval
  if (not isinstance(p, jcore.Literal) and is_zero.pred.get(p) is if_true
      and is_zero(if_false) and _is_float(if_true.aval)
      and if_true.aval.shape == out.shape and if_true.aval.dtype == out.dtype):
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
    elif (eqn.primitive.name == "jit" and eqn.invars == [x]
          and _is_relu_body(eqn.params["jaxpr"].jaxpr)):
      relu_outs.add(eqn.outvars[0])
    else:
      return False
  return jaxpr.outvars[0] in relu_outs


def _is_relu_call(eqn) -> bool:
  return (eqn.primitive.name == "custom_jvp_call" and len(eqn.invars) == 1
          and _is_float(eqn.invars[0].aval)
          and _is_relu_body(eqn.params["call_jaxpr"].jaxpr))


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


@functools.lru_cache(maxsize=4096)
def _relu_count(jaxpr, facts: tuple = ()) -> int:
  is_zero, update = _zero_tracker(facts, jaxpr.invars)
  count = 0
  for eqn in jaxpr.eqns:
    update(eqn)
    if _is_relu_call(eqn) or _relu_operand(eqn, is_zero) is not None:
      count += 1
    else:
      inner = _call_facts(eqn, is_zero)
      count += sum(_relu_count(sub, inner) for sub in _sub_jaxprs(eqn))
  return count


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
    if (eqn.primitive.name in _LOOKALIKES and eqn.outvars
        and _is_float(eqn.outvars[0].aval)):
      left[eqn.primitive.name] = left.get(eqn.primitive.name, 0) + 1
    inner = _call_facts(eqn, is_zero)
    replaced += sum(_report(sub, inner, left) for sub in _sub_jaxprs(eqn))
  return replaced


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


# ----------------------------------------------------------------------------------
# Re-evaluating a jaxpr with a replacement for every ReLU.

Rule = Callable[[jax.Array], jax.Array]


def _closed_fn(closed, rule: Rule) -> Callable:
  return lambda *args: _eval(closed.jaxpr, closed.consts, args, rule)


def _open_fn(jaxpr, rule: Rule) -> Callable:
  return lambda *args: _eval(jaxpr, (), args, rule)


def _eval_scan(eqn, invals, rule):
  p = eqn.params
  nc, ncarry = p["num_consts"], p["num_carry"]
  consts, init, xs = invals[:nc], invals[nc:nc + ncarry], invals[nc + ncarry:]
  body = _closed_fn(p["jaxpr"], rule)

  def step(carry, x):
    out = body(*consts, *carry, *x)
    return list(out[:ncarry]), list(out[ncarry:])

  carry, ys = lax.scan(step, list(init), list(xs), length=p["length"],
                       reverse=p["reverse"], unroll=p["unroll"])
  return [*carry, *ys]


def _eval_while(eqn, invals, rule):
  p = eqn.params
  cn, bn = p["cond_nconsts"], p["body_nconsts"]
  cconsts, bconsts, init = invals[:cn], invals[cn:cn + bn], invals[cn + bn:]
  cond = _closed_fn(p["cond_jaxpr"], rule)
  body = _closed_fn(p["body_jaxpr"], rule)
  return list(lax.while_loop(lambda c: cond(*cconsts, *c)[0],
                             lambda c: list(body(*bconsts, *c)), list(init)))


def _eval_cond(eqn, invals, rule):
  index, *ops = invals
  branches = [(lambda f: lambda *a: list(f(*a)))(_closed_fn(b, rule))
              for b in eqn.params["branches"]]
  return list(lax.switch(index, branches, *ops))


def _eval_remat(eqn, invals, rule):
  p = eqn.params
  fn = jax.checkpoint(_open_fn(p["jaxpr"], rule), prevent_cse=p["prevent_cse"],
                      policy=p["policy"])
  return list(fn(*invals))


def _eval_shard_map(eqn, invals, rule):
  p = eqn.params
  fn = jax.shard_map(lambda *a: list(_open_fn(p["jaxpr"], rule)(*a)), mesh=p["mesh"],
                     in_specs=p["in_specs"], out_specs=list(p["out_specs"]),
                     check_vma=p["check_vma"], axis_names=p["newly_manual_axes"])
  return list(fn(*invals))


def _eval_inline(param: str):
  def evaluate(eqn, invals, rule):
    closed = eqn.params[param]
    return list(_eval(closed.jaxpr, closed.consts, invals, rule))
  return evaluate


_HIGHER_ORDER = {
    "jit": _eval_inline("jaxpr"),
    "custom_jvp_call": _eval_inline("call_jaxpr"),
    "custom_vjp_call": _eval_inline("call_jaxpr"),
    "scan": _eval_scan,
    "while": _eval_while,
    "cond": _eval_cond,
    "remat2": _eval_remat,
    "checkpoint": _eval_remat,
    "shard_map": _eval_shard_map,
}


def _eval(jaxpr, consts: Sequence, args: Sequence, rule: Rule,
          facts: tuple = ()) -> list:
  env: dict = {}

  def read(v):
    return v.val if isinstance(v, jcore.Literal) else env[v]

  for v, val in zip(jaxpr.constvars, consts):
    env[v] = val
  for v, val in zip(jaxpr.invars, args):
    env[v] = val
  is_zero, update = _zero_tracker(facts, jaxpr.invars)
  for eqn in jaxpr.eqns:
    update(eqn)
    invals = [read(v) for v in eqn.invars]
    relu_x = _relu_operand(eqn, is_zero)
    inner = _call_facts(eqn, is_zero)
    if _is_relu_call(eqn):
      outs = [rule(invals[0])]
    elif (fast := fast_backward(eqn)) is not None:
      outs = [fast(*invals)]
    elif relu_x is not None:
      outs = [rule(read(relu_x))]
    elif inner and _relu_count(eqn.params["jaxpr"].jaxpr, inner):
      closed = eqn.params["jaxpr"]  # a jit whose ReLU shows only with what we know
      outs = list(_eval(closed.jaxpr, closed.consts, invals, rule, inner))
    elif any(_relu_count(sub) for sub in _sub_jaxprs(eqn)):
      handler = _HIGHER_ORDER.get(eqn.primitive.name)
      if handler is None:
        raise UnsupportedError(
            f"guided: the primitive {eqn.primitive.name!r} contains ReLUs, and "
            f"gradcam-jax does not know how to rewrite inside it. Supported "
            f"higher-order primitives: {sorted(_HIGHER_ORDER)}.")
      outs = handler(eqn, invals, rule)
    else:
      outs = _bind(eqn, invals)
    for v, val in zip(eqn.outvars, outs):
      if not isinstance(v, jcore.DropVar):
        env[v] = val
  return [read(v) for v in jaxpr.outvars]


def replace_relus(fn: Callable, rule: Rule, *, name: str = "guided",
                  require_relu: bool = True) -> Callable:
  """`fn` with every ReLU ``y = relu(x)`` replaced by ``y = rule(x)``.

  Raises :class:`NoReLUError` at trace time when `fn` contains no ReLU, unless
  `require_relu` is False.
  """

  @functools.wraps(fn)
  def rewritten(*args, **kwargs):
    closed, out_shape = jax.make_jaxpr(functools.partial(fn, **kwargs),
                                       return_shape=True)(*args)
    if require_relu and relu_count(closed) == 0:
      raise NoReLUError(
          f"{name}({getattr(fn, '__name__', fn)!r}) found no ReLU to replace. Expected "
          "jax.nn.relu / flax.linen.relu or jnp.maximum(x, 0) on floats somewhere in "
          "the function (also inside jit, remat, scan, cond, while or shard_map); "
          f"got a function of {len(closed.jaxpr.eqns)} top-level operations "
          f"({sorted({e.primitive.name for e in closed.jaxpr.eqns})[:12]}). "
          "jnp.where(x > 0, x, 0) and jnp.clip(x, 0) count; other activations (gelu, "
          "silu, leaky_relu) are not ReLUs. gcj.guided_report(fn, *args) shows what "
          "is replaced and what is left.")
    outs = _eval(closed.jaxpr, closed.consts, jax.tree_util.tree_leaves(args), rule)
    return jax.tree_util.tree_unflatten(jax.tree_util.tree_structure(out_shape), outs)

  return rewritten


def guided(fn: Callable, *, require_relu: bool = True) -> Callable:
  """Function transform: `fn` with every ReLU replaced by :func:`guided_relu`.

  The forward pass is bit-identical to `fn`; gradients of the result follow guided
  backpropagation. Positional arguments must be arrays (or pytrees of arrays);
  keyword arguments are treated as static and closed over.

  Args:
    fn: any JAX function, e.g. ``model.apply``.
    require_relu: raise when `fn` has no ReLU (default). With False, a ReLU-free
      `fn` keeps its values and its reverse-mode gradient (the plain gradient).

  Returns:
    A function with the signature of `fn`, for reverse mode (``jax.grad``,
    ``jax.vjp``): the guided ReLU and the faster max-pool and strided-convolution
    rules are ``jax.custom_vjp`` functions, so ``jax.jvp``/``jax.jacfwd`` of the
    result raise TypeError, also when no ReLU was replaced.

  Raises:
    NoReLUError: at trace time, when `fn` contains no ReLU (a rewrite that replaces
      nothing would silently return the plain gradient).

  Example:
    >>> import jax, jax.numpy as jnp, gradcam_jax as gcj
    >>> f = lambda x: jnp.sum(jax.nn.relu(x) * jnp.array([1.0, -1.0]))
    >>> jax.grad(f)(jnp.array([1.0, 1.0]))
    Array([ 1., -1.], dtype=float32)
    >>> jax.grad(gcj.guided(f))(jnp.array([1.0, 1.0]))
    Array([1., 0.], dtype=float32)
  """
  return replace_relus(fn, guided_relu, name="guided", require_relu=require_relu)
