"""The run of a perturbation-kind method (Score-CAM, Ablation-CAM, IS-CAM, SS-CAM,
the original CAM, ShapleyCAM, Smooth Grad-CAM++): for each layer and target, the
:class:`Perturbation` record of what it may call (masked inputs, the model after the
layer on edited activations, its raw scores, the layer's gradient for other inputs),
its channel weights, and the ReLU'd weighted sum.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from gradcam_jax._edits import Edit, replace, tap_add
from gradcam_jax._errors import ArgumentError
from gradcam_jax._methods.perturbation import Perturbation, weighted_sum
from gradcam_jax._request import Request, batch_first, over_targets
from gradcam_jax._targets import class_logit, class_probability

__all__ = ["checked_head_weights", "perturbation_maps"]


def _probability_score(target_fn):
  """Score-CAM scores masked inputs by the softmax probability of the class (the
  official code) when the target is the default class logit."""
  return class_probability if target_fn is class_logit else target_fn


def checked_head_weights(head_weights, a, output):
  """`head_weights` as (K, classes) for this layer and output, or None."""
  if head_weights is None:
    return None
  w = jnp.asarray(head_weights)
  want = (a.shape[-1], output.shape[-1])
  if w.shape != want:
    raise ArgumentError(
      f"cam: head_weights: expected (channels, classes) = {want} for this layer and "
      f"model; got {w.shape}."
    )
  return w


def perturbation_maps(
  r: Request,
  i: int,
  weights_fn,
  output,
  a,
  a_layer,
  targets,
  batch_size,
  top_n,
  key,
  head_weights=None,
):
  """A perturbation method's ReLU'd maps (B, T, h, w) from `a` (B, h, w, K). Masking
  a channel of the head's input acts on `a_layer`, the activation in the layer's own
  layout (tokens for a ViT, channels first for Equinox): the grid mask is carried
  back through the (linear) reshape."""
  score = _probability_score(r.target_fn)
  target_fn = r.target_fn
  to_layer = _mask_to_layer(r.reshape, a_layer)

  def score_head(keep, t):  # only traced by a method that masks the layer's channels
    mask = to_layer(keep, a.shape)
    return target_fn(r.run_with_edits(r.images, {i: Edit(replace, (a_layer * mask,))}), t)

  back = (
    (lambda g: g)
    if r.reshape is None
    else (
      lambda g: jax.vjp(r.reshape, a_layer)[1](g)[0]  # the grid's layout is linear
    )
  )

  def score_grid(grid, t):  # only traced by a method that reads the head
    return target_fn(r.run_with_edits(r.images, {i: Edit(replace, (back(grid),))}), t)

  def layer_grad(x, t):  # only traced by a method that reads gradients of other inputs
    zero = r.zeros(i)

    def score(probe, delta):
      edit = Edit(tap_add, (probe, delta))
      return jnp.sum(target_fn(r.run_with_edits(r.from_last(x), {i: edit}), t))

    act, grad = jax.grad(score, argnums=(0, 1))(zero, zero)
    return r.grid(act), r.grid(grad)

  def one_target(t):
    w = weights_fn(
      Perturbation(
        images=r.to_last(r.images),
        a=a,
        base=target_fn(output, t),
        score_images=lambda x: score(r.adapter(r.variables, r.from_last(x)), t),
        score_head=lambda keep: score_head(keep, t),
        batch_size=batch_size,
        top_n=top_n,
        score_raw=lambda x: target_fn(r.adapter(r.variables, r.from_last(x)), t),
        key=key,
        score_grid=lambda grid: score_grid(grid, t),
        head_weights=head_weights,
        target=t,
        layer_grad=lambda x: layer_grad(x, t),
      )
    )
    w, a_used = w if isinstance(w, tuple) else (w, a)
    return weighted_sum(a_used, w)

  return jax.nn.relu(batch_first(over_targets(one_target, targets)))


def _mask_to_layer(reshape, a_layer):
  """``keep (K,) -> mask`` in the layer's layout: ones where `reshape` drops
  entries (a class token), `keep` on each channel it maps to the grid."""
  if reshape is None:
    return lambda keep, grid_shape: keep.astype(a_layer.dtype).reshape(
      (1,) * (a_layer.ndim - 1) + (-1,)
    )
  _, back = jax.vjp(reshape, jnp.zeros_like(a_layer))

  def to_layer(keep, grid_shape):
    drop = jnp.broadcast_to(1 - keep.astype(a_layer.dtype), grid_shape)
    return 1 - back(drop)[0]

  return to_layer
