"""Target scores: which scalar per image an explanation explains.

A target function has the signature ``target_fn(output, targets) -> scores`` with
``output`` the model output for the batch (any pytree), ``targets`` the per-example
target array (or None) and ``scores`` of shape (B,). The default is the pre-softmax
logit of the class, as in the Grad-CAM paper.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from gradcam_jax._errors import ArgumentError, TargetError

__all__ = [
  "class_logit",
  "class_probability",
  "finer_target",
  "rest_target",
  "default_targets",
  "check_targets",
  "score_cotangent",
  "segmentation_target",
  "detection_target",
  "embedding_target",
]

TargetFn = Callable[[Any, Any], jax.Array]


def _one_hot(targets, num_classes: int, dtype):
  return jax.nn.one_hot(targets, num_classes, dtype=dtype)


def _logits(output, name: str):
  """`output` if it is a (B, num_classes, ...) array, else a TargetError that says how
  to pick the logits out of it."""
  if isinstance(output, dict) or isinstance(output, (tuple, list)):
    keys = list(output) if isinstance(output, dict) else list(range(len(output)))
    guess = next((k for k in keys if "logit" in str(k)), keys[0] if keys else 0)
    raise TargetError(
      f"{name}: expected the model output to be a (B, num_classes) array; got a "
      f"{type(output).__name__} with keys {keys}. Say which one holds the logits, "
      f"e.g. target=lambda out, t: gcj.{name}(out[{guess!r}], t)."
    )
  if getattr(output, "ndim", 0) < 2:
    raise TargetError(
      f"{name}: expected the model output to be a (B, num_classes) array; got shape "
      f"{getattr(output, 'shape', type(output).__name__)}. A (B,) output has one "
      "score per image: pass a target function that returns it."
    )
  return output


def class_logit(output: jax.Array, targets: jax.Array) -> jax.Array:
  """The logit of each example's target class: ``output[b, targets[b]]``.

  An out-of-range target (possible only under jit, where it cannot be checked)
  scores 0, so its maps are all zero.

  Example:
    >>> import jax.numpy as jnp, gradcam_jax as gcj
    >>> gcj.class_logit(jnp.array([[1.0, 2.0], [3.0, 4.0]]), jnp.array([1, 0]))
    Array([2., 3.], dtype=float32)
  """
  output = _logits(output, "class_logit")
  return jnp.sum(output * _one_hot(targets, output.shape[-1], output.dtype), axis=-1)


def class_probability(output: jax.Array, targets: jax.Array) -> jax.Array:
  """The softmax probability of each example's target class (the seed's Keras target).

  Gradients of probabilities saturate for confident predictions; prefer
  :func:`class_logit` unless the probability is what you want to explain.
  """
  output = _logits(output, "class_probability")
  probs = jax.nn.softmax(output.astype(jnp.float32), axis=-1)
  return jnp.sum(probs * _one_hot(targets, output.shape[-1], probs.dtype), axis=-1)


def _is_classifier_output(out, batch: int) -> bool:
  return hasattr(out, "shape") and len(out.shape) == 2 and out.shape[0] == batch


def default_targets(output, batch: int, target_fn=None):
  """argmax of a (B, num_classes) output, as int32; None for a target function that
  declares ``needs_targets = False`` (e.g. :func:`embedding_target`)."""
  if getattr(target_fn, "needs_targets", True) is False:
    return None
  if not _is_classifier_output(output, batch):
    raise TargetError(
      "targets=None: the default target is the argmax class of a (B, num_classes) "
      f"output, but the model returned {jax.tree_util.tree_map(jnp.shape, output)}. "
      "Pass targets explicitly, with a target function that reads this output."
    )
  return jnp.argmax(jax.lax.stop_gradient(output), axis=-1).astype(jnp.int32)


def check_targets(targets, batch: int, out_shape) -> jax.Array:
  """Validate an explicit targets array: shape (B,) or (B, T) for T targets per
  image, integer, in range when concrete."""
  if not isinstance(targets, jax.core.Tracer):
    raw = np.asarray(targets)
    if (
      np.issubdtype(raw.dtype, np.integer)
      and raw.size
      and (raw.min() < np.iinfo(np.int32).min or raw.max() > np.iinfo(np.int32).max)
    ):
      raise TargetError(
        f"targets: expected class indices that fit in int32; got "
        f"values from {raw.min()} to {raw.max()} (a {raw.dtype} "
        "would wrap around to another class)."
      )
  targets = jnp.asarray(targets) if not isinstance(targets, jax.Array) else targets
  if targets.ndim == 0:
    targets = jnp.broadcast_to(targets, (batch,))
  if targets.ndim not in (1, 2) or targets.shape[0] != batch:
    raise TargetError(
      f"targets: expected shape ({batch},), one class per image, or "
      f"({batch}, T) for T classes per image; got shape "
      f"{targets.shape}."
    )
  if not jnp.issubdtype(targets.dtype, jnp.integer):
    raise TargetError(
      f"targets: expected an integer dtype (class indices); got {targets.dtype}."
    )
  if _is_classifier_output(out_shape, batch) and not isinstance(targets, jax.core.Tracer):
    values = np.asarray(targets)
    num_classes = out_shape.shape[-1]
    bad = np.argwhere((values < 0) | (values >= num_classes))
    if bad.size:
      where = [tuple(b) if len(b) > 1 else int(b[0]) for b in bad.tolist()]
      raise TargetError(
        f"targets: expected class indices in 0..{num_classes - 1}; got "
        f"{values[tuple(bad.T)].tolist()} at positions {where}."
      )
  return targets.astype(jnp.int32)


def check_target_indexing(target_fn: TargetFn, targets, out_shape) -> None:
  """Concrete targets that a custom target function indexes out of range raise (JAX
  would clamp or fill them silently: an all-zero map). Checked with
  ``jax.experimental.checkify`` on zeros of the output's shape, one target column at
  a time; a function checkify cannot trace is not checked. Under ``jax.jit`` the
  targets are traced and cannot be checked."""
  if targets is None or isinstance(targets, jax.core.Tracer):
    return
  from jax.experimental import checkify

  zeros = jax.tree_util.tree_map(lambda s: jnp.zeros(s.shape, s.dtype), out_shape)
  columns = (
    [targets] if targets.ndim == 1 else [targets[:, j] for j in range(targets.shape[1])]
  )
  checked = checkify.checkify(lambda o, t: target_fn(o, t), errors=checkify.index_checks)
  for t in columns:
    try:
      message = checked(zeros, t)[0].get()
    except Exception:  # noqa: BLE001 (not traceable this way: leave it unchecked)
      return
    if message:
      raise TargetError(
        f"targets {np.asarray(targets).tolist()}: the target function "
        f"{getattr(target_fn, '__name__', target_fn)} indexes the model output out "
        f"of range with them ({message.strip()}); JAX would clamp or fill such an "
        "index and give a wrong or all-zero map."
      )


def score_cotangent(target_fn: TargetFn, output, targets, batch: int):
  """The cotangent of the model output: the gradient of ``sum_b target_fn(...)[b]``.

  Summing over the batch is exact because each score depends on its own example
  only (the model is evaluated deterministically, without batch statistics).
  """

  def total(out):
    scores = target_fn(out, targets)
    if getattr(scores, "shape", None) != (batch,):
      raise TargetError(
        f"target function {getattr(target_fn, '__name__', target_fn)}:"
        f" expected scores of shape ({batch},); got "
        f"{getattr(scores, 'shape', type(scores).__name__)}."
      )
    return jnp.sum(scores)

  return jax.grad(total)(output)


def segmentation_target(mask) -> TargetFn:
  """Target for segmentation models: the sum of class ``targets[b]``'s logits over
  the pixels of `mask`. Any spatial rank: a region of a signal's (B, L, C) output,
  of an image's (B, H, W, C), of a volume's (B, D, H, W, C).

  Args:
    mask: ``(*spatial)`` or ``(B, *spatial)`` bool/float weights over the output's
      positions, as (H, W) or (B, H, W) for images.

  Returns:
    ``target_fn(output (B, *spatial, C), targets (B,)) -> (B,)``.
  """
  mask = jnp.asarray(mask, jnp.float32)

  def target_fn(output, targets):
    spatial = output.shape[1:-1]
    if mask.shape not in (spatial, (output.shape[0], *spatial)):
      raise TargetError(
        f"segmentation_target: expected a mask of shape {spatial} or "
        f"{(output.shape[0], *spatial)} (the output's positions, (B, *spatial, C) "
        f"without its class axis); got shape {tuple(mask.shape)}."
      )
    m = mask if mask.ndim == len(spatial) + 1 else mask[None]
    one_hot = _one_hot(targets, output.shape[-1], output.dtype)
    per_pixel = jnp.sum(
      output * one_hot.reshape(one_hot.shape[0], *[1] * len(spatial), -1), axis=-1
    )
    return jnp.sum(per_pixel * m, axis=tuple(range(1, m.ndim)))

  return target_fn


def detection_target(box_index) -> TargetFn:
  """Target for detectors whose output is ``(boxes (B, N, 4), scores (B, N, C))``:
  the score of class ``targets[b]`` for box ``box_index[b]`` (an int or (B,) ints)."""
  box_index = jnp.asarray(box_index, jnp.int32)

  def target_fn(output, targets):
    _, scores = output
    idx = jnp.broadcast_to(box_index, (scores.shape[0],))
    per_box = jnp.take_along_axis(scores, idx[:, None, None], axis=1)[:, 0]  # (B, C)
    return jnp.sum(per_box * _one_hot(targets, scores.shape[-1], scores.dtype), axis=-1)

  return target_fn


def rest_target(output: jax.Array, targets: jax.Array) -> jax.Array:
  """ReST: the target's logit minus its cross-entropy, ``y_t + log_softmax(y)_t``: a
  score that reads the logit and the softmax together, with curvature where the
  logit has none (pytorch-grad-cam's ``ClassifierOutputReST``, proposed with
  ShapleyCAM).

  Example:
    >>> import jax.numpy as jnp, gradcam_jax as gcj
    >>> gcj.rest_target(jnp.array([[0.0, 0.0]]), jnp.array([1]))  # 0 + log(1/2)
    Array([-0.6931472], dtype=float32)

  References:
    Cai, "CAMs as Shapley Value-based Explainers", arXiv:2501.06261, 2025.
  """
  y = _logits(output, "rest_target").astype(jnp.float32)
  hot = _one_hot(targets, y.shape[-1], y.dtype)
  return jnp.sum(y * hot, axis=-1) + jnp.sum(jax.nn.log_softmax(y, axis=-1) * hot, axis=-1)


def finer_target(alpha: float = 1.0, comparison=(1, 2, 3)) -> TargetFn:
  """Finer-CAM's target: each image's target logit against the classes most similar
  to it, ``sum_j p_j (y_t - alpha * y_j) / (sum_j p_j + 1e-9)``, where the j are the
  classes at ranks `comparison` when all classes are sorted by ``|y_j - y_t|`` (rank
  0 is the target itself) and p is the softmax of the output; ranks past the last
  class are dropped. pytorch-grad-cam's ``FinerWeightedTarget`` and its defaults
  (alpha 1, ranks 1, 2, 3); the gradient flows through p as there. ``method=
  "finercam"`` is Grad-CAM with this target.

  Example:
    >>> import jax.numpy as jnp, gradcam_jax as gcj
    >>> y = jnp.array([[4.0, 3.0, 0.0]])  # class 1 is the one most like class 0
    >>> gcj.finer_target(comparison=(1,))(y, jnp.array([0]))  # 4 - 3
    Array([1.], dtype=float32)

  References:
    Zhang et al., "Finer-CAM: Spotting the Difference Reveals Finer Details for
    Visual Explanation", CVPR 2025.
  """
  ranks = tuple(comparison)
  if not ranks or not all(
    isinstance(r, int) and not isinstance(r, bool) and r >= 1 for r in ranks
  ):
    raise ArgumentError(
      f"finer_target: comparison: expected ranks >= 1 of the classes most similar to "
      f"the target (rank 0 is the target itself), e.g. (1, 2, 3); got {comparison!r}."
    )

  def finer(output, targets):
    y = _logits(output, "finer_target").astype(jnp.float32)
    kept = [r for r in ranks if r < y.shape[-1]]
    if not kept:
      raise ArgumentError(
        f"finer_target: comparison: ranks {ranks} all exceed the output's "
        f"{y.shape[-1]} classes."
      )
    t = jnp.asarray(targets).astype(jnp.int32)[:, None]
    y_t = jnp.take_along_axis(y, t, axis=-1)  # (B, 1)
    order = jnp.argsort(jnp.abs(y - jax.lax.stop_gradient(y_t)), axis=-1)
    similar = order[:, jnp.array(kept)]  # (B, R)
    p = jnp.take_along_axis(jax.nn.softmax(y, axis=-1), similar, axis=-1)
    y_j = jnp.take_along_axis(y, similar, axis=-1)
    return jnp.sum(p * (y_t - alpha * y_j), axis=-1) / (jnp.sum(p, axis=-1) + 1e-9)

  return finer


def embedding_target(reference) -> TargetFn:
  """Target for embedding models: the cosine similarity of each output embedding
  (B, D) to `reference` ((D,) or (B, D)); ``targets`` is unused (pass None)."""
  reference = jnp.asarray(reference, jnp.float32)

  def target_fn(output, targets):
    del targets
    ref = reference if reference.ndim == 2 else reference[None]
    out = output.astype(jnp.float32)
    num = jnp.sum(out * ref, axis=-1)
    den = jnp.linalg.norm(out, axis=-1) * jnp.linalg.norm(ref, axis=-1)
    return num / jnp.maximum(den, 1e-12)

  target_fn.needs_targets = False  # type: ignore[attr-defined]
  return target_fn
