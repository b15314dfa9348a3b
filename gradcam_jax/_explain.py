"""The explainers: the CAM family, guided backprop and Guided Grad-CAM.

Data flows one way: model adapter (``_model``) -> target scores and ``jax.vjp`` ->
CAM method (``_methods``, ``_perturb``) -> post-processing (``_postprocess``) ->
:class:`Explanation`. Everything static (layer, method, target function, eps) is
fixed when the explainer is built; arrays are arguments, so ``jax.jit`` compiles
once per input shape.

Targets may be (B,) (one class per image) or (B, T): T classes per image from one
forward pass, the T backward passes vmapped over their cotangents; every per-target
field then gains a T axis after the batch axis.
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp

from gradcam_jax._errors import LayerNotFoundError, check_count
from gradcam_jax._forms import Explainer
from gradcam_jax._guided import guided
from gradcam_jax._methods import get_method
from gradcam_jax._adapters import pick
from gradcam_jax._model import Edit, replace, run, tap, tap_add
from gradcam_jax._perturb import Perturbation, weighted_sum
from gradcam_jax._postprocess import normalize, upsample
from gradcam_jax._result import Explanation
from gradcam_jax._setup import Setup as _Setup
from gradcam_jax._setup import adapt as _adapt, check_layout as _check_layout
from gradcam_jax._targets import class_logit, class_probability

__all__ = ["cam", "gradcam", "guided_backprop", "guided_gradcam"]


def _f32(x):
  """At least float32 (bfloat16 activations are widened; float64 kept)."""
  return x.astype(jnp.promote_types(x.dtype, jnp.float32))


def _t_second(x):
  """(T, B, ...) -> (B, T, ...)."""
  return jnp.moveaxis(x, 0, 1)


def _postprocess(raw, size, eps, multi):
  """ReLU'd raw maps (B[, T], h, w) -> normalised maps at input size."""
  if multi:
    b, t = raw.shape[:2]
    flat = raw.reshape(b * t, *raw.shape[2:])
    return normalize(upsample(flat, size), eps).reshape(b, t, *size)
  return normalize(upsample(raw, size), eps)


def _probability_score(target_fn):
  """Score-CAM scores masked inputs by the softmax probability of the class (the
  official code) when the target is the default class logit."""
  return class_probability if target_fn is class_logit else target_fn


def cam(apply_fn, params=None, *, method="gradcam", layer=None, target=class_logit,
        eps: float = 1e-7, batch_size: int | None = None, top_n: int | None = None,
        reshape: Callable | None = None, image_layout: str = "NHWC") -> Explainer:
  """Build a class-activation-map explainer (cam fields only; guided fields None).

  Args:
    apply_fn: ``apply_fn(variables, images) -> output``: a Flax linen ``model.apply``
      (or a ``functools.partial`` of it, e.g. with ``train=False``); a Flax NNX
      module (its state is the params), ``(graphdef, state)`` or a ``GraphDef``
      (params-as-argument form); an Equinox module mapping one example to its
      output (its arrays are the params; ``layer`` is then a selector such as
      ``lambda m: m.layers[3]``); or a :class:`Split` of two pure functions.
    params: Flax variables (``{"params": ..., "batch_stats": ...}``) or a bare params
      tree. None builds the params-as-argument form ``explain(params, images,
      targets=None)``; otherwise ``explain(images, targets=None)``.
    method: ``"gradcam"``, ``"hirescam"``, ``"gradcam_elementwise"``,
      ``"xgradcam"``, ``"gradcam++"``, ``"layercam"``, ``"eigencam"``,
      ``"eigengradcam"``, ``"scorecam"``, ``"ablationcam"``, or your own
      ``map(A, dA) -> (h, w)`` for one example.
    layer: the target layer: a module path tuple (``("layer4",)``), a string
      (``"layer4/1"``, ``"block@1"`` for the second call), a :class:`LayerRef`, or
      None for the last spatial (B, h, w, C) activation. A list of layers gives
      one map per layer, each normalised at input size, averaged (``cam`` is the
      normalised average; ``cam_raw`` the tuple of the layers' raw maps, each at
      its own layer's resolution).
    target: ``target_fn(output, targets) -> (B,)`` scores; default the class logit.
    eps: maps whose range is at most `eps` normalise to all zeros.
    batch_size: Score-/Ablation-CAM: channels per chunk of masked forward passes
      (memory bound); None runs all channels in one vmapped pass.
    top_n: Score-CAM only: score the `top_n` channels of highest spatial variance
      (Faster Score-CAM); None scores all.
    reshape: turns the layer's activation into (B, h, w, C) before the method sees
      it, e.g. :func:`tokens_to_grid` for a transformer block's (B, 1+N, D) tokens.
    image_layout: ``"NHWC"`` (channels last, Flax's convention) or ``"NCHW"``
      (channels first, Equinox's and PyTorch's): the layout of the images, and of
      the model's activations, which are then read as (B, C, h, w) unless `reshape`
      says otherwise. Maps are (B, H, W) and input gradients in the images' layout
      either way. A layer whose grid is larger than the images' raises.

  Returns:
    ``explain`` returning an :class:`Explanation` with ``cam``, ``cam_raw``,
    ``logits`` and ``targets``. `targets` is an int array (B,), (B, T) for T maps
    per image, or None for the argmax class. Out-of-range targets raise when
    concrete; under ``jax.jit`` they score 0 and give all-zero maps.

  Example:
    >>> import jax, jax.numpy as jnp, flax.linen as nn, gradcam_jax as gcj
    >>> class Net(nn.Module):
    ...   @nn.compact
    ...   def __call__(self, x):
    ...     x = nn.relu(nn.Conv(4, (3, 3), name="conv")(x))
    ...     return nn.Dense(3)(x.mean((1, 2)))
    >>> net = Net()
    >>> variables = net.init(jax.random.key(0), jnp.ones((1, 8, 8, 3)))
    >>> explain = jax.jit(gcj.cam(net.apply, variables, method="layercam", layer="conv"))
    >>> explain(jnp.ones((2, 8, 8, 3))).cam.shape
    (2, 8, 8)

  References:
    Selvaraju et al., "Grad-CAM: Visual Explanations from Deep Networks via
    Gradient-based Localization", ICCV 2017; each method's docstring in
    ``gradcam_jax.METHODS`` gives its formula and paper.
  """
  check_count("batch_size", batch_size, allow_none=True)
  check_count("top_n", top_n, allow_none=True)
  _check_layout(image_layout)
  apply_fn, params, layer = _adapt(apply_fn, params, layer)
  record = get_method(method, where="cam")
  perturbation = record.kind == "perturbation"
  map_fn = record.fn

  def cam_explain(params, images, targets=None):
    s = _Setup(apply_fn, params, images, targets, layer, reshape, image_layout, target)
    n = len(s.refs)
    zeros = [s.zeros(i) for i in range(n)]
    output, vjp = jax.vjp(
        lambda ds, ps: apply_fn.run_many(s.variables, images, s.refs,
                                         [Edit(tap_add, (p, d))
                                          for d, p in zip(ds, ps)]), zeros, zeros)
    ct, targets = s.cotangent(target, output)
    das, acts = s.pullback(vjp, ct)
    raws = []
    for i, (da, a_layer) in enumerate(zip(das, acts)):
      da, a = s.grid(da), s.grid(a_layer)
      if perturbation:
        first = (lambda v: v[0]) if s.multi else (lambda v: v)
        raw = _perturbation_maps(s, i, record.fn, output, first(a), first(a_layer),
                                 targets, target, batch_size, top_n)
      elif s.multi:
        raw = _t_second(jax.vmap(jax.vmap(map_fn))(_f32(a), _f32(da)))
      else:
        raw = jax.vmap(map_fn)(_f32(a), _f32(da))
      raws.append(jax.nn.relu(raw))
    size = s.size
    if n == 1:
      return Explanation(_postprocess(raws[0], size, eps, s.multi), raws[0], None, None,
                         output, targets).with_validity(images)
    # several layers (pytorch-grad-cam's convention): each layer's map normalised at
    # input size, then averaged; cam is that average normalised, and cam_raw keeps
    # its one meaning: the raw maps at layer resolution, one per layer
    mean = sum(_postprocess(r, size, eps, s.multi) for r in raws) / n
    flat = mean.reshape(-1, *size)
    return Explanation(normalize(flat, eps).reshape(mean.shape), tuple(raws), None,
                       None, output, targets).with_validity(images)

  cam_explain.__doc__ = cam.__doc__
  return Explainer(cam_explain, params, record.name)


def _perturbation_maps(s, i, weights_fn, output, a, a_layer, targets, target_fn,
                       batch_size, top_n):
  """A perturbation method's maps from `a` (B, h, w, K). Masking a channel of the
  head's input acts on `a_layer`, the activation in the layer's own layout (tokens
  for a ViT, channels first for Equinox): the grid mask is carried back through the
  (linear) reshape."""
  score = _probability_score(target_fn)

  def score_head(keep, t):  # only traced by a method that masks the layer's channels
    mask = _mask_to_layer(s.reshape, a_layer)(keep, a.shape)
    return target_fn(s.run(s.images, Edit(replace, (a_layer * mask,)), i), t)

  def one_target(t):
    w = weights_fn(Perturbation(
        images=s.to_nhwc(s.images), a=a, base=target_fn(output, t),
        score_images=lambda x: score(s.apply_fn(s.variables, s.from_nhwc(x)), t),
        score_head=lambda keep: score_head(keep, t),
        batch_size=batch_size, top_n=top_n))
    return weighted_sum(a, w)
  if s.multi:
    return _t_second(jax.vmap(one_target, in_axes=1)(targets))
  return one_target(targets)


def _mask_to_layer(reshape, a_layer):
  """``keep (K,) -> mask`` in the layer's layout: ones where `reshape` drops
  entries (a class token), `keep` on each channel it maps to the grid."""
  if reshape is None:
    return lambda keep, grid_shape: keep.astype(a_layer.dtype).reshape(
        (1,) * (a_layer.ndim - 1) + (-1,))
  _, back = jax.vjp(reshape, jnp.zeros_like(a_layer))

  def to_layer(keep, grid_shape):
    drop = jnp.broadcast_to(1 - keep.astype(a_layer.dtype), grid_shape)
    return 1 - back(drop)[0]
  return to_layer


def gradcam(apply_fn, params=None, *, layer=None, target=class_logit,
            method="gradcam", eps: float = 1e-7,
            reshape: Callable | None = None, image_layout: str = "NHWC") -> Explainer:
  """Build a Grad-CAM explainer: :func:`cam` with ``method="gradcam"``.

  See :func:`cam` for the arguments and an example.

  References:
    Selvaraju et al., "Grad-CAM: Visual Explanations from Deep Networks via
    Gradient-based Localization", ICCV 2017.
  """
  return cam(apply_fn, params, method=method, layer=layer, target=target, eps=eps,
             reshape=reshape, image_layout=image_layout)


def guided_backprop(apply_fn, params=None, *, target=class_logit,
                    image_layout: str = "NHWC") -> Explainer:
  """Build a guided-backpropagation explainer (guided field only; cam fields None).

  The gradient of the target score w.r.t. the input with every ReLU's backward rule
  replaced by ``g * [g > 0] * [x > 0]`` (see :func:`guided`). Arguments as for
  :func:`cam`.

  References:
    Springenberg et al., "Striving for Simplicity: The All Convolutional Net", 2014.
  """

  _check_layout(image_layout)
  apply_fn, params = pick(apply_fn, params)

  def guided_explain(params, images, targets=None):
    s = _Setup(apply_fn, params, images, targets, False, layout=image_layout,
               target_fn=target)
    output, vjp = jax.vjp(lambda x: guided(apply_fn)(s.variables, x), images)
    ct, targets = s.cotangent(target, output)
    (grad,) = s.pullback(vjp, ct)
    grad = _t_second(grad) if s.multi else grad
    return Explanation(None, None, grad, None, output, targets).with_validity(images)

  guided_explain.__doc__ = guided_backprop.__doc__
  return Explainer(guided_explain, params, "guided_backprop")


def guided_gradcam(apply_fn, params=None, *, layer=None, target=class_logit,
                   method="gradcam", eps: float = 1e-7,
                   reshape: Callable | None = None,
                   image_layout: str = "NHWC") -> Explainer:
  """Build a Guided Grad-CAM explainer: every field of :class:`Explanation`.

  One forward pass serves both halves: the guided-ReLU forward (bit-identical to
  the model's) yields the output, the guided input gradient and the activation;
  the plain gradient ``dy/dA`` for Grad-CAM then runs only the part of the model
  after the target layer. ``guided_gradcam = guided * cam[..., None]``. Arguments as
  for :func:`cam` (gradient-based methods only).

  Example:
    >>> import jax, jax.numpy as jnp, flax.linen as nn, gradcam_jax as gcj
    >>> class Net(nn.Module):
    ...   @nn.compact
    ...   def __call__(self, x):
    ...     x = nn.relu(nn.Conv(4, (3, 3))(x))
    ...     return nn.Dense(3)(x.mean((1, 2)))
    >>> net = Net()
    >>> variables = net.init(jax.random.key(0), jnp.ones((1, 8, 8, 3)))
    >>> out = jax.jit(gcj.guided_gradcam(net.apply, variables))(jnp.ones((2, 8, 8, 3)))
    >>> out.guided_gradcam.shape, out.targets.shape
    ((2, 8, 8, 3), (2,))

  References:
    Selvaraju et al., "Grad-CAM", ICCV 2017, section 3.1.
  """
  if isinstance(layer, list):
    raise LayerNotFoundError(
        f"guided_gradcam: layer: expected one layer; got a list of {len(layer)}. "
        "Guided Grad-CAM multiplies guided backprop by one map; for the average map "
        "of several layers use gcj.cam(..., layer=[...]) and gcj.guided_backprop.")
  _check_layout(image_layout)
  apply_fn, params, layer = _adapt(apply_fn, params, layer)
  map_fn = get_method(method, kinds=("gradient",), where="guided_gradcam").fn

  def guided_gradcam_explain(params, images, targets=None):
    s = _Setup(apply_fn, params, images, targets, layer, reshape, image_layout, target)
    guided_run = guided(lambda v, x, probe: run(apply_fn, v, x, s.layer,
                                                Edit(tap, (probe,))))
    output, vjp = jax.vjp(lambda x, probe: guided_run(s.variables, x, probe),
                          images, s.zeros())
    ct, targets = s.cotangent(target, output)
    grad, a = s.pullback(vjp, ct)
    a = a[0] if s.multi else a
    # dy/dA with plain ReLUs: only the model after the layer runs (the part before
    # it is dead code once A is given, and is removed by XLA under jit).
    _, head_vjp = jax.vjp(lambda act: s.run(images, Edit(replace, (act,))), a)
    (da,) = s.pullback(head_vjp, ct)
    a = a if s.reshape is None else s.reshape(a)  # `a` has no T axis here
    da = s.grid(da)
    if s.multi:
      raw = _t_second(jax.vmap(lambda d: jax.vmap(map_fn)(_f32(a), _f32(d)))(da))
      grad = _t_second(grad)
    else:
      raw = jax.vmap(map_fn)(_f32(a), _f32(da))
    raw = jax.nn.relu(raw)
    cam_ = _postprocess(raw, s.size, eps, s.multi)
    return Explanation(cam_, raw, grad, grad * s.channel_axis(cam_).astype(grad.dtype),
                       output, targets).with_validity(images)

  guided_gradcam_explain.__doc__ = guided_gradcam.__doc__
  return Explainer(guided_gradcam_explain, params, "guided_gradcam")
