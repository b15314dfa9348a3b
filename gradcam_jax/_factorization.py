"""Deep Feature Factorization: the layer's activations of a whole batch factorised
into a few non-negative concepts, each with a map per image and scores per class.

``nmf`` is non-negative matrix factorisation by multiplicative updates, a fixed
number of them in one ``lax.scan``: jittable, no host round-trip.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from gradcam_jax._edits import Edit, replace, tap
from gradcam_jax._errors import ArgumentError, check_count
from gradcam_jax._explain import _at_input_size
from gradcam_jax._explainer import Explainer
from gradcam_jax._layout import check_layout
from gradcam_jax._request import Request, adapt

__all__ = ["Factorization", "feature_factorization", "nmf"]


class Factorization(NamedTuple):
  """Deep Feature Factorization of a batch (channels-last shapes; ``(B, *S)`` inputs).

  Attributes:
    concepts: (K, n) the concepts: each a vector over the layer's K channels.
    maps: ``(B, n, *S)`` where each concept lies in each image, at input size, each map
      min-max normalised to [0, 1].
    maps_raw: ``(B, n, *s)`` the same at the layer's resolution, as factorised.
    scores: (n, classes) each concept's scores: the model after the layer run on an
      activation holding the concept at every position (for a global-average-pool
      and dense head: the dense layer applied to the concept).
    error: the relative reconstruction error ``|V - W H| / |V|`` (Frobenius) of the
      activations V (offset to be non-negative).
    output: (B, classes) the model's output on the images.
  """

  concepts: jax.Array
  maps: jax.Array
  maps_raw: jax.Array
  scores: jax.Array
  error: jax.Array
  output: jax.Array


def nmf(v, n_components: int, iterations: int = 500, key=None, eps: float = 1e-10):
  """``V ≈ W H`` with W (m, n) and H (n, p) non-negative, for V (m, p) >= 0.

  Lee and Seung's multiplicative updates for the Frobenius norm, `iterations` of
  them; started as scikit-learn's ``init="random"`` starts: entries
  ``|N(0, 1)| * sqrt(mean(V) / n)``, drawn from `key` (default ``key(0)``).

  Example:
    >>> import jax, jax.numpy as jnp, gradcam_jax as gcj
    >>> w_true = jax.random.uniform(jax.random.key(1), (6, 2))
    >>> v = w_true @ jax.random.uniform(jax.random.key(2), (2, 9))
    >>> w, h = gcj.nmf(v, 2)
    >>> w.shape, h.shape, bool(jnp.linalg.norm(v - w @ h) / jnp.linalg.norm(v) < 0.05)
    ((6, 2), (2, 9), True)

  References:
    Lee & Seung, "Algorithms for Non-negative Matrix Factorization", NIPS 2000.
  """
  check_count("n_components", n_components)
  check_count("iterations", iterations)
  v = jnp.asarray(v, jnp.float32)
  key = jax.random.key(0) if key is None else key
  scale = jnp.sqrt(jnp.mean(v) / n_components)
  kw, kh = jax.random.split(key)
  w = scale * jnp.abs(jax.random.normal(kw, (v.shape[0], n_components)))
  h = scale * jnp.abs(jax.random.normal(kh, (n_components, v.shape[1])))

  def update(wh, _):
    w, h = wh
    h = h * (w.T @ v) / ((w.T @ w) @ h + eps)
    w = w * (v @ h.T) / (w @ (h @ h.T) + eps)
    return (w, h), None

  (w, h), _ = jax.lax.scan(update, (w, h), None, length=iterations)
  return w, h


def feature_factorization(
  apply_fn,
  params=None,
  *,
  layer=None,
  n_components: int = 5,
  iterations: int = 500,
  eps: float = 1e-7,
  reshape=None,
  image_layout: str | None = None,
) -> Explainer:
  """Build a Deep Feature Factorization explainer: ``explain(images, key=None) ->``
  :class:`Factorization`.

  The layer's activations of the whole batch, as a (K, B·positions) matrix with each
  channel's minimum subtracted, are factorised jointly (:func:`nmf`): the n columns
  of W plus the minima are the concepts, the rows of H, per image, their maps. As
  pytorch-grad-cam's ``DeepFeatureFactorization`` does, with scikit-learn's NMF
  there (coordinate descent) and multiplicative updates here. Each concept's scores
  come from the model after the layer on an activation holding the concept at every
  position (positions a token grid drops, a class token, are zeros).

  Example:
    >>> import jax, jax.numpy as jnp, flax.linen as nn, gradcam_jax as gcj
    >>> class Net(nn.Module):
    ...   @nn.compact
    ...   def __call__(self, x):
    ...     x = nn.relu(nn.Conv(8, (3, 3))(x))
    ...     return nn.Dense(3)(x.mean((1, 2)))
    >>> net = Net()
    >>> variables = net.init(jax.random.key(0), jnp.ones((1, 8, 8, 3)))
    >>> dff = jax.jit(gcj.feature_factorization(net.apply, variables, n_components=2))
    >>> out = dff(jax.random.normal(jax.random.key(1), (4, 8, 8, 3)))
    >>> out.concepts.shape, out.maps.shape, out.scores.shape
    ((8, 2), (4, 2, 8, 8), (2, 3))

  References:
    Collins, Achanta & Süsstrunk, "Deep Feature Factorization for Concept
    Discovery", ECCV 2018.
  """
  check_count("n_components", n_components)
  check_count("iterations", iterations)
  check_layout(image_layout)
  if isinstance(layer, list):
    raise ArgumentError(
      f"feature_factorization: layer: expected one layer; got a list of {len(layer)}."
    )
  adapter, params, layer = adapt(apply_fn, params, layer)

  def factorize(params, images, key=None):
    r = Request(adapter, params, images, None, layer, reshape, image_layout)
    output, pullback = jax.vjp(
      lambda probe: r.run_with_edits(images, {0: Edit(tap, (probe,))}), r.zeros()
    )
    (a_layer,) = pullback(jnp.zeros_like(output))  # the tap gives the activation
    a = r.grid(a_layer).astype(jnp.float32)  # (B, *s, K)
    k = a.shape[-1]
    if n_components > k:
      raise ArgumentError(
        f"feature_factorization: n_components: expected at most the layer's {k} "
        f"channels; got {n_components}."
      )
    v = a.reshape(-1, k).T  # (K, B * positions)
    offset = v.min(axis=1, keepdims=True)
    w, h = nmf(v - offset, n_components, iterations, key)
    error = jnp.linalg.norm(v - offset - w @ h) / jnp.maximum(
      jnp.linalg.norm(v - offset), eps
    )
    concepts = w + offset
    raw = jnp.moveaxis(h.reshape(n_components, *a.shape[:-1]), 0, 1)  # (B, n, *s)
    back = (
      (lambda g: g)
      if r.reshape is None
      else jax.vjp(r.reshape, jnp.zeros_like(a_layer[:1]))[1]
    )

    def concept_scores(c):  # the concept at every position of one image
      grid = jnp.broadcast_to(c.astype(a_layer.dtype), (1, *a.shape[1:]))
      value = grid if r.reshape is None else back(grid)[0]
      return r.run_with_edits(images[:1], {0: Edit(replace, (value,))})[0]

    scores = jax.vmap(concept_scores)(concepts.T)
    return Factorization(
      concepts, _at_input_size(raw, r.size, eps), raw, scores, error, output
    )

  factorize.__doc__ = feature_factorization.__doc__
  return Explainer(factorize, params, "feature_factorization", takes_key=True)
