"""Methods that read the model after the layer: the original CAM (Zhou et al.
2016), the classifier's own weights on globally pooled features,
``CAM_c = sum_k W_kc A_k``; and ShapleyCAM, which needs the head's second derivative.

The weights are found from the model itself, whatever framework it is written in:
the program of the model after the layer (a jaxpr) must reduce the activation over
every spatial axis first (a global average or sum pool; transposes and casts before
it are allowed), and be affine from there on (one dense layer, a bias, a scale, the
target's selection). Then the target score is ``W_t . pooled + b`` and ``W_t`` is its
gradient with respect to the pooled features, computed in the same program. Any
other head is a :class:`MethodError` naming the operation that breaks the pattern.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from jax.extend import core as jcore

from gradcam_jax._errors import MethodError

__all__ = ["cam", "cam_weights", "shapleycam"]

# Operations through which the activation may pass before it is pooled (its axes
# permuted or its dtype changed, nothing mixed).
_LAYOUT = {"transpose", "convert_element_type", "copy", "copy_p"}
# Operations affine in each derived operand (given which operands are derived).
_LINEAR = {
  "add",
  "sub",
  "neg",
  "dot_general",
  "reshape",
  "broadcast_in_dim",
  "squeeze",
  "expand_dims",
  "transpose",
  "convert_element_type",
  "copy",
  "copy_p",
  "reduce_sum",
  "gather",
  "dynamic_slice",
  "slice",
  "concatenate",
  "select_n",
  "pad",
  "mul",
  "div",
  "add_any",
  "reduce_precision",
  "sharding_constraint",
  "pcast",
}
_SUB_JAXPR = ("jaxpr", "call_jaxpr", "fun_jaxpr")
# Operations that may only add or drop unit axes before the pool (a batched model
# picks each example's activation by a gather, then squeezes: Equinox under vmap).
_RESHAPING = {
  "gather",
  "dynamic_slice",
  "squeeze",
  "broadcast_in_dim",
  "reshape",
  "expand_dims",
}


def _shape(var) -> tuple:
  return tuple(getattr(var.aval, "shape", ()))


def _non_unit(axes, shape) -> set:
  return {a for a in axes if shape[a] != 1}


def _kept_axes(before, after, axes):
  """Where `axes` of an array of shape `before` are in one of shape `after` that holds
  the same non-unit axes in the same order (None if it does not)."""
  old = [i for i, n in enumerate(before) if n != 1]
  new = [j for j, n in enumerate(after) if n != 1]
  if [before[i] for i in old] != [after[j] for j in new]:
    return None
  where = dict(zip(old, new))
  return tuple(where[a] for a in axes if a in where)


_WHY = (
  "method 'cam' (the original CAM) needs the model after the layer to be a global "
  "average pool and one dense layer, whose weights it uses"
)


def _sub(eqn):
  for name in _SUB_JAXPR:
    sub = eqn.params.get(name)
    if sub is not None:
      return sub.jaxpr if hasattr(sub, "jaxpr") else sub
  return None


def _walk(jaxpr, tracked: dict, derived: set, pooled: list) -> None:
  """Follow the activation through `jaxpr`: `tracked` maps the vars that still hold
  it (not pooled) to their spatial axes; `derived` holds the vars that depend on it
  after pooling. Raises MethodError where the pattern breaks."""
  for eqn in jaxpr.eqns:
    ins = [v for v in eqn.invars if isinstance(v, jcore.Var)]
    hits = [v for v in ins if v in tracked]
    uses = [v for v in ins if v in derived]
    if not hits and not uses:
      continue
    name = eqn.primitive.name
    sub = _sub(eqn)
    if sub is not None:  # a nested program (jit, custom rules): follow inside it
      inner_tracked = {
        s: tracked[v] for s, v in zip(sub.invars, eqn.invars) if v in tracked
      }
      inner_derived = {s for s, v in zip(sub.invars, eqn.invars) if v in derived}
      _walk(sub, inner_tracked, inner_derived, pooled)
      for out, s in zip(eqn.outvars, sub.outvars):
        if s in inner_tracked:
          tracked[out] = inner_tracked[s]
        elif s in inner_derived:
          derived.add(out)
      continue
    if hits:
      axes = tracked[hits[0]]
      if name in _LAYOUT:
        perm = eqn.params.get("permutation")
        out_axes = (
          axes if perm is None else tuple(j for j, p in enumerate(perm) if p in axes)
        )
        tracked[eqn.outvars[0]] = out_axes
        continue
      shape = _shape(hits[0])
      kept = _kept_axes(shape, _shape(eqn.outvars[0]), axes)
      if name in _RESHAPING and kept is not None:  # unit axes added or dropped, or
        tracked[eqn.outvars[0]] = kept  # each example's own activation picked (vmap)
        continue
      if name == "reduce_sum" and _non_unit(eqn.params["axes"], shape) == _non_unit(
        axes, shape
      ):
        pooled.append(eqn.outvars[0])
        derived.add(eqn.outvars[0])
        continue
      raise MethodError(
        f"cam: {_WHY}; here the first operation on the activation is {name!r}, not a "
        "sum or mean over all its spatial axes. Pass head_weights=(K, classes), or use "
        "another method."
      )
    if (
      name not in _LINEAR
      or (name in ("mul", "dot_general") and len(uses) > 1)
      or (name == "div" and eqn.invars[1] in uses)
    ):
      raise MethodError(
        f"cam: {_WHY}; after the pool the head applies {name!r}, which is not affine "
        "(a second layer, an activation or a softmax). Pass head_weights=(K, classes), "
        "or use another method."
      )
    derived.update(eqn.outvars)


def cam_weights(score_grid, a: jax.Array) -> jax.Array:
  """The classifier's weights of each image's target (B, K).

  Args:
    score_grid: ``activation (B, *s, K) -> (B,)`` the target scores of the model
      after the layer on a channels-last activation.
    a: (B, *s, K) the activation.
  """
  closed = jax.make_jaxpr(score_grid)(a)
  space = tuple(range(1, a.ndim - 1))
  pooled: list[Any] = []
  derived: set = set()
  _walk(closed.jaxpr, {closed.jaxpr.invars[0]: space}, derived, pooled)
  if not pooled or not any(v in derived for v in closed.jaxpr.outvars):
    raise MethodError(
      f"cam: {_WHY}; the target score does not depend on a pooled activation."
    )

  def through_pool(q):  # the head on an activation equal to q at every position
    q = q.reshape(q.shape[0], *[1] * len(space), -1)
    return score_grid(jnp.broadcast_to(q, a.shape))

  pooled_a = a.mean(axis=space)
  return jax.grad(lambda q: jnp.sum(through_pool(q)))(pooled_a).astype(jnp.float32)


def cam(p) -> jax.Array:
  """The original CAM's channel weights (B, K): the weights of the dense layer after
  the global average pool for each image's target (found by :func:`cam_weights`; a
  sum pool gives them times the number of positions: the same map, scaled), or
  ``head_weights[:, target]`` when the explainer was given them."""
  if p.head_weights is not None:
    return jnp.take(jnp.asarray(p.head_weights, jnp.float32), p.target, axis=1).T
  return cam_weights(p.score_grid, p.a)


def shapleycam(p) -> jax.Array:
  """ShapleyCAM's channel weights (B, K): the spatial mean of ``g - H A / 2``, with g
  the target score's gradient with respect to the activation and ``H A`` its
  Hessian-vector product along the activation itself (a forward-over-reverse
  derivative of the model after the layer), as pytorch-grad-cam's ``ShapleyCAM``.
  The target must be twice differentiable; with the plain logit of a ReLU network
  the Hessian term vanishes almost everywhere and the map is Grad-CAM's (use
  :func:`gradcam_jax.rest_target` for one that reads the softmax too).

  References:
    Cai, "CAMs as Shapley Value-based Explainers", arXiv:2501.06261, 2025.
  """
  space = tuple(range(1, p.a.ndim - 1))
  grad = jax.grad(lambda act: jnp.sum(p.score_grid(act)))  # examples are separate
  a = p.a.astype(jnp.float32)
  g, hvp = jax.jvp(grad, (a,), (a,))
  return jnp.mean(g - 0.5 * hvp, axis=space)
