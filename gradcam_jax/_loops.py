"""Edits at one iteration of a loop over a stack of layers (``nnx.scan``, linen
``nn.scan``, ``jax.lax.scan``).

A loop body is traced once for every iteration, so an adapter cannot edit "the
activation of block 5" while the model runs: its hook sees one activation that stands
for all of them. Instead the hook leaves a mark there (:func:`mark`: an identity that
carries the wanted iterations and their edits), the model is traced to a jaxpr, and
:func:`run` evaluates that jaxpr again with every marked ``scan`` split at the wanted
iterations: a scan over the iterations before, the body once with the edit, a scan
over the iterations after. Values and gradients are those of the model with the edit
at that iteration only; the model itself is never changed.
"""

from __future__ import annotations

import functools
from typing import Callable, Sequence

import jax
from jax import lax
from jax.extend import core as jcore
import jax.numpy as jnp

from gradcam_jax._edits import Edit
from gradcam_jax._errors import LayerNotFoundError, UnsupportedError
from gradcam_jax._guided.fast_vjp import bind

__all__ = ["LoopEdit", "mark", "run"]


class LoopEdit(Exception):
  """Raised by an adapter's hook that meets a wanted layer inside a loop while the
  model runs directly: the run starts again through :func:`run`."""


_mark_p = jcore.Primitive("gradcam_jax_loop_edit")
_mark_p.def_impl(lambda out, *operands, edits, name: out)
_mark_p.def_abstract_eval(lambda out, *operands, edits, name: out)


def mark(out, edits: Sequence[tuple[int, Edit]], name: str):
  """`out` unchanged, marked to receive ``edit`` at each ``(iteration, edit)`` of
  `edits` when :func:`run` evaluates the loop around it (`name` names the layer in
  errors)."""
  operands, spec = [], []
  for iteration, edit in edits:
    spec.append((iteration, edit.fn, len(edit.operands)))
    operands.extend(edit.operands)
  return _mark_p.bind(out, *operands, edits=tuple(spec), name=name)


def _subs(eqn) -> list:
  subs = []
  for value in eqn.params.values():
    for item in value if isinstance(value, (tuple, list)) else (value,):
      if isinstance(item, jcore.ClosedJaxpr):
        subs.append(item)
      elif isinstance(item, jcore.Jaxpr):
        subs.append(jcore.ClosedJaxpr(item, ()))
  return subs


@functools.lru_cache(maxsize=256)
def _marks(jaxpr) -> tuple:
  """The marks in `jaxpr` and every jaxpr inside it: ``(name, iteration)`` pairs."""
  found: list = []
  for eqn in jaxpr.eqns:
    if eqn.primitive is _mark_p:
      found.extend((eqn.params["name"], k) for k, _, _ in eqn.params["edits"])
    for sub in _subs(eqn):
      found.extend(_marks(sub.jaxpr))
  return tuple(found)


def _apply_mark(eqn, invals, iteration, applied: list):
  out, *operands = invals
  name = eqn.params["name"]
  if iteration is None:  # -1 stands for an iteration that is not edited
    raise UnsupportedError(
      f"layer {name!r}: marked as inside a loop, but it ran outside any jax.lax.scan "
      "(a loop written with while_loop, fori_loop with a traced bound, or a Python "
      "loop). Only scans over a stack of layers are explained per iteration."
    )
  start = 0
  for k, fn, n in eqn.params["edits"]:
    if k == iteration:
      out = fn(out, *operands[start : start + n])
      applied.append((name, k))
    start += n
  return [out]


def _scan(eqn, invals, applied: list):
  """A marked scan, split at each iteration a mark wants."""
  p = eqn.params
  names = sorted({name for name, _ in _marks(p["jaxpr"].jaxpr)})
  if p["reverse"]:
    raise UnsupportedError(
      f"layer(s) {names}: inside a reversed scan; gradcam-jax explains iterations of "
      "forward scans only."
    )
  nc, ncarry, length = p["num_consts"], p["num_carry"], p["length"]
  consts, carry, xs = invals[:nc], list(invals[nc : nc + ncarry]), invals[nc + ncarry :]
  wanted = sorted({k for _, k in _marks(p["jaxpr"].jaxpr)})
  if wanted[-1] >= length:
    raise LayerNotFoundError(
      f"layer(s) {names}: iteration {wanted[-1]} requested, but the scan runs "
      f"{length} iteration(s); valid indices: 0..{length - 1}."
    )
  body = p["jaxpr"]

  def step(iteration):
    def f(carry, x):
      out = _eval(body.jaxpr, body.consts, [*consts, *carry, *x], iteration, applied)
      return list(out[:ncarry]), list(out[ncarry:])

    return f

  pieces: list = []
  lo = 0
  for k in [*wanted, length]:
    if k > lo:  # the plain iterations lo..k-1
      part = [lax.slice_in_dim(x, lo, k, axis=0) for x in xs]
      carry, ys = lax.scan(step(-1), carry, part, length=k - lo, unroll=p["unroll"])
      pieces.append(ys)
    if k < length:  # iteration k, edited
      carry, ys = step(k)(carry, [x[k] for x in xs])
      pieces.append([y[None] for y in ys])
    lo = k + 1
  ys = [jnp.concatenate(parts, axis=0) for parts in zip(*pieces)]
  return [*carry, *ys]


def _eval(jaxpr, consts, args, iteration, applied: list) -> list:
  env: dict = {}

  def read(v):
    return v.val if isinstance(v, jcore.Literal) else env[v]

  env.update(zip(jaxpr.constvars, consts))
  env.update(zip(jaxpr.invars, args))
  for eqn in jaxpr.eqns:
    invals = [read(v) for v in eqn.invars]
    marked = [s for s in _subs(eqn) if _marks(s.jaxpr)]
    if eqn.primitive is _mark_p:
      outs = _apply_mark(eqn, invals, iteration, applied)
    elif not marked:
      outs = bind(eqn, invals)
    elif eqn.primitive.name == "scan" and iteration is None:
      outs = _scan(eqn, invals, applied)
    elif eqn.primitive.name in _INLINE and len(marked) == 1:
      # a call around the loop (jit, a custom derivative, remat): its body, inline
      outs = _eval(marked[0].jaxpr, marked[0].consts, invals, iteration, applied)
    else:
      names = sorted({name for s in marked for name, _ in _marks(s.jaxpr)})
      raise UnsupportedError(
        f"layer(s) {names}: inside {eqn.primitive.name!r}"
        + (" within a scan's iteration" if iteration is not None else "")
        + "; gradcam-jax explains iterations of a scan over a stack of layers, not "
        "of nested scans, while loops or conditionals."
      )
    env.update(zip(eqn.outvars, outs))  # a dropped output is never read
  return [read(v) for v in jaxpr.outvars]


_INLINE = {
  "jit",
  "pjit",
  "closed_call",
  "custom_jvp_call",
  "custom_vjp_call",
  "remat2",
  "checkpoint",
}


def run(fn: Callable, *args):
  """``fn(*args)`` with the edits its marks carry applied at their iterations.

  Raises ModelError-like errors of the loop's own making: an iteration past the end
  (LayerNotFoundError), a mark inside a loop it cannot split (UnsupportedError).
  """
  closed, shape = jax.make_jaxpr(fn, return_shape=True)(*args)
  applied: list = []
  outs = _eval(closed.jaxpr, closed.consts, jax.tree_util.tree_leaves(args), None, applied)
  wanted = sorted(_marks(closed.jaxpr))
  if sorted(applied) != wanted:
    raise UnsupportedError(
      f"edits inside a loop: applied {sorted(applied)}, wanted {wanted}; the loop "
      "was traced more than once or its body is not a single scan."
    )
  return jax.tree_util.tree_unflatten(jax.tree_util.tree_structure(shape), outs)
