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
their sections below).

The jaxpr APIs used here (``jax.extend``) carry no compatibility promise; the
project pins the JAX versions it is tested on.
"""

from __future__ import annotations

import functools
import itertools
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.extend import core as jcore

from gradcam_jax._errors import NoReLUError

__all__ = ["guided_relu", "guided", "relu_count"]


@jax.custom_vjp
def guided_relu(x):
  """ReLU whose backward pass is guided backpropagation (Springenberg et al. 2014).

  Forward: ``max(x, 0)``, bit-identical to ``jax.nn.relu``.
  Backward: ``g_in = g_out * [g_out > 0] * [x > 0]`` (strict at zero).

  Example:
    >>> import jax, jax.numpy as jnp
    >>> x = jnp.array([-1.0, 0.0, 2.0, 3.0])
    >>> _, vjp = jax.vjp(guided_relu, x)
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


def _is_float(aval) -> bool:
  return hasattr(aval, "dtype") and jnp.issubdtype(aval.dtype, jnp.floating)


def _relu_operand(eqn, is_zero: Callable[[Any], bool]):
  """The ``x`` of a ``max(x, 0)`` equation, or None if `eqn` is no such ReLU."""
  if eqn.primitive.name != "max" or len(eqn.invars) != 2:
    return None
  a, b = eqn.invars
  out = eqn.outvars[0].aval
  for x, z in ((a, b), (b, a)):
    if (is_zero(z) and not is_zero(x) and _is_float(x.aval)
        and x.aval.shape == out.shape and x.aval.dtype == out.dtype):
      return x
  return None


def _zero_tracker():
  zeros: set = set()

  def is_zero(atom) -> bool:
    return _literal_is_zero(atom) or (not isinstance(atom, jcore.Literal) and atom in zeros)

  def update(eqn) -> None:
    if (eqn.primitive.name in _ZERO_PASSTHROUGH and eqn.invars
        and all(is_zero(v) for v in eqn.invars)):
      zeros.update(eqn.outvars)

  return is_zero, update


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
def _relu_count(jaxpr) -> int:
  is_zero, update = _zero_tracker()
  count = 0
  for eqn in jaxpr.eqns:
    update(eqn)
    if _is_relu_call(eqn) or _relu_operand(eqn, is_zero) is not None:
      count += 1
    else:
      count += sum(_relu_count(sub) for sub in _sub_jaxprs(eqn))
  return count


# ----------------------------------------------------------------------------------
# Max pooling with a faster backward pass.
#
# XLA's CPU backend differentiates a max pool with ``select_and_scatter``, which runs
# 7-12x slower than the pool itself (RESULTS.md, "make it fast"); in guided backprop,
# whose backward pass crosses every pool of the network, that was a third of VGG16's
# time. The rewrite below keeps the forward primitive and routes the cotangent with
# strided slices and pads that XLA fuses: the same routing (each window's cotangent goes
# to its first maximal element, as select_and_scatter with ``>=`` does), so the result
# equals XLA's up to the order in which overlapping windows add.


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
    dxp = dxp + lax.pad(jnp.where(hit, g, zero), zero,
                        [(o, size - end, s - 1)
                         for o, end, size, s in zip(offset, span, xp.shape, strides)])
  return lax.slice(dxp, [lo for lo, _ in padding],
                   [size - hi for size, (_, hi) in zip(xp.shape, padding)])


def _is_plain_max_pool(eqn) -> bool:
  p = eqn.params
  return (eqn.primitive.name == "reduce_window_max" and _is_float(eqn.invars[0].aval)
          and all(d == 1 for d in (*p["base_dilation"], *p["window_dilation"]))
          and all(lo >= 0 and hi >= 0 for lo, hi in p["padding"]))


def _max_pool(eqn) -> Callable:
  """The pool of `eqn` (forward bit-identical) with the fused backward pass."""
  p = eqn.params

  @jax.custom_vjp
  def pool(x):
    return _bind(eqn, [x])[0]

  def pool_fwd(x):
    y = _bind(eqn, [x])[0]
    return y, (x, y)

  def pool_bwd(res, g):
    return (_max_pool_transpose(*res, g, p["window_dimensions"], p["window_strides"],
                                p["padding"]),)

  pool.defvjp(pool_fwd, pool_bwd)
  return pool


# ----------------------------------------------------------------------------------
# Strided convolutions with a faster input gradient.
#
# XLA differentiates a stride-s convolution with respect to its input as a convolution
# over the cotangent dilated with s-1 zeros between elements: s*s times the work, and
# off the CPU backend's fast path (4-5x the forward's time for ResNet-50's 7x7 stem and
# 3x3 stride-2 convolutions). Split by output phase instead: the input positions
# congruent to (a, b) modulo the strides receive only the kernel taps w[a::s, b::s], so
# each phase is a stride-1 convolution of the undilated cotangent with that flipped
# sub-kernel, and the phases interleave into the input gradient.

_NHWC_HWIO = ((0, 3, 1, 2), (3, 2, 0, 1), (0, 3, 1, 2))


def _conv_input_transpose(g, w, x_shape, strides, padding, precision):
  """The cotangent of x for ``y = conv(x, w)`` (NHWC/HWIO, no dilation, one group)."""
  n, h, wd, c = x_shape
  (sh, sw), ((plh, phh), (plw, phw)) = strides, padding
  rows, cols = -(-(h + plh + phh) // sh), -(-(wd + plw + phw) // sw)
  ho, wo = g.shape[1:3]
  phases = []
  for a in range(sh):
    row = []
    for b in range(sw):
      sub = w[a::sh, b::sw]
      qa, qb = sub.shape[:2]
      if qa == 0 or qb == 0:  # kernel smaller than the stride: no tap reaches here
        row.append(jnp.zeros((n, rows, cols, c), g.dtype))
        continue
      kernel = jnp.flip(sub, (0, 1)).transpose(0, 1, 3, 2)
      row.append(lax.conv_general_dilated(
          g, kernel, (1, 1), [(qa - 1, rows - ho), (qb - 1, cols - wo)],
          dimension_numbers=("NHWC", "HWIO", "NHWC"), precision=precision))
    phases.append(jnp.stack(row, 3))            # (n, rows, cols, sw, c)
  full = jnp.stack(phases, 2).reshape(n, rows * sh, cols * sw, c)
  return full[:, plh:plh + h, plw:plw + wd]


def _is_strided_conv(eqn) -> bool:
  if eqn.primitive.name != "conv_general_dilated":
    return False
  p = eqn.params
  dn = p["dimension_numbers"]
  return (len(eqn.invars[0].aval.shape) == 4 and _is_float(eqn.invars[0].aval)
          and (dn.lhs_spec, dn.rhs_spec, dn.out_spec) == _NHWC_HWIO
          and max(p["window_strides"]) > 1
          and p["lhs_dilation"] == (1, 1) and p["rhs_dilation"] == (1, 1)
          and p["feature_group_count"] == 1 and p["batch_group_count"] == 1
          and p.get("preferred_element_type") is None
          and not isinstance(p["padding"], str)
          and all(lo >= 0 and hi >= 0 for lo, hi in p["padding"]))


def _strided_conv(eqn) -> Callable:
  """The convolution of `eqn` (forward bit-identical) with the phase-split input
  gradient; the kernel's gradient keeps XLA's rule."""
  p = eqn.params

  @jax.custom_vjp
  def conv(x, w):
    return _bind(eqn, [x, w])[0]

  def conv_fwd(x, w):
    return _bind(eqn, [x, w])[0], (x, w)

  def conv_bwd(res, g):
    x, w = res
    dx = _conv_input_transpose(g, w, x.shape, p["window_strides"], p["padding"],
                               p["precision"])
    dw = jax.vjp(lambda w: _bind(eqn, [x, w])[0], w)[1](g)[0]
    return dx.astype(x.dtype), dw

  conv.defvjp(conv_fwd, conv_bwd)
  return conv


# ----------------------------------------------------------------------------------
# Re-evaluating a jaxpr with a replacement for every ReLU.

Rule = Callable[[jax.Array], jax.Array]


def _bind(eqn, invals):
  """Evaluate `eqn` unchanged, as ``jax.core.eval_jaxpr`` does."""
  params = eqn.primitive.get_bind_params(eqn.params)
  with eqn.ctx.manager:
    out = eqn.primitive.bind(*invals, **params)
  return out if eqn.primitive.multiple_results else [out]


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


def _eval(jaxpr, consts: Sequence, args: Sequence, rule: Rule) -> list:
  env: dict = {}

  def read(v):
    return v.val if isinstance(v, jcore.Literal) else env[v]

  for v, val in zip(jaxpr.constvars, consts):
    env[v] = val
  for v, val in zip(jaxpr.invars, args):
    env[v] = val
  is_zero, update = _zero_tracker()
  for eqn in jaxpr.eqns:
    update(eqn)
    invals = [read(v) for v in eqn.invars]
    relu_x = _relu_operand(eqn, is_zero)
    if _is_relu_call(eqn):
      outs = [rule(invals[0])]
    elif _is_plain_max_pool(eqn):
      outs = [_max_pool(eqn)(invals[0])]
    elif _is_strided_conv(eqn):
      outs = [_strided_conv(eqn)(*invals)]
    elif relu_x is not None:
      outs = [rule(read(relu_x))]
    elif any(_relu_count(sub) for sub in _sub_jaxprs(eqn)):
      handler = _HIGHER_ORDER.get(eqn.primitive.name)
      if handler is None:
        raise NotImplementedError(
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
          "Other activations (gelu, silu, leaky_relu, relu6) are not ReLUs.")
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
      `fn` is returned unchanged in effect: its gradient is the plain gradient.

  Returns:
    A function with the signature of `fn`.

  Raises:
    NoReLUError: at trace time, when `fn` contains no ReLU (a rewrite that replaces
      nothing would silently return the plain gradient).

  Example:
    >>> import jax, jax.numpy as jnp
    >>> f = lambda x: jnp.sum(jax.nn.relu(x) * jnp.array([1.0, -1.0]))
    >>> jax.grad(f)(jnp.array([1.0, 1.0]))
    Array([ 1., -1.], dtype=float32)
    >>> jax.grad(guided(f))(jnp.array([1.0, 1.0]))
    Array([1., 0.], dtype=float32)
  """
  return replace_relus(fn, guided_relu, name="guided", require_relu=require_relu)
