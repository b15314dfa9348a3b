"""FullGrad (Srinivas & Fleuret, NeurIPS 2019), post-processed as pytorch-grad-cam's
``FullGrad`` does: a method of the whole model (``Method.kind == "model"``), not of
one layer.

The map sums, at input resolution,

- ``|x * dy/dx|``, each (example, channel) min-max normalised over space, summed over
  channels, and
- for every convolution and batch normalisation (pytorch-grad-cam's Conv2d and
  BatchNorm2d; Dense layers are not counted), ``|b * dy/dA|`` with ``A`` the layer's
  output and ``b`` its bias: each (example, channel) min-max normalised over the
  layer's grid, summed over channels, resized to the input (linear, half-pixel).

``b`` is the layer's output for an all-zero input, which is its bias for a
convolution and ``beta - mean * gamma / sqrt(var + eps)`` for a batch normalisation in
inference, the bias pytorch-grad-cam and the paper's code take. It is read through the
adapters (``Edit.with_zero``), so every framework's layers count the same way. One
backward pass gives every ``b * dy/dA`` at once: each layer's output becomes
``A + b * d`` with ``d = 0``, whose gradient in ``d`` is ``b * dy/dA``.

Min-max here is pytorch-grad-cam's ``(m - min) / (1e-7 + max - min)``.
"""

from __future__ import annotations

import collections
import warnings

import jax
import jax.numpy as jnp

from gradcam_jax._edits import Edit
from gradcam_jax._guided import replace_relus
from gradcam_jax._errors import ArgumentError, LayerNotFoundError, UnsupportedError
from gradcam_jax._layers import LayerRef
from gradcam_jax._postprocess import upsample

__all__ = ["check_whole_model", "fullgrad"]


def check_whole_model(record, layer, reshape) -> None:
  """A method of the whole model (FullGrad) uses no target layer: one given is
  ignored with a warning, as pytorch-grad-cam ignores its ``target_layers``, so a loop
  over every method with one layer runs; a reshape, which would apply to nothing, is
  an error."""
  if reshape is not None:
    raise ArgumentError(
      f"cam(method={record.name!r}): reshape: this method reads every convolution and "
      f"batch normalisation of the model on the images' grid; expected reshape=None; "
      f"got {reshape!r}."
    )
  if layer is not None:
    warnings.warn(
      f"cam(method={record.name!r}): layer={layer!r} is ignored: this method sums the "
      "bias gradients of every convolution and batch normalisation (pass layer=None "
      "to say so)",
      stacklevel=3,
    )


def _plus_bias_times(a, b, d):
  """The layer's output ``a`` plus ``b * d``: ``d`` is zero, its gradient ``b * dy/da``."""
  return a + (b * d).astype(a.dtype)


def _channel_sum(t, eps: float = 1e-7):
  """(B, *s, C) -> (B, *s): each example's and channel's map min-max normalised over
  its grid (pytorch-grad-cam's ``scale_cam_image``), summed over channels."""
  space = tuple(range(1, t.ndim - 1))
  lo = jnp.min(t, axis=space, keepdims=True)
  hi = jnp.max(t, axis=space, keepdims=True)
  return jnp.sum((t - lo) / (eps + hi - lo), axis=-1)


def fullgrad(r):
  """FullGrad of the request `r` (a :class:`~gradcam_jax._request.Request` built
  without a layer).

  Returns:
    ``(output, targets, raw)``: raw maps (B, T, *S) at the input's size, before the
    final normalisation.
  """
  adapter, infos = r.adapter.bias_layers(r.variables, r.images)
  rank = len(r.size) + 2
  looped = [i for i in infos if i.inside_loop]
  if looped:
    raise UnsupportedError(
      f"method 'fullgrad': the convolution {'/'.join(map(str, looped[0].path))} runs "
      "inside a loop over stacked layers (nn.scan / nnx.scan), whose layers' biases "
      "gradcam-jax cannot read one by one yet."
    )
  # only layers on the images' grid: a batch normalisation of pooled features (B, K)
  # is pytorch-grad-cam's BatchNorm1d, which it does not count either
  infos = [i for i in infos if i.shape is not None and len(i.shape) == rank]
  if not infos:
    raise LayerNotFoundError(
      f"method 'fullgrad': {adapter!r} has no convolution or batch normalisation with "
      f"a (B, {r.layout.grid_text()}) output; FullGrad sums the bias gradients of those "
      "layers (linen/NNX Conv and BatchNorm, Keras ConvND and BatchNormalization, "
      "equinox.nn.Conv and BatchNorm)."
    )
  refs = [LayerRef(i.path, i.call, i.method) for i in infos]
  zeros = [r.zeros_for(i) for i in infos]

  def edited(variables, x, ds):
    edits = [(ref, Edit(_plus_bias_times, (d,), True)) for ref, d in zip(refs, ds)]
    return adapter.run_with_edits(variables, x, edits)

  # the plain gradient (ReLUs kept as they are), with the faster backward rules of
  # max pools and strided convolutions that guided backprop uses
  fast = replace_relus(edited, jax.nn.relu, name="fullgrad", require_relu=False)

  def run(x, ds):
    return fast(r.variables, x, ds)

  output, targets, cts, pullback = r.scores_vjp(run, r.images, zeros)
  dx, dbs = pullback(cts)  # (T, B, ...) each

  def one_target(dx, dbs):
    x = r.to_last(r.images).astype(jnp.float32)
    total = _channel_sum(jnp.abs(x * r.to_last(dx).astype(jnp.float32)))
    by_size: dict = collections.defaultdict(list)
    for db in dbs:
      term = _channel_sum(jnp.abs(r.grid(db).astype(jnp.float32)))  # channels last
      by_size[term.shape[1:]].append(term)
    for terms in by_size.values():  # resizing is linear: one resize per grid size
      total = total + upsample(sum(terms), r.size)
    return total

  raw = jax.vmap(one_target, in_axes=(0, 0))(dx, dbs)  # (T, B, *S)
  return output, targets, jnp.moveaxis(raw, 0, 1)
