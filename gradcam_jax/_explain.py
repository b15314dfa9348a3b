"""The explainers: the CAM family, guided backprop and Guided Grad-CAM.

Data flows one way: model adapter (``_adapters``) -> the request checked
(``_request``) -> target scores and ``jax.vjp`` -> CAM method (``_methods``) ->
post-processing (``_postprocess``) -> :class:`Explanation`. Everything static
(layer, method, target function, eps) is fixed when the explainer is built; arrays
are arguments, so ``jax.jit`` compiles once per input shape.

Targets may be (B,) (one class per image) or (B, T): T classes per image from one
forward pass, the T backward passes vmapped over their cotangents. Inside, every
per-target array carries the T axis (T = 1 for (B,) targets); the result drops it
unless (B, T) targets were given.
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp

from gradcam_jax._edits import Edit, replace, tap, tap_add
from gradcam_jax._errors import ArgumentError, LayerNotFoundError, check_count
from gradcam_jax._explainer import Explainer
from gradcam_jax._guided import guided
from gradcam_jax._methods import get_method
from gradcam_jax._methods.fullgrad import check_whole_model
from gradcam_jax._perturbation_maps import checked_head_weights, perturbation_maps
from gradcam_jax._postprocess import normalize, upsample
from gradcam_jax._layout import check_layout
from gradcam_jax._request import (
  Request,
  adapt,
  batch_first,
  over_t,
)
from gradcam_jax._adapters import pick
from gradcam_jax._targets import class_logit

__all__ = ["cam", "gradcam", "guided_backprop", "guided_gradcam"]


def _at_least_f32(x):
  """At least float32 (bfloat16 activations are widened; float64 kept)."""
  return x.astype(jnp.promote_types(x.dtype, jnp.float32))


def _gradient_maps(map_fn, a, das, key=None):
  """A gradient method's ReLU'd maps (B, T, h, w) from the activation `a` (B, h, w,
  K) and its gradients `das` (T, B, h, w, K), one per target. A keyed method gets one
  key per image (the same for each target)."""
  a = _at_least_f32(a)
  if key is None:
    raw = over_t(lambda da: jax.vmap(map_fn)(a, _at_least_f32(da)), das)
  else:
    keys = jax.random.split(key, a.shape[0])
    raw = over_t(lambda da: jax.vmap(map_fn)(a, _at_least_f32(da), keys), das)
  return jax.nn.relu(batch_first(raw))


def _target_of(record, target):
  """The explainer's target function: the one given, else the method's own (FinerCAM
  compares with the most similar classes), else the class logit."""
  if target is class_logit and record.target is not None:
    return record.target
  return target


def _check_key(record, key, where: str):
  """A keyed method needs a key; the others take none (the Explainer says so)."""
  if record.keyed and key is None:
    raise ArgumentError(
      f"{where}(method={record.name!r}): this method draws at random; expected a PRNG "
      "key, e.g. explain(images, key=jax.random.key(0)); got none."
    )


def _at_input_size(raw, size, eps):
  """Maps (B, T, *s) upsampled to the input's spatial `size` and min-max normalised,
  each on its own."""
  flat = raw.reshape(-1, *raw.shape[2:])
  space = tuple(range(1, flat.ndim))
  return normalize(upsample(flat, size), eps, space).reshape(*raw.shape[:2], *size)


def cam(
  apply_fn,
  params=None,
  *,
  method="gradcam",
  layer=None,
  target=class_logit,
  eps: float = 1e-7,
  batch_size: int | None = None,
  top_n: int | None = None,
  reshape: Callable | None = None,
  image_layout: str | None = None,
  head_weights=None,
) -> Explainer:
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
      ``"eigengradcam"``, ``"fem"``, ``"kpcacam"``, ``"scorecam"``, ``"ablationcam"``,
      ``"sscam"``, ``"iscam"``, ``"randomcam"``, ``"cam"`` (the original CAM: the
      classifier's weights after a global average pool), ``"finercam"`` (Grad-CAM of
      :func:`finer_target`), ``"shapleycam"``, ``"fullgrad"`` (every convolution's
      and batch normalisation's bias gradient and the input gradient: no target
      layer, `layer` is ignored; ``cam_raw`` at input size), ``"smoothgradcam++"``
      (torch-cam's Smooth Grad-CAM++); a :class:`Method` record (one of
      ``ALL_METHODS`` with other options, e.g.
      ``ALL_METHODS["sscam"]._replace(fn=functools.partial(ALL_METHODS["sscam"].fn,
      num_samples=8))``); or your own ``map(A, dA) -> (h, w)`` for one example (any
      spatial rank: ``(*s, K) -> (*s)``). ``"sscam"``, ``"smoothgradcam++"`` and
      ``"randomcam"`` draw at random: the explainer is then called with ``key=`` (a
      PRNG key).
    layer: the target layer: a module path tuple (``("layer4",)``), a string
      (``"layer4/1"``, ``"block@1"`` for the second call), a :class:`LayerRef`, or
      None for the last spatial (B, h, w, C) activation ((B, w, C) for signals,
      (B, d, h, w, C) for volumes: the inputs' spatial rank; with a `reshape`, the
      last one whose reshaped activation reaches the output). A list of layers gives
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
    image_layout: the layout of the inputs, and of the model's activations, in
      JAX's dimension names: ``"NWC"``/``"NCW"`` for signals, ``"NHWC"``/``"NCHW"``
      for images, ``"NDHWC"``/``"NCDHW"`` for volumes and clips (D is depth or
      time); channels last is Flax's convention, channels first Equinox's and
      PyTorch's (activations are then read as ``(B, C, *spatial)`` unless `reshape`
      says otherwise). None (the default) is channels last of the inputs' rank.
      Maps are ``(B, *spatial)`` and input gradients in the inputs' layout either way.
      A layer whose grid is larger than the inputs' raises.
    head_weights: ``method="cam"`` only: the classifier's weights (K, classes) to use
      instead of those it finds after a global average pool.

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
  check_layout(image_layout)
  record = get_method(method, where="cam")
  whole = record.kind == "model"  # FullGrad: every layer, none chosen
  if whole:
    check_whole_model(record, layer, reshape)
    adapter, params = pick(apply_fn, params)
  else:
    adapter, params, layer = adapt(apply_fn, params, layer)
  target = _target_of(record, target)
  perturbation = record.kind == "perturbation"
  if head_weights is not None and record.name != "cam":
    raise ArgumentError(
      f"cam: head_weights: only method 'cam' (the original CAM) uses them; got "
      f"method {record.name!r}."
    )

  def cam_explain(params, images, targets=None, *, key=None):
    _check_key(record, key, "cam")
    if whole:
      r = Request(adapter, params, images, targets, False, None, image_layout, target)
      output, targets, raw = record.fn(r)
      return r.explanation(
        output, targets, cam=_at_input_size(raw, r.size, eps), cam_raw=raw
      )
    r = Request(adapter, params, images, targets, layer, reshape, image_layout, target)
    zeros = [r.zeros(i) for i in range(len(r.refs))]
    output, targets, cts, pullback = r.scores_vjp(
      lambda ds, ps: r.run_with_edits(
        images, {i: Edit(tap_add, (p, d)) for i, (d, p) in enumerate(zip(ds, ps))}
      ),
      zeros,
      zeros,
    )
    das, acts = pullback(cts)
    raws = []
    for i, (da, a_layer) in enumerate(zip(das, acts)):
      a_layer = a_layer[0]  # the activation: the same for every target
      a = r.grid(a_layer)
      layer_key = None if key is None else jax.random.fold_in(key, i)
      if perturbation:
        raws.append(
          perturbation_maps(
            r,
            i,
            record.fn,
            output,
            a,
            a_layer,
            targets,
            batch_size,
            top_n,
            layer_key,
            checked_head_weights(head_weights, a, output),
          )
        )
      else:
        raws.append(_gradient_maps(record.fn, a, over_t(r.grid, da), layer_key))
    if len(raws) == 1:
      return r.explanation(
        output, targets, cam=_at_input_size(raws[0], r.size, eps), cam_raw=raws[0]
      )
    # several layers (pytorch-grad-cam's convention): each layer's map normalised at
    # input size, then averaged; cam is that average normalised, and cam_raw keeps
    # its one meaning: the raw maps at layer resolution, one per layer
    mean = sum(_at_input_size(raw, r.size, eps) for raw in raws) / len(raws)
    flat = mean.reshape(-1, *r.size)
    space = tuple(range(1, flat.ndim))
    return r.explanation(
      output,
      targets,
      cam=normalize(flat, eps, space).reshape(mean.shape),
      cam_raw=tuple(raws),
    )

  cam_explain.__doc__ = cam.__doc__
  return Explainer(cam_explain, params, record.name, takes_key=record.keyed)


def gradcam(
  apply_fn,
  params=None,
  *,
  layer=None,
  target=class_logit,
  method="gradcam",
  eps: float = 1e-7,
  reshape: Callable | None = None,
  image_layout: str | None = None,
) -> Explainer:
  """Build a Grad-CAM explainer: :func:`cam` with ``method="gradcam"``.

  See :func:`cam` for the arguments and an example.

  References:
    Selvaraju et al., "Grad-CAM: Visual Explanations from Deep Networks via
    Gradient-based Localization", ICCV 2017.
  """
  return cam(
    apply_fn,
    params,
    method=method,
    layer=layer,
    target=target,
    eps=eps,
    reshape=reshape,
    image_layout=image_layout,
  )


def guided_backprop(
  apply_fn, params=None, *, target=class_logit, image_layout: str | None = None
) -> Explainer:
  """Build a guided-backpropagation explainer (guided field only; cam fields None).

  The gradient of the target score w.r.t. the input with every ReLU's backward rule
  replaced by ``g * [g > 0] * [x > 0]`` (see :func:`guided`). Arguments as for
  :func:`cam`.

  References:
    Springenberg et al., "Striving for Simplicity: The All Convolutional Net", 2014.
  """

  check_layout(image_layout)
  adapter, params = pick(apply_fn, params)

  def guided_explain(params, images, targets=None):
    r = Request(
      adapter, params, images, targets, False, layout=image_layout, target_fn=target
    )
    output, targets, cts, pullback = r.scores_vjp(
      lambda x: guided(adapter)(r.variables, x), images
    )
    (grad,) = pullback(cts)
    return r.explanation(output, targets, guided=batch_first(grad))

  guided_explain.__doc__ = guided_backprop.__doc__
  return Explainer(guided_explain, params, "guided_backprop")


def guided_gradcam(
  apply_fn,
  params=None,
  *,
  layer=None,
  target=class_logit,
  method="gradcam",
  eps: float = 1e-7,
  reshape: Callable | None = None,
  image_layout: str | None = None,
) -> Explainer:
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
      "of several layers use gcj.cam(..., layer=[...]) and gcj.guided_backprop."
    )
  check_layout(image_layout)
  adapter, params, layer = adapt(apply_fn, params, layer)
  record = get_method(method, kinds=("gradient",), where="guided_gradcam")
  target = _target_of(record, target)

  def guided_gradcam_explain(params, images, targets=None, *, key=None):
    _check_key(record, key, "guided_gradcam")
    r = Request(adapter, params, images, targets, layer, reshape, image_layout, target)
    guided_run = guided(
      lambda v, x, probe: adapter.run_with_edits(v, x, [(r.refs[0], Edit(tap, (probe,)))])
    )
    output, targets, cts, pullback = r.scores_vjp(
      lambda x, probe: guided_run(r.variables, x, probe), images, r.zeros()
    )
    grad, a = pullback(cts)
    a = a[0]  # the activation: the same for every target
    # dy/dA with plain ReLUs: only the model after the layer runs (the part before
    # it is dead code once A is given, and is removed by XLA under jit).
    _, head_vjp = jax.vjp(
      lambda act: r.run_with_edits(images, {0: Edit(replace, (act,))}), a
    )
    (da,) = over_t(head_vjp, cts)
    layer_key = None if key is None else jax.random.fold_in(key, 0)  # as gcj.cam's
    raw = _gradient_maps(record.fn, r.grid(a), over_t(r.grid, da), layer_key)
    cam_ = _at_input_size(raw, r.size, eps)
    grad = batch_first(grad)
    return r.explanation(
      output,
      targets,
      cam=cam_,
      cam_raw=raw,
      guided=grad,
      guided_gradcam=grad * r.channel_axis(cam_).astype(grad.dtype),
    )

  guided_gradcam_explain.__doc__ = guided_gradcam.__doc__
  return Explainer(guided_gradcam_explain, params, "guided_gradcam", takes_key=record.keyed)
