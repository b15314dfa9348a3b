"""Faster backward rules than XLA's CPU defaults, for operations that guided backprop
differentiates through: max pools and strided convolutions, of any spatial rank.

:func:`fast_backward` looks at one jaxpr equation and returns a drop-in function for it
(forward bit-identical: it binds the same primitive) whose ``custom_vjp`` gives the same
gradient as XLA's rule up to the order of floating-point sums, or None. `guided` applies
it while re-evaluating a jaxpr.
"""

from __future__ import annotations

import itertools
import math
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

__all__ = ["bind", "fast_backward"]


def bind(eqn, invals):
  """Evaluate `eqn` unchanged, as ``jax.core.eval_jaxpr`` does."""
  params = eqn.primitive.get_bind_params(eqn.params)
  if isinstance(params, tuple):  # jax < 0.9: (subfuns, params)
    subfuns, params = params
    invals = [*subfuns, *invals]
  with eqn.ctx.manager:
    out = eqn.primitive.bind(*invals, **params)
  return out if eqn.primitive.multiple_results else [out]


def is_float(aval) -> bool:
  """Whether `aval` (an abstract value or array) has a floating dtype."""
  return hasattr(aval, "dtype") and jnp.issubdtype(aval.dtype, jnp.floating)


def fast_backward(eqn) -> Callable | None:
  """A replacement for `eqn` with a faster backward pass, or None if there is none."""
  if _is_plain_max_pool(eqn):
    return _max_pool(eqn)
  if _is_strided_conv(eqn):
    return _strided_conv(eqn)
  return None


# ----------------------------------------------------------------------------------
# Max pooling with a faster backward pass.
#
# XLA's CPU backend differentiates a max pool with ``select_and_scatter``, which runs
# 7-12x slower than the pool itself (benchmarks/HISTORY.md, "make it fast"); in guided backprop,
# whose backward pass crosses every pool of the network, replacing it cut VGG16's
# time by a quarter. The rewrite below keeps the forward primitive and routes the
# cotangent with strided slices and pads that XLA fuses: the same routing (each
# window's cotangent goes to its first maximal element, as select_and_scatter with
# ``>=`` does), so the result equals XLA's up to the order in which overlapping
# windows add.


def _max_pool_transpose(x, y, g, window, strides, padding):
  """The cotangent of ``x`` for ``y = reduce_window_max(x)`` and cotangent ``g``."""
  xp = lax.pad(x, jnp.array(-jnp.inf, x.dtype), [(lo, hi, 0) for lo, hi in padding])
  zero = jnp.zeros((), g.dtype)
  taken = jnp.zeros(y.shape, bool)
  dxp = jnp.zeros(xp.shape, g.dtype)
  for offset in itertools.product(*(range(w) for w in window)):
    span = [o + (n - 1) * s + 1 for o, n, s in zip(offset, y.shape, strides)]
    candidate = lax.slice(xp, offset, span, strides)
    hit = (candidate == y) & ~taken  # the first maximum in window order
    taken = taken | hit
    dxp = dxp + lax.pad(
      jnp.where(hit, g, zero),
      zero,
      [(o, size - end, s - 1) for o, end, size, s in zip(offset, span, xp.shape, strides)],
    )
  return lax.slice(
    dxp, [lo for lo, _ in padding], [size - hi for size, (_, hi) in zip(xp.shape, padding)]
  )


def _is_plain_max_pool(eqn) -> bool:
  p = eqn.params
  return (
    eqn.primitive.name == "reduce_window_max"
    and is_float(eqn.invars[0].aval)
    and all(d == 1 for d in (*p["base_dilation"], *p["window_dilation"]))
    and all(lo >= 0 and hi >= 0 for lo, hi in p["padding"])
  )


def _max_pool(eqn) -> Callable:
  """The pool of `eqn` (forward bit-identical) with the fused backward pass."""
  p = eqn.params

  @jax.custom_vjp
  def pool(x):
    return bind(eqn, [x])[0]

  def pool_fwd(x):
    y = bind(eqn, [x])[0]
    return y, (x, y)

  def pool_bwd(res, g):
    return (
      _max_pool_transpose(
        *res, g, p["window_dimensions"], p["window_strides"], p["padding"]
      ),
    )

  pool.defvjp(pool_fwd, pool_bwd)
  return pool


# ----------------------------------------------------------------------------------
# Strided convolutions with a faster input gradient.
#
# XLA differentiates a stride-s convolution with respect to its input as a convolution
# over the cotangent dilated with s-1 zeros between elements: s*s times the work, and
# off the CPU backend's fast path (4-5x the forward's time for ResNet-50's 7x7 stem and
# 3x3 stride-2 convolutions; in 3-D far worse: 200x for a 7x7x7 stride-2 stem on 64^3
# volumes, benchmarks/HISTORY.md "Volumes"). Split by output phase instead: the input
# positions congruent to (a, b) modulo the strides receive only the kernel taps
# w[a::s, b::s], so each phase is a stride-1 convolution of the undilated cotangent
# with that flipped sub-kernel, and the phases interleave into the input gradient.
# The same holds along every spatial axis, so the rule covers 1-D, 2-D and 3-D
# convolutions of any dimension numbers (moved to channels last for the phases).


_MERGE_BELOW = 16  # input channels under which the phases share one convolution


def _conv_input_transpose(g, w, x_shape, strides, padding, precision):
  """The cotangent of x for ``y = conv(x, w)``: x (N, *S, C) channels last, w
  (*K, I, O), any spatial rank, no dilation, one group.

  Each phase is a stride-1 convolution of the cotangent with its flipped sub-kernel;
  phases no tap reaches (a 1x1 stride-2 shortcut's three of four) are zeros. When the
  input has few channels (a stem's 1 to 3), per-phase convolutions are narrow GEMMs:
  the sub-kernels are then zero-padded at their start to one tap count (a zero tap
  adds an exact zero) and stacked on the output channels, so one convolution computes
  every phase; otherwise each phase runs with its exact taps (padding them would
  multiply a 3x3x3 stride-2 kernel's work by 64/27)."""
  rank = len(strides)
  n, c = x_shape[0], x_shape[-1]
  spatial = x_shape[1:-1]
  rows = [
    -(-(size + lo + hi) // st) for size, (lo, hi), st in zip(spatial, padding, strides)
  ]
  outs = g.shape[1:-1]
  merge = c < _MERGE_BELOW
  taps = [-(-k // st) for k, st in zip(w.shape[:rank], strides)]  # the most per phase
  letters = "DHW"[3 - rank :]

  def conv(kernel):  # (*q, O, C') -> (n, *rows, C')
    q = kernel.shape[:rank]
    return lax.conv_general_dilated(
      g,
      kernel,
      (1,) * rank,
      [(k - 1, r - o) for k, r, o in zip(q, rows, outs)],
      dimension_numbers=(f"N{letters}C", f"{letters}IO", f"N{letters}C"),
      precision=precision,
    )

  kernels = {}  # phase index -> its flipped sub-kernel (*taps, O, C); none if no tap
  for i, phase in enumerate(itertools.product(*(range(st) for st in strides))):
    sub = w[tuple(slice(a, None, st) for a, st in zip(phase, strides))]
    if 0 in sub.shape[:rank]:  # kernel smaller than the stride: no tap reaches here
      continue
    sub = jnp.swapaxes(jnp.flip(sub, tuple(range(rank))), -1, -2)
    lead = [(q - sub.shape[d], 0) for d, q in enumerate(taps)] if merge else []
    kernels[i] = jnp.pad(sub, [*lead, (0, 0), (0, 0)]) if merge else sub
  if merge:  # (n, *rows, len(kernels) * c), one convolution
    merged = conv(jnp.concatenate(list(kernels.values()), -1))
    parts = dict(zip(kernels, jnp.split(merged, len(kernels), axis=-1)))
  else:
    parts = {i: conv(k) for i, k in kernels.items()}
  zeros = jnp.zeros((n, *rows, c), g.dtype)
  phases = jnp.stack([parts.get(i, zeros) for i in range(math.prod(strides))], -2)
  # (n, *rows, *strides, c) -> (n, rows_1, s_1, ..., rows_k, s_k, c) -> interleaved
  stacked = phases.reshape(n, *rows, *strides, c)
  order = [0] + [i for d in range(rank) for i in (1 + d, 1 + rank + d)] + [1 + 2 * rank]
  full = stacked.transpose(order).reshape(n, *[r * st for r, st in zip(rows, strides)], c)
  return full[
    (slice(None), *[slice(lo, lo + size) for (lo, _), size in zip(padding, spatial)])
  ]


def _last_perms(dn) -> tuple[tuple, tuple, tuple]:
  """Permutations taking x, w and y of dimension numbers `dn` to channels last:
  x (N, *S, C), w (*K, I, O), y (N, *S, O)."""
  lhs, rhs, out = dn.lhs_spec, dn.rhs_spec, dn.out_spec
  return (
    (lhs[0], *lhs[2:], lhs[1]),
    (*rhs[2:], rhs[1], rhs[0]),
    (out[0], *out[2:], out[1]),
  )


def _is_strided_conv(eqn) -> bool:
  if eqn.primitive.name != "conv_general_dilated":
    return False
  p = eqn.params
  rank = len(eqn.invars[0].aval.shape) - 2
  return (
    1 <= rank <= 3
    and is_float(eqn.invars[0].aval)
    and max(p["window_strides"]) > 1
    and all(d == 1 for d in p["lhs_dilation"])
    and all(d == 1 for d in p["rhs_dilation"])
    and p["feature_group_count"] == 1
    and p["batch_group_count"] == 1
    and p.get("preferred_element_type") is None
    and not isinstance(p["padding"], str)
    and all(lo >= 0 and hi >= 0 for lo, hi in p["padding"])
  )


def _strided_conv(eqn) -> Callable:
  """The convolution of `eqn` (forward bit-identical) with the phase-split input
  gradient; the kernel's gradient keeps XLA's rule."""
  p = eqn.params

  @jax.custom_vjp
  def conv(x, w):
    return bind(eqn, [x, w])[0]

  def conv_fwd(x, w):
    return bind(eqn, [x, w])[0], (x, w)

  def conv_bwd(res, g):
    x, w = res
    px, pw, py = _last_perms(p["dimension_numbers"])
    dx = _conv_input_transpose(
      g.transpose(py),
      w.transpose(pw),
      tuple(x.shape[i] for i in px),
      p["window_strides"],
      p["padding"],
      p["precision"],
    )
    dw = jax.vjp(lambda w: bind(eqn, [x, w])[0], w)[1](g)[0]
    return dx.transpose(np.argsort(px)).astype(x.dtype), dw

  conv.defvjp(conv_fwd, conv_bwd)
  return conv
