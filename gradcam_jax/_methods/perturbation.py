"""Channel weights from extra passes of the model: Score-CAM, Ablation-CAM, torch-cam's
Smoothed and Integrated Score-CAM (SS-CAM, IS-CAM), and torch-cam's Smooth Grad-CAM++
(gradients at the layer for noisy copies of the input).

Each scores one forward pass per channel of the target layer (SS-CAM and IS-CAM
`num_samples` of them). The channels go
through ``jax.lax.map`` in chunks of ``batch_size`` (each chunk one vmapped forward of
``batch_size * B`` inputs), so memory is bounded by the chunk, not by K; with
``batch_size=None`` every channel runs in one vmapped pass. The result does not depend
on the chunking.
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp

from gradcam_jax._errors import ArgumentError, check_count
from gradcam_jax._postprocess import normalize

__all__ = [
  "Perturbation",
  "scorecam",
  "ablationcam",
  "scorecam_weights",
  "ablation_weights",
  "weighted_sum",
  "sscam",
  "iscam",
  "smoothgradcampp",
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
    score_raw: ``(B, H, W, C) images -> (B,)`` the target function's own scores of
      other images (the logit by default: torch-cam's methods score that).
    key: a PRNG key for a method that draws at random (None otherwise).
    score_grid: ``activation (B, *s, K) -> (B,)`` target scores of the model after
      the layer on a channels-last activation (the original CAM reads its head).
    head_weights: (K, classes) the classifier's weights when the user gave them.
    target: (B,) the targets' indices (None for a target function without them).
    layer_grad: ``(B, *S, C) images -> (A, dy/dA)``, the layer's activation and the
      target score's gradient there for other images, each (B, *s, K).

  A method returns the weights (B, K), or ``(weights, A')`` to weigh another
  activation (B, *s, K) than the clean input's.
  """

  images: jax.Array
  a: jax.Array
  base: jax.Array
  score_images: Callable
  score_head: Callable
  batch_size: int | None
  top_n: int | None
  score_raw: Callable | None = None
  key: jax.Array | None = None
  score_grid: Callable | None = None
  head_weights: jax.Array | None = None
  target: jax.Array | None = None
  layer_grad: Callable | None = None


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


def _torchcam_masks(a: jax.Array, size: tuple[int, ...]) -> jax.Array:
  """torch-cam's masks: each channel min-max normalised over space at the layer's
  resolution, ``(A - min) / (max - min + 1e-8)``, then upsampled linearly to the
  input's `size` (half-pixel centres, as ``F.interpolate(align_corners=False)``):
  (B, *S, K)."""
  space = tuple(range(1, a.ndim - 1))
  a = a.astype(jnp.float32)
  low = a.min(axis=space, keepdims=True)
  norm = (a - low) / (a.max(axis=space, keepdims=True) - low + 1e-8)
  b, k = a.shape[0], a.shape[-1]
  return jax.image.resize(norm, (b, *size, k), "linear", antialias=False)


def _check_noise(method: str, num_samples, std=0.0) -> None:
  """A sampling method's options: a whole number of samples, a finite std >= 0."""
  check_count(f"{method}: num_samples", num_samples)
  if (
    isinstance(std, bool)
    or not isinstance(std, (int, float))
    or not 0 <= std < float("inf")
  ):
    raise ArgumentError(f"{method}: std: expected a finite number >= 0; got {std!r}.")


def _mean_gain_softmax(p: Perturbation, masked: Callable, num_samples: int) -> jax.Array:
  """``softmax_k(mean_i score(masked(mask_k, i, k)) - base)`` (B, K): torch-cam's
  weights, the masked inputs of channel k's `num_samples` passes from `masked`."""
  masks = _torchcam_masks(p.a, p.images.shape[1:-1])
  assert p.score_raw is not None

  def channel(k):
    mask = jnp.take(masks, k, axis=-1)[..., None]  # (B, *S, 1)

    def sample(i, total):
      x = masked(mask, i, k).astype(p.images.dtype)
      return total + p.score_raw(x).astype(jnp.float32) - p.base.astype(jnp.float32)

    zero = jnp.zeros(p.base.shape, jnp.float32)
    return jax.lax.fori_loop(0, num_samples, sample, zero) / num_samples

  gains = _over_channels(channel, jnp.arange(p.a.shape[-1]), p.batch_size).T
  return jax.nn.softmax(gains, axis=-1)


def sscam(p: Perturbation, num_samples: int = 35, std: float = 2.0) -> jax.Array:
  """SS-CAM's channel weights (B, K), as torch-cam's ``SSCAM`` computes them:
  ``softmax_k(mean_i y(x * (M_k + n_ik)) - y(x))`` with ``M_k`` torch-cam's mask
  (:func:`_torchcam_masks`) and ``n_ik ~ N(0, std^2)`` drawn at input resolution
  (one draw per position, shared by the input's channels), ``y`` the target's raw
  score (the logit, not a probability). Keyed: the noise comes from ``key=``.
  torch-cam's defaults: 35 samples, std 2.

  References:
    Wang et al., "SS-CAM: Smoothed Score-CAM for Sharper Visual Feature
    Localization", arXiv:2006.14255, 2020.
  """
  assert p.key is not None
  _check_noise("sscam", num_samples, std)

  def masked(mask, i, k):
    draw = jax.random.fold_in(jax.random.fold_in(p.key, k), i)
    return p.images * (mask + std * jax.random.normal(draw, mask.shape, mask.dtype))

  return _mean_gain_softmax(p, masked, num_samples)


def iscam(p: Perturbation, num_samples: int = 10) -> jax.Array:
  """IS-CAM's channel weights (B, K), as torch-cam's ``ISCAM`` code computes them:
  ``softmax_k(mean_i y(c_i * M_k * x) - y(x))`` with ``c_i = sum_{j<=i} j / N``
  for i = 1..N (N = `num_samples`, 10 by default): the coefficient accumulates, so
  it runs from 1/N up to (N + 1) / 2. torch-cam's docstring (and the paper's
  integral) describe ``sum_{j<i} j / N`` times the mask instead; we follow its code,
  which is what its users get.

  References:
    Naidu et al., "IS-CAM: Integrated Score-CAM for axiomatic-based explanations",
    arXiv:2010.03023, 2020.
  """
  _check_noise("iscam", num_samples)
  coeffs = jnp.cumsum(jnp.arange(1, num_samples + 1, dtype=jnp.float32)) / num_samples
  return _mean_gain_softmax(
    p, lambda mask, i, k: coeffs[i] * (mask * p.images), num_samples
  )


def smoothgradcampp(
  p: Perturbation, num_samples: int = 4, std: float = 0.3, eps: float = 1e-8
):
  """Smooth Grad-CAM++ as torch-cam's ``SmoothGradCAMpp`` code computes it: for
  noisy inputs ``x + n_i``, ``n_i ~ N(0, std^2)`` at every input element (i = 1..N,
  N = `num_samples`), the gradients ``g_i = dy/dA(x + n_i)``; then
  ``alpha = mean g_i^2 / (2 mean g_i^2 + sum_space(mean g_i^3 * A) + eps)`` with ``A``
  the clean input's activation, weights ``w_k = sum_space(alpha * ReLU(g_N))`` from
  the last sample's gradient, and the map ``sum_k w_k A_N`` over the last sample's
  activation (what torch-cam's hooks hold when it sums). torch-cam's defaults: 4
  samples, std 0.3. Keyed: the noise comes from ``key=``.

  References:
    Omeiza et al., "Smooth Grad-CAM++: An Enhanced Inference Level Visualization
    Technique for Deep Convolutional Neural Network Models", arXiv:1908.01224, 2019.
  """
  assert p.key is not None and p.layer_grad is not None
  _check_noise("smoothgradcam++", num_samples, std)
  noise = std * jax.random.normal(p.key, (num_samples, *p.images.shape), p.images.dtype)
  acts, grads = jax.lax.map(lambda n: p.layer_grad(p.images + n), noise)
  grads = grads.astype(jnp.float32)
  space = tuple(range(1, p.a.ndim - 1))
  g2 = jnp.mean(grads**2, axis=0)
  g3 = jnp.mean(grads**3, axis=0)
  alpha = g2 / (2 * g2 + jnp.sum(g3 * p.a, axis=space, keepdims=True) + eps)
  weights = jnp.sum(alpha * jax.nn.relu(grads[-1]), axis=space)
  return weights, acts[-1]


def weighted_sum(a: jax.Array, weights: jax.Array) -> jax.Array:
  """``sum_k w_k A_k`` per image: (B, h, w, K), (B, K) -> (B, h, w) (any spatial
  rank)."""
  return jnp.einsum("b...k,bk->b...", a.astype(weights.dtype), weights)
