"""The `guided(fn)` function transform.

`guided(fn)` is the JAX analogue of TensorFlow's ``gradient_override_map``: it traces
`fn` to a jaxpr and evaluates that jaxpr again with every ReLU replaced by
:func:`guided_relu`. The forward values are bit-identical (the guided ReLU computes
``max(x, 0)`` exactly as ``jax.nn.relu`` does); only the backward rule changes. The
user's function and model are never touched.

The ReLUs it recognises are listed in ``relus.py`` (where :func:`guided_relu` and
:func:`guided_report` live too). They are found inside nested ``jit``,
``remat``/``checkpoint``, ``scan``, ``cond``, ``while`` and ``shard_map``. A
custom-derivative function (``custom_jvp``/``custom_vjp``) that contains ReLUs is
evaluated through its body, so its own derivative rule is replaced by the guided
derivative of that body. Other higher-order primitives that contain ReLUs raise
``NotImplementedError`` rather than silently skip them, and a function with no ReLU
at all raises :class:`NoReLUError`.

While re-evaluating, max pools and strided NHWC convolutions get faster backward
rules than XLA's CPU defaults (same forward, same gradient up to summation order; see
``fast_vjp.py``).

The jaxpr APIs used here (``jax.extend``) carry no compatibility promise; the
project pins the JAX versions it is tested on.
"""

from __future__ import annotations

import functools
from typing import Callable, Sequence

import jax
from jax import lax
from jax.extend import core as jcore

from gradcam_jax._errors import NoReLUError, UnsupportedError
from gradcam_jax._guided.fast_vjp import bind as _bind, fast_backward
from gradcam_jax._guided.relus import (
  _sub_jaxprs,
  _Tracker,
  guided_relu,
  inner_facts,
  relu_form,
)
from gradcam_jax._guided.report import _relu_count, relu_count

__all__ = ["guided", "replace_relus"]


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
  consts, init, xs = invals[:nc], invals[nc : nc + ncarry], invals[nc + ncarry :]
  body = _closed_fn(p["jaxpr"], rule)

  def step(carry, x):
    out = body(*consts, *carry, *x)
    return list(out[:ncarry]), list(out[ncarry:])

  carry, ys = lax.scan(
    step, list(init), list(xs), length=p["length"], reverse=p["reverse"], unroll=p["unroll"]
  )
  return [*carry, *ys]


def _eval_while(eqn, invals, rule):
  p = eqn.params
  cn, bn = p["cond_nconsts"], p["body_nconsts"]
  cconsts, bconsts, init = invals[:cn], invals[cn : cn + bn], invals[cn + bn :]
  cond = _closed_fn(p["cond_jaxpr"], rule)
  body = _closed_fn(p["body_jaxpr"], rule)
  return list(
    lax.while_loop(
      lambda c: cond(*cconsts, *c)[0], lambda c: list(body(*bconsts, *c)), list(init)
    )
  )


def _eval_cond(eqn, invals, rule):
  index, *ops = invals
  branches = [
    (lambda f: lambda *a: list(f(*a)))(_closed_fn(b, rule)) for b in eqn.params["branches"]
  ]
  return list(lax.switch(index, branches, *ops))


def _eval_remat(eqn, invals, rule):
  p = eqn.params
  fn = jax.checkpoint(
    _open_fn(p["jaxpr"], rule), prevent_cse=p["prevent_cse"], policy=p["policy"]
  )
  return list(fn(*invals))


def _eval_shard_map(eqn, invals, rule):
  p = eqn.params
  fn = jax.shard_map(
    lambda *a: list(_open_fn(p["jaxpr"], rule)(*a)),
    mesh=p["mesh"],
    in_specs=p["in_specs"],
    out_specs=list(p["out_specs"]),
    check_vma=p["check_vma"],
    axis_names=p.get("newly_manual_axes", p.get("manual_axes")),  # jax 0.9: manual_axes
  )
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


def _inlined_body(eqn):
  """The closed body of a ``jit`` or custom-derivative call, which the rewrite
  evaluates inline (a custom rule is replaced by the guided derivative of its body),
  or None."""
  key = {"jit": "jaxpr", "custom_jvp_call": "call_jaxpr", "custom_vjp_call": "call_jaxpr"}
  name = key.get(eqn.primitive.name)
  return None if name is None or not _sub_jaxprs(eqn) else eqn.params[name]


def _eval(jaxpr, consts: Sequence, args: Sequence, rule: Rule, facts: tuple = ()) -> list:
  env: dict = {}

  def read(v):
    return v.val if isinstance(v, jcore.Literal) else env[v]

  for v, val in zip(jaxpr.constvars, consts):
    env[v] = val
  for v, val in zip(jaxpr.invars, args):
    env[v] = val
  tracker = _Tracker(facts, jaxpr.invars)
  for eqn in jaxpr.eqns:
    tracker.update(eqn)
    invals = [read(v) for v in eqn.invars]
    relu_x, activation = relu_form(eqn, tracker)
    body = _inlined_body(eqn)
    if activation:
      outs = [rule(read(relu_x))]
    elif (fast := fast_backward(eqn)) is not None:
      outs = [fast(*invals)]
    elif body is not None:  # a call: its body, with what is known of its inputs
      inner = inner_facts(eqn, tracker)
      if _relu_count(body.jaxpr, inner):
        outs = list(_eval(body.jaxpr, body.consts, invals, rule, inner))
      else:
        outs = _bind(eqn, invals)
    elif any(_relu_count(sub) for sub in _sub_jaxprs(eqn)):
      handler = _HIGHER_ORDER.get(eqn.primitive.name)
      if handler is None:
        raise UnsupportedError(
          f"guided: the primitive {eqn.primitive.name!r} contains ReLUs, and "
          f"gradcam-jax does not know how to rewrite inside it. Supported "
          f"higher-order primitives: {sorted(_HIGHER_ORDER)}."
        )
      outs = handler(eqn, invals, rule)
    else:
      outs = _bind(eqn, invals)
    env.update(zip(eqn.outvars, outs))  # a dropped output is never read
  return [read(v) for v in jaxpr.outvars]


def replace_relus(
  fn: Callable, rule: Rule, *, name: str = "guided", require_relu: bool = True
) -> Callable:
  """`fn` with every ReLU ``y = relu(x)`` replaced by ``y = rule(x)``.

  Raises :class:`NoReLUError` at trace time when `fn` contains no ReLU, unless
  `require_relu` is False.
  """

  @functools.wraps(fn)
  def rewritten(*args, **kwargs):
    closed, out_shape = jax.make_jaxpr(functools.partial(fn, **kwargs), return_shape=True)(
      *args
    )
    if require_relu and relu_count(closed) == 0:
      raise NoReLUError(
        f"{name}({getattr(fn, '__name__', None) or repr(fn)}) found no ReLU "
        "activation to replace. Expected jax.nn.relu / flax.linen.relu or "
        "jnp.maximum(x, 0) on floats somewhere in the function (also inside jit, "
        "remat, scan, cond, while or shard_map); "
        f"got a function of {len(closed.jaxpr.eqns)} top-level operations "
        f"({sorted({e.primitive.name for e in closed.jaxpr.eqns})[:12]}). "
        "jnp.where(x > 0, x, 0) and jnp.clip(x, 0) count; other activations (gelu, "
        "silu, leaky_relu) are not ReLUs, and neither are relu6 and the clamps of "
        "statistics (a normalisation's variance). gcj.guided_report(fn, *args) shows "
        "what is replaced and what is left, and why."
      )
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
