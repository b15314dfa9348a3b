"""Gradient CAM methods: ``map(A, dA) -> (h, w)`` for one example, before the final
ReLU (the explainers batch them with ``vmap`` and apply the ReLU).

Every method takes activations of any spatial rank, ``(*spatial, K)``: (w, K) for
signals, (h, w, K) for images, (d, h, w, K) for volumes; sums and means over space
run over all spatial axes, and the map is ``(*spatial)``.
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp

from gradcam_jax._errors import ArgumentError

__all__ = [
  "MapFn",
  "gradcam_map",
  "hirescam_map",
  "gradcam_elementwise_map",
  "xgradcam_map",
  "gradcampp_map",
  "layercam_map",
  "eigencam_map",
  "eigengradcam_map",
  "randomcam_map",
]

MapFn = Callable[[jax.Array, jax.Array], jax.Array]
_EPS = 1e-7  # XGrad-CAM's, as pytorch-grad-cam
_GRADCAMPP_EPS = 1e-6  # Grad-CAM++'s, as pytorch-grad-cam


def _space(a: jax.Array) -> tuple[int, ...]:
  """The spatial axes of one example's (*spatial, K) activation."""
  return tuple(range(a.ndim - 1))


def _weighted(a: jax.Array, alpha: jax.Array) -> jax.Array:
  """``sum_k alpha_k A_k``: (*spatial, K), (K,) -> (*spatial)."""
  return jnp.einsum("...k,k->...", a, alpha)


def gradcam_map(a: jax.Array, da: jax.Array) -> jax.Array:
  """Grad-CAM: ``sum_k alpha_k A_k`` with ``alpha_k = mean_ij dy/dA_ijk``.

  Args:
    a: activations of one image, shape (h, w, K) (any spatial rank: ``(*spatial, K)``).
    da: gradient of the target score w.r.t. `a`, of the same shape.

  Returns:
    The (h, w) (or ``(*spatial)``) weighted sum, before the ReLU.

  References:
    Selvaraju et al., "Grad-CAM: Visual Explanations from Deep Networks via
    Gradient-based Localization", ICCV 2017, eq. (1)-(2).
  """
  return _weighted(a, jnp.mean(da, axis=_space(da)))


def hirescam_map(a: jax.Array, da: jax.Array) -> jax.Array:
  """HiResCAM: ``sum_k dA_k * A_k`` elementwise, without spatial averaging of the
  gradient, so the map is faithful to the score for a linear head.

  References:
    Draelos & Carin, "Use HiResCAM instead of Grad-CAM for faithful explanations of
    convolutional neural networks", 2020.
  """
  return jnp.sum(a * da, axis=-1)


def gradcam_elementwise_map(a: jax.Array, da: jax.Array) -> jax.Array:
  """Element-wise Grad-CAM (pytorch-grad-cam's ``GradCAMElementWise``):
  ``sum_k ReLU(dA_k * A_k)``, the ReLU applied before the channel sum."""
  return jnp.sum(jax.nn.relu(a * da), axis=-1)


def xgradcam_map(a: jax.Array, da: jax.Array) -> jax.Array:
  """XGrad-CAM: ``alpha_k = sum_ij (A_ijk / (sum_ij A_ijk + eps)) dA_ijk``.

  References:
    Fu et al., "Axiom-based Grad-CAM: Towards Accurate Visualization and Explanation
    of CNNs", BMVC 2020.
  """
  total = jnp.sum(a, axis=_space(a))
  alpha = jnp.sum(a * da, axis=_space(a)) / (total + _EPS)
  return _weighted(a, alpha)


def gradcampp_map(a: jax.Array, da: jax.Array) -> jax.Array:
  """Grad-CAM++ in its closed form for an exponential score ``exp(y)`` (as
  pytorch-grad-cam and tf-keras-vis implement it):

  ``a_ijk = g^2 / (2 g^2 + sum_ab A_abk g^3)`` (0 where g = 0),
  ``alpha_k = sum_ij a_ijk ReLU(g_ijk)``, map ``sum_k alpha_k A_k``, with ``g = dA``;
  the denominator has pytorch-grad-cam's 1e-6 added, so the maps agree with it also
  where gradients are small.

  References:
    Chattopadhay et al., "Grad-CAM++: Generalized Gradient-based Visual Explanations
    for Deep Convolutional Networks", WACV 2018, eq. (19).
  """
  g2, g3 = da**2, da**3
  total = jnp.sum(a, axis=_space(a), keepdims=True)
  denom = 2 * g2 + total * g3 + _GRADCAMPP_EPS
  coeff = jnp.where(da != 0, g2 / denom, 0.0)
  alpha = jnp.sum(coeff * jax.nn.relu(da), axis=_space(a))
  return _weighted(a, alpha)


def layercam_map(a: jax.Array, da: jax.Array) -> jax.Array:
  """LayerCAM: ``sum_k ReLU(dA_k) * A_k`` (positive gradients as pixel weights).

  References:
    Jiang et al., "LayerCAM: Exploring Hierarchical Class Activation Maps for
    Localization", IEEE TIP 2021.
  """
  return jnp.sum(jax.nn.relu(da) * a, axis=-1)


def _first_component(x: jax.Array, a: jax.Array) -> jax.Array:
  """Projection of the (positions, K) rows of `x` (centred) on their first principal
  direction, signed to correlate positively with the channel-mean of `a`."""
  k = x.shape[-1]
  rows = x.reshape(-1, k)
  rows = rows - rows.mean(axis=0, keepdims=True)
  _, _, vt = jnp.linalg.svd(rows, full_matrices=False)
  proj = rows @ vt[0]
  ref = a.reshape(-1, k).mean(axis=1)
  ref = ref - ref.mean()
  sign = jnp.where(jnp.dot(proj, ref) < 0, -1.0, 1.0)
  return (sign * proj).reshape(x.shape[:-1])


def eigencam_map(a: jax.Array, da: jax.Array) -> jax.Array:
  """Eigen-CAM: the activations projected on their first principal component
  (SVD of the centred (positions, K) matrix, batched on the device). Gradient-free: `da`
  is unused. The sign of a singular vector is arbitrary; we choose it so the map
  correlates positively with the mean activation over channels.

  References:
    Muhammad & Yeasin, "Eigen-CAM: Class Activation Map using Principal
    Components", IJCNN 2020.
  """
  del da
  return _first_component(a, a)


def eigengradcam_map(a: jax.Array, da: jax.Array) -> jax.Array:
  """Eigen-Grad-CAM: the first principal component of ``dA * A`` (class-specific),
  signed like :func:`eigencam_map`, against the channel-mean of ``dA * A``."""
  prod = a * da
  return _first_component(prod, prod)


def fem_map(a: jax.Array, da: jax.Array, k: float = 2.0) -> jax.Array:
  """FEM (Feature Explanation Method): each channel weighted by the share of its
  positions above the channel's own ``mean + k * std`` (the k-sigma rule over
  space, population standard deviation), as pytorch-grad-cam's ``FEM`` computes it
  (``k = 2`` there and here). Gradient-free: `da` is unused. Another `k`:
  ``method=functools.partial(gcj.METHODS["fem"], k=3.0)``.

  References:
    Fuad et al., "Features Understanding in 3D CNNs for Actions Recognition in
    Video", IPTA 2020.
  """
  del da
  space = _space(a)
  threshold = a.mean(axis=space, keepdims=True) + k * a.std(axis=space, keepdims=True)
  weights = (a > threshold).mean(axis=space).astype(a.dtype)
  return _weighted(a, weights)


def randomcam_map(a: jax.Array, da: jax.Array, key: jax.Array) -> jax.Array:
  """Random-CAM: channel weights drawn uniformly from [-1, 1] (one draw per image,
  from its key), as pytorch-grad-cam's ``RandomCAM``: the baseline a method's
  faithfulness scores are compared against. Gradient-free: `da` is unused. Keyed:
  the explainer is called with ``key=``.
  """
  del da
  weights = jax.random.uniform(key, (a.shape[-1],), a.dtype, minval=-1.0, maxval=1.0)
  return _weighted(a, weights)


def _kernel(x: jax.Array, kind: str, gamma: float, coef0: float, degree: int) -> jax.Array:
  """scikit-learn's pairwise kernels of the rows of `x`."""
  dot = x @ x.T
  if kind == "linear":
    return dot
  if kind == "poly":
    return (gamma * dot + coef0) ** degree
  if kind == "sigmoid":
    return jnp.tanh(gamma * dot + coef0)
  if kind == "rbf":
    sq = jnp.sum(x * x, axis=1)
    return jnp.exp(-gamma * jnp.maximum(sq[:, None] + sq[None, :] - 2 * dot, 0))
  raise ArgumentError(f"kpcacam: kernel: expected one of {KPCA_KERNELS}; got {kind!r}.")


KPCA_KERNELS = ("sigmoid", "rbf", "poly", "linear")


def kpcacam_map(
  a: jax.Array,
  da: jax.Array,
  kernel: str = "sigmoid",
  gamma: float | None = None,
  coef0: float = 1.0,
  degree: int = 3,
) -> jax.Array:
  """KPCA-CAM: the (h*w, K) activations, centred per channel, projected on the
  first component of kernel PCA, as pytorch-grad-cam's ``KPCA_CAM`` computes it with
  scikit-learn's ``KernelPCA(n_components=1, kernel="sigmoid", gamma=None)``: the
  kernel matrix double-centred, its top eigenvector scaled by the square root of its
  eigenvalue, the sign chosen so the entry of largest magnitude is positive
  (scikit-learn's ``svd_flip``). ``gamma=None`` is ``1 / K``; ``coef0`` 1. Other
  settings: ``functools.partial(gcj.METHODS["kpcacam"], kernel="rbf", gamma=...)``.
  Gradient-free: `da` is unused.

  References:
    Karmani et al., "KPCA-CAM: Visual Explainability of Deep Computer Vision Models
    using Kernel PCA", 2024.
  """
  del da
  k = a.shape[-1]
  x = a.reshape(-1, k).astype(jnp.float32)
  x = x - x.mean(axis=0, keepdims=True)
  gram = _kernel(x, kernel, 1.0 / k if gamma is None else gamma, coef0, degree)
  n = gram.shape[0]
  ones = jnp.full((n, n), 1.0 / n, gram.dtype)
  centred = gram - ones @ gram - gram @ ones + ones @ gram @ ones
  values, vectors = jnp.linalg.eigh(centred)
  top, value = vectors[:, -1], jnp.maximum(values[-1], 0.0)
  top = top * jnp.sign(top[jnp.argmax(jnp.abs(top))])
  return (top * jnp.sqrt(value)).reshape(a.shape[:-1]).astype(a.dtype)
