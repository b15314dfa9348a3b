"""Gradient-free channel weights: Score-CAM and Ablation-CAM.

Both score one forward pass per channel of the target layer. The channels go
through ``jax.lax.map`` in chunks of ``batch_size`` (each chunk one vmapped forward of
``batch_size * B`` inputs), so memory is bounded by the chunk, not by K; with
``batch_size=None`` every channel runs in one vmapped pass. The result does not depend
on the chunking.
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp

from gradcam_jax._postprocess import normalize

__all__ = [
  "Perturbation",
  "scorecam",
  "ablationcam",
  "scorecam_weights",
  "ablation_weights",
  "weighted_sum",
]


class Perturbation(NamedTuple):
  """What a perturbation method may use to weigh the channels for one set of targets
  (the explainer builds it; a method calls what it needs, the rest is never traced).

  Attributes:
    images: (B, H, W, C) model inputs, channels last (any spatial rank: (B, *S, C)).
    a: (B, h, w, K) the layer's activations (any spatial rank: (B, *s, K)).
    base: (B,) the target scores of the unperturbed images.
    score_images: ``(B, H, W, C) images -> (B,)`` target scores of other images
      (Score-CAM's: the softmax probability when the target is the default logit).
    score_head: ``keep (K,) -> (B,)`` target scores with the layer's channels
      multiplied by `keep` (only the model after the layer runs).
    batch_size: channels per chunk of masked passes (None: all in one pass).
    top_n: score only the `top_n` channels of highest spatial variance (None: all).
  """

  images: jax.Array
  a: jax.Array
  base: jax.Array
  score_images: Callable
  score_head: Callable
  batch_size: int | None
  top_n: int | None


def _over_channels(
  fn: Callable[[jax.Array], jax.Array], channels: jax.Array, batch_size: int | None
) -> jax.Array:
  """(B,) scores per channel index -> (K, B), chunked."""
  if batch_size is None or batch_size >= channels.shape[0]:
    return jax.vmap(fn)(channels)
  return jax.lax.map(fn, channels, batch_size=batch_size)


def _channel_masks(a: jax.Array, size: tuple[int, ...]) -> jax.Array:
  """Each channel upsampled to the input size and min-max normalised: (B, *S, K)."""
  b, k = a.shape[0], a.shape[-1]
  up = jax.image.resize(a.astype(jnp.float32), (b, *size, k), "linear", antialias=False)
  space = tuple(range(1, a.ndim - 1))
  return normalize(up, eps=0.0, axes=space)  # min-max over space, per image and channel


def scorecam_weights(
  score_fn, images, a, top_n: int | None, batch_size: int | None
) -> jax.Array:
  """Score-CAM channel weights (B, K).

  Channel k's upsampled, min-max-normalised map masks the input; its weight is
  ``score_fn`` of the masked input (the target's softmax probability by default, as
  in the official code). With `top_n`, only the `top_n` channels of highest
  spatial variance are scored (Faster Score-CAM); the others weigh 0.

  Args:
    score_fn: ``(B, H, W, C) images -> (B,)`` target scores.
    images: (B, H, W, C) model inputs.
    a: (B, h, w, K) activations.

  References:
    Wang et al., "Score-CAM: Score-Weighted Visual Explanations for Convolutional
    Neural Networks", CVPR Workshops 2020; Faster Score-CAM (Desai & Ramaswamy's
    Ablation-CAM repo notes; pytorch-grad-cam) for the top-N variance selection.
  """
  masks = _channel_masks(a, images.shape[1:-1])
  k = a.shape[-1]
  if top_n is None or top_n >= k:
    chosen = jnp.broadcast_to(jnp.arange(k), (a.shape[0], k))
  else:
    variance = jnp.var(a.astype(jnp.float32), axis=tuple(range(1, a.ndim - 1)))
    chosen = jax.lax.top_k(variance, top_n)[1]  # (B, N)

  def score(j):  # j: position in `chosen`
    idx = chosen[:, j]
    mask = jnp.take_along_axis(masks, idx.reshape(-1, *[1] * (masks.ndim - 1)), axis=-1)
    return score_fn(images * mask.astype(images.dtype))

  scores = _over_channels(score, jnp.arange(chosen.shape[1]), batch_size).T  # (B, N)
  weights = jnp.zeros((a.shape[0], k), jnp.float32)
  return weights.at[jnp.arange(a.shape[0])[:, None], chosen].set(scores)


def ablation_weights(
  head_fn, k: int, base: jax.Array, batch_size: int | None, eps: float = 1e-7
) -> jax.Array:
  """Ablation-CAM channel weights ``(y - y_k) / y`` (B, K).

  ``y_k`` is the target score with channel k of the activation set to zero. A
  score with ``|y| < eps`` is treated as ``eps`` (with its sign), so a zero-score
  image gets large, finite weights instead of NaN.

  Args:
    head_fn: ``keep (K,) -> (B,)`` target scores of the model after the layer, run
      on the activation with its channels multiplied by `keep`.
    k: the number of channels.
    base: (B,) the unablated scores ``y``.

  References:
    Desai & Ramaswamy, "Ablation-CAM: Visual Explanations for Deep Convolutional
    Network via Gradient-free Localization", WACV 2020.
  """

  def score(ch):
    return head_fn((jnp.arange(k) != ch).astype(jnp.float32))

  ablated = _over_channels(score, jnp.arange(k), batch_size).T  # (B, K)
  y = base.astype(jnp.float32)[:, None]
  y = jnp.where(jnp.abs(y) < eps, jnp.where(y < 0, -eps, eps), y)
  return (y - ablated.astype(jnp.float32)) / y


def scorecam(p: Perturbation) -> jax.Array:
  """Score-CAM's channel weights (B, K): :func:`scorecam_weights`."""
  return scorecam_weights(p.score_images, p.images, p.a, p.top_n, p.batch_size)


def ablationcam(p: Perturbation) -> jax.Array:
  """Ablation-CAM's channel weights (B, K): :func:`ablation_weights`."""
  return ablation_weights(p.score_head, p.a.shape[-1], p.base, p.batch_size)


def weighted_sum(a: jax.Array, weights: jax.Array) -> jax.Array:
  """``sum_k w_k A_k`` per image: (B, h, w, K), (B, K) -> (B, h, w) (any spatial
  rank)."""
  return jnp.einsum("b...k,bk->b...", a.astype(weights.dtype), weights)
