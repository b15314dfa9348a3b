"""Sanity checks for saliency maps (Adebayo et al. 2018): model parameter
randomisation, and the similarity measures used to compare maps.

A method whose maps barely change when the model's top layers are re-initialised
is not explaining the model. :func:`randomisation_table` re-initialises a Flax
model's parameters layer by layer from the top (cascading) or one layer at a time
(independent) and reports how similar each map stays to the original.
"""

from __future__ import annotations

from typing import Callable, NamedTuple, Sequence

import jax
import jax.numpy as jnp

from gradcam_jax._errors import ArgumentError
from gradcam_jax._ranks_blur import gaussian_kernel, ranks
from gradcam_jax._postprocess import normalize

__all__ = [
  "spearman",
  "ssim",
  "hog",
  "hog_correlation",
  "top_down_layers",
  "randomise",
  "randomisation_table",
  "SanityRow",
]


def _pearson(a: jax.Array, b: jax.Array) -> jax.Array:
  a = a - a.mean(axis=-1, keepdims=True)
  b = b - b.mean(axis=-1, keepdims=True)
  den = jnp.sqrt((a * a).sum(-1) * (b * b).sum(-1))
  return jnp.where(den > 0, (a * b).sum(-1) / jnp.where(den > 0, den, 1), 0.0)


def spearman(a: jax.Array, b: jax.Array) -> jax.Array:
  """Spearman rank correlation of two batches of maps (B, ...) -> (B,).

  Ties are broken by position (maps are continuous in practice)."""
  a = a.reshape(a.shape[0], -1).astype(jnp.float32)
  b = b.reshape(b.shape[0], -1).astype(jnp.float32)
  return _pearson(ranks(a).astype(jnp.float32), ranks(b).astype(jnp.float32))


def _gaussian_filter(x: jax.Array, sigma: float = 1.5, radius: int = 5) -> jax.Array:
  k = gaussian_kernel(sigma, radius)
  y = jax.lax.conv_general_dilated(x[:, None], k.reshape(1, 1, -1, 1), (1, 1), "VALID")
  y = jax.lax.conv_general_dilated(y, k.reshape(1, 1, 1, -1), (1, 1), "VALID")
  return y[:, 0]


def ssim(a: jax.Array, b: jax.Array) -> jax.Array:
  """Structural similarity of two batches of maps (B, H, W) -> (B,), each map
  min-max scaled to [0, 1] first; Gaussian window (sigma 1.5, 11x11), C1 = 0.01^2,
  C2 = 0.03^2 (Wang et al. 2004). Maps must be at least 11x11."""
  a = normalize(a.astype(jnp.float32), eps=0.0)
  b = normalize(b.astype(jnp.float32), eps=0.0)
  c1, c2 = 0.01**2, 0.03**2
  mu_a, mu_b = _gaussian_filter(a), _gaussian_filter(b)
  var_a = _gaussian_filter(a * a) - mu_a**2
  var_b = _gaussian_filter(b * b) - mu_b**2
  cov = _gaussian_filter(a * b) - mu_a * mu_b
  s = (
    (2 * mu_a * mu_b + c1)
    * (2 * cov + c2)
    / ((mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2))
  )
  return s.mean(axis=(1, 2))


def hog(maps: jax.Array, cell: int = 8, bins: int = 9) -> jax.Array:
  """Histogram-of-oriented-gradients features of maps (B, H, W) -> (B, F): central
  differences, unsigned orientations in `bins` bins weighted by magnitude per
  `cell` x `cell` cell, each cell's histogram L2-normalised (no block overlap)."""
  x = maps.astype(jnp.float32)
  p = jnp.pad(x, ((0, 0), (1, 1), (1, 1)), mode="edge")
  gx = (p[:, 1:-1, 2:] - p[:, 1:-1, :-2]) / 2
  gy = (p[:, 2:, 1:-1] - p[:, :-2, 1:-1]) / 2
  mag = jnp.sqrt(gx**2 + gy**2)
  angle = jnp.mod(jnp.arctan2(gy, gx), jnp.pi)
  index = jnp.minimum((angle / jnp.pi * bins).astype(jnp.int32), bins - 1)
  onehot = jax.nn.one_hot(index, bins) * mag[..., None]
  b, h, w = x.shape
  hc, wc = h // cell, w // cell
  cells = (
    onehot[:, : hc * cell, : wc * cell].reshape(b, hc, cell, wc, cell, bins).sum((2, 4))
  )
  norm = jnp.sqrt((cells**2).sum(-1, keepdims=True) + 1e-12)
  return (cells / norm).reshape(b, -1)


def hog_correlation(a: jax.Array, b: jax.Array, cell: int = 8) -> jax.Array:
  """Pearson correlation of the HOG features of two batches of maps -> (B,)."""
  return _pearson(hog(a, cell), hog(b, cell))


def top_down_layers(apply_fn, variables, images) -> list[tuple[str, ...]]:
  """Paths of the modules that own parameters, from the output down: the order in
  which the model computes them on `images`, reversed (traced, not run)."""
  from gradcam_jax._layers import list_layers

  owners = set()
  for path, _ in jax.tree_util.tree_leaves_with_path(variables["params"]):
    owners.add(tuple(str(getattr(k, "key", k)) for k in path[:-1]))
  infos, _ = list_layers(apply_fn, variables, images)
  order = []
  for info in infos:
    if info.path in owners and info.path not in order:
      order.append(info.path)
  return order[::-1]


def randomise(variables, layers: Sequence[tuple[str, ...]], key):
  """`variables` with the params of `layers` re-drawn from a Gaussian of each
  leaf's own standard deviation (biases and other constant leaves become N(0, 0.01)).
  BatchNorm statistics and every other layer are kept."""
  layers = set(map(tuple, layers))
  leaves, tree = jax.tree_util.tree_flatten_with_path(variables["params"])
  keys = jax.random.split(key, len(leaves))
  out = []
  for (path, leaf), k in zip(leaves, keys):
    module = tuple(str(getattr(p, "key", p)) for p in path[:-1])
    if module in layers:
      std = jnp.std(leaf)
      std = jnp.where(std > 0, std, 0.01)
      leaf = (jax.random.normal(k, leaf.shape) * std).astype(leaf.dtype)
    out.append(leaf)
  return {**variables, "params": jax.tree_util.tree_unflatten(tree, out)}


class SanityRow(NamedTuple):
  """Mean similarity (over the batch) of the maps after randomising `layers`."""

  randomised: str
  spearman: float
  spearman_abs: float
  ssim: float
  hog: float


def _as_maps(x: jax.Array, images: jax.Array) -> tuple[jax.Array, jax.Array]:
  """Signed and absolute maps of a field: cams as they are, input gradients (the
  images' shape, channels last) summed over channels."""
  if x.shape == images.shape:
    return x.sum(-1), jnp.abs(x).sum(-1)
  return x, jnp.abs(x)


def randomisation_table(
  make_explainer: Callable,
  apply_fn,
  variables,
  images,
  targets,
  *,
  key,
  field: str = "cam",
  mode: str = "cascading",
  layers: Sequence[tuple[str, ...]] | None = None,
  cell: int = 8,
) -> list[SanityRow]:
  """The model-parameter-randomisation test for any explainer factory.

  Args:
    make_explainer: ``variables -> explain`` (e.g.
      ``lambda v: gcj.gradcam(model.apply, v, layer=...)``).
    apply_fn: the model's apply function (for the order of its layers).
    variables: the trained model's Flax variables.
    targets: the explained classes, fixed across randomisations.
    field: the :class:`Explanation` field compared (``"cam"``, ``"guided"``,
      ``"guided_gradcam"``).
    mode: ``"cascading"`` (randomise from the top layer down, cumulatively) or
      ``"independent"`` (one layer at a time).
    layers: the layers in the order to randomise; default :func:`top_down_layers`.

  Returns:
    One row for the original model (similarity 1) and one per randomisation step.
    Any spatial rank (images channels last): for signals and volumes the rank
    correlations are computed as for images, and ``ssim`` and ``hog``, defined here
    for 2-D maps only, are NaN.

  References:
    Adebayo et al., "Sanity Checks for Saliency Maps", NeurIPS 2018.
  """
  if mode not in ("cascading", "independent"):
    raise ArgumentError(f"mode: expected 'cascading' or 'independent'; got {mode!r}.")
  layers = list(top_down_layers(apply_fn, variables, images) if layers is None else layers)
  ref = getattr(make_explainer(variables)(images, targets), field)
  ref_signed, ref_abs = _as_maps(ref, images)
  planar = ref_abs.ndim == 3  # SSIM and HOG are defined for 2-D maps
  same = 1.0 if planar else float("nan")
  rows = [SanityRow("none", 1.0, 1.0, same, same)]
  for i, layer in enumerate(layers):
    chosen = layers[: i + 1] if mode == "cascading" else [layer]
    v = randomise(variables, chosen, jax.random.fold_in(key, i))
    signed, absolute = _as_maps(getattr(make_explainer(v)(images, targets), field), images)
    rows.append(
      SanityRow(
        "/".join(layer) if mode == "independent" else f"down to {'/'.join(layer)}",
        float(spearman(signed, ref_signed).mean()),
        float(spearman(absolute, ref_abs).mean()),
        float(ssim(absolute, ref_abs).mean()) if planar else float("nan"),
        float(hog_correlation(absolute, ref_abs, cell).mean()) if planar else float("nan"),
      )
    )
  return rows
