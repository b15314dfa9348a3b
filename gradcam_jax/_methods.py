"""CAM methods: each is a pure function of one example's activations and gradients.

A method maps ``A`` (h, w, K) and ``dA = dy/dA`` (h, w, K) to a map (h, w) before
the final ReLU; the driver batches it with ``vmap`` and applies the ReLU.
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp

from gradcam_jax._errors import MethodError, format_choices

__all__ = ["METHODS", "get_method", "gradcam_map"]

MapFn = Callable[[jax.Array, jax.Array], jax.Array]


def gradcam_map(a: jax.Array, da: jax.Array) -> jax.Array:
  """Grad-CAM: ``sum_k alpha_k A_k`` with ``alpha_k = mean_ij dy/dA_ijk``.

  Args:
    a: activations of one image, shape (h, w, K).
    da: gradient of the target score w.r.t. `a`, shape (h, w, K).

  Returns:
    The (h, w) weighted sum, before the ReLU.

  References:
    Selvaraju et al., "Grad-CAM: Visual Explanations from Deep Networks via
    Gradient-based Localization", ICCV 2017, eq. (1)-(2).
  """
  alpha = jnp.mean(da, axis=(0, 1))
  return jnp.einsum("hwk,k->hw", a, alpha)


METHODS: dict[str, MapFn] = {
    "gradcam": gradcam_map,
}


def get_method(method: str | MapFn) -> MapFn:
  """A method by name, or a user's own ``map(A, dA) -> (h, w)`` function."""
  if callable(method):
    return method
  if method not in METHODS:
    raise MethodError(f"method: expected one of the names below or a function "
                      f"map(A, dA) -> (h, w); got {method!r}. Methods:\n"
                      + format_choices(sorted(METHODS)))
  return METHODS[method]
