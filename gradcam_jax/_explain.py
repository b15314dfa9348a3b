"""The explainers: Grad-CAM, guided backprop and Guided Grad-CAM.

Data flows one way: model adapter (``_model``) -> target scores and ``jax.vjp`` ->
CAM method (``_methods``) -> post-processing (``_postprocess``) -> :class:`Explanation`.
Everything static (layer, method, target function, eps) is fixed when the explainer
is built; arrays are arguments, so ``jax.jit`` compiles once per input shape.
"""

from __future__ import annotations

import functools
from typing import Any, Callable

import jax
import jax.numpy as jnp

from gradcam_jax._errors import GradCAMError, ImageError
from gradcam_jax._guided import guided
from gradcam_jax._inputs import check_images
from gradcam_jax._layers import LayerRef, parse_layer, select_layer
from gradcam_jax._methods import get_method
from gradcam_jax._model import Split, as_variables, list_layers, run, tap
from gradcam_jax._postprocess import normalize, upsample
from gradcam_jax._result import Explanation
from gradcam_jax._targets import (class_logit, check_targets, default_targets,
                                  score_cotangent)

__all__ = ["gradcam", "guided_backprop", "guided_gradcam", "jit"]


class _Setup:
  """What one trace of an explainer knows: variables, checked inputs, the layer."""

  def __init__(self, apply_fn, params, images, targets, layer):
    self.images = check_images(images)
    self.batch = images.shape[0]
    self.variables = as_variables(apply_fn, params)
    try:
      infos, self.out_shape = list_layers(apply_fn, self.variables, images)
    except GradCAMError:
      raise
    except Exception as err:  # the model's own error, re-raised with our context
      raise ImageError(
          f"the model could not run on images of shape {tuple(images.shape)} "
          f"{images.dtype} (expected (B, H, W, C) as the model expects); the model "
          f"raised {type(err).__name__}: {err}") from err
    self.targets = (None if targets is None
                    else check_targets(targets, self.batch, self.out_shape))
    self.info = None if layer is False else select_layer(infos, layer, self.batch)

  @property
  def layer(self) -> LayerRef:
    return LayerRef(self.info.path, self.info.call, self.info.method)

  def zeros(self):
    """Zeros shaped like the activation, varying over the same manual mesh axes as
    the images: under ``shard_map`` an unvarying zero would make the transpose sum
    its cotangent over devices, silently mixing examples."""
    z = jnp.zeros(self.info.shape, self.info.dtype)
    axes = _varying_axes(self.images)
    return jax.lax.pcast(z, axes, to="varying") if axes else z

  def cotangent(self, target_fn, output):
    targets = (default_targets(output, self.batch) if self.targets is None
               else self.targets)
    return score_cotangent(target_fn, output, targets, self.batch), targets


def _varying_axes(x) -> tuple:
  """The manual mesh axes `x` varies over inside ``shard_map`` (empty outside)."""
  aval = jax.typeof(x)
  manual = getattr(aval, "manual_axis_type", None)  # jax 0.10
  axes = getattr(manual, "varying", None) or getattr(aval, "vma", None) or ()
  return tuple(sorted(axes))


def _cam_maps(map_fn, a, da, size, eps):
  raw = jax.nn.relu(jax.vmap(map_fn)(a.astype(jnp.float32), da.astype(jnp.float32)))
  return normalize(upsample(raw, size), eps), raw


def _bind_params(explain_with: Callable, params, doc: str) -> Callable:
  """The two API forms: ``explain(params, images, targets=None)`` when `params` is
  None, else ``explain(images, targets=None)`` closing over `params`."""
  if params is None:
    explain_with.__doc__ = doc
    return explain_with

  def explain(images, targets=None):
    return explain_with(params, images, targets)

  explain.__doc__ = doc
  explain.__name__ = explain_with.__name__
  explain.params = params  # read by gradcam_jax.jit
  explain.with_params = explain_with
  return explain


def jit(explain: Callable, **jit_kwargs) -> Callable:
  """``jax.jit`` for explainers that keeps closed-over params out of the program.

  ``jax.jit(gradcam(apply_fn, params))`` works, but in jax 0.10 arrays a jitted
  function closes over are embedded in the program as constants: a VGG16 (138 M
  params) then takes seconds more to compile (see benchmarks/RESULTS.md). This
  function jits the params-as-argument form instead and binds `params` at call
  time: same signature, same results, the compile time of the fast form.
  Explainers built without params are passed to ``jax.jit`` unchanged.

  Example:
    >>> import jax, jax.numpy as jnp
    >>> split = Split(lambda p, x: jax.nn.relu(x * p), lambda p, a: a.mean((1, 2)))
    >>> explain = jit(gradcam(split, jnp.float32(2.0)))
    >>> explain(jnp.ones((1, 4, 4, 3))).cam.shape
    (1, 4, 4)
  """
  params = getattr(explain, "params", None)
  if params is None:
    return jax.jit(explain, **jit_kwargs)
  jitted = jax.jit(explain.with_params, **jit_kwargs)

  @functools.wraps(explain)
  def explain_jitted(images, targets=None):
    return jitted(params, images, targets)

  return explain_jitted


def gradcam(apply_fn, params=None, *, layer=None, target=class_logit,
            method="gradcam", eps: float = 1e-7) -> Callable:
  """Build a Grad-CAM explainer (cam fields only; guided fields are None).

  Args:
    apply_fn: ``apply_fn(variables, images) -> output``: a Flax linen ``model.apply``
      (or a ``functools.partial`` of it, e.g. with ``train=False``), or a
      :class:`Split` of two pure functions for any other JAX model.
    params: Flax variables (``{"params": ..., "batch_stats": ...}``) or a bare params
      tree. None builds the params-as-argument form ``explain(params, images,
      targets=None)``; otherwise ``explain(images, targets=None)``.
    layer: the target layer: a module path tuple (``("layer4",)``), a string
      (``"layer4/1"``, ``"block@1"`` for the second call), a :class:`LayerRef`, or
      None for the last spatial (B, h, w, C) activation.
    target: ``target_fn(output, targets) -> (B,)`` scores; default the class logit.
    method: a CAM method name (see ``gradcam_jax.METHODS``) or ``map(A, dA)``.
    eps: maps whose range is at most `eps` normalise to all zeros.

  Returns:
    ``explain`` returning an :class:`Explanation` with ``cam``, ``cam_raw``,
    ``logits`` and ``targets``. `targets` is an int array (B,) or None for the
    argmax class. Out-of-range targets raise when concrete; under ``jax.jit`` they
    score 0 and give all-zero maps.

  Example:
    >>> import jax, jax.numpy as jnp, flax.linen as nn
    >>> class Net(nn.Module):
    ...   @nn.compact
    ...   def __call__(self, x):
    ...     x = nn.relu(nn.Conv(4, (3, 3), name="conv")(x))
    ...     return nn.Dense(3)(x.mean((1, 2)))
    >>> net = Net()
    >>> variables = net.init(jax.random.key(0), jnp.ones((1, 8, 8, 3)))
    >>> explain = jax.jit(gradcam(net.apply, variables, layer="conv"))
    >>> explain(jnp.ones((2, 8, 8, 3))).cam.shape
    (2, 8, 8)

  References:
    Selvaraju et al., "Grad-CAM: Visual Explanations from Deep Networks via
    Gradient-based Localization", ICCV 2017.
  """
  layer, map_fn = parse_layer(layer), get_method(method)

  def gradcam_explain(params, images, targets=None):
    s = _Setup(apply_fn, params, images, targets, layer)

    def forward(delta, probe):
      return run(apply_fn, s.variables, images, s.layer,
                 lambda a: tap(a, probe) + delta)

    output, vjp = jax.vjp(forward, s.zeros(), s.zeros())
    ct, targets = s.cotangent(target, output)
    da, a = vjp(ct)
    cam, raw = _cam_maps(map_fn, a, da, images.shape[1:3], eps)
    return Explanation(cam, raw, None, None, output, targets)

  return _bind_params(gradcam_explain, params, gradcam.__doc__)


def guided_backprop(apply_fn, params=None, *, target=class_logit) -> Callable:
  """Build a guided-backpropagation explainer (guided field only; cam fields None).

  The gradient of the target score w.r.t. the input with every ReLU's backward rule
  replaced by ``g * [g > 0] * [x > 0]`` (see :func:`guided`). Arguments as for
  :func:`gradcam`.

  References:
    Springenberg et al., "Striving for Simplicity: The All Convolutional Net", 2014.
  """

  def guided_explain(params, images, targets=None):
    s = _Setup(apply_fn, params, images, targets, layer=False)
    output, vjp = jax.vjp(lambda x: guided(apply_fn)(s.variables, x), images)
    ct, targets = s.cotangent(target, output)
    (grad,) = vjp(ct)
    return Explanation(None, None, grad, None, output, targets)

  return _bind_params(guided_explain, params, guided_backprop.__doc__)


def guided_gradcam(apply_fn, params=None, *, layer=None, target=class_logit,
                   method="gradcam", eps: float = 1e-7) -> Callable:
  """Build a Guided Grad-CAM explainer: every field of :class:`Explanation`.

  One forward pass serves both halves: the guided-ReLU forward (bit-identical to
  the model's) yields the output, the guided input gradient and the activation;
  the plain gradient ``dy/dA`` for Grad-CAM then runs only the part of the model
  after the target layer. ``guided_gradcam = guided * cam[..., None]``. Arguments as
  for :func:`gradcam`.

  Example:
    >>> import jax, jax.numpy as jnp, flax.linen as nn
    >>> class Net(nn.Module):
    ...   @nn.compact
    ...   def __call__(self, x):
    ...     x = nn.relu(nn.Conv(4, (3, 3))(x))
    ...     return nn.Dense(3)(x.mean((1, 2)))
    >>> net = Net()
    >>> variables = net.init(jax.random.key(0), jnp.ones((1, 8, 8, 3)))
    >>> out = jax.jit(guided_gradcam(net.apply, variables))(jnp.ones((2, 8, 8, 3)))
    >>> out.guided_gradcam.shape, out.targets.shape
    ((2, 8, 8, 3), (2,))

  References:
    Selvaraju et al., "Grad-CAM", ICCV 2017, section 3.1.
  """
  layer, map_fn = parse_layer(layer), get_method(method)

  def guided_gradcam_explain(params, images, targets=None):
    s = _Setup(apply_fn, params, images, targets, layer)
    guided_run = guided(lambda v, x, probe: run(apply_fn, v, x, s.layer,
                                                lambda a: tap(a, probe)))
    output, vjp = jax.vjp(lambda x, probe: guided_run(s.variables, x, probe),
                          images, s.zeros())
    ct, targets = s.cotangent(target, output)
    grad, a = vjp(ct)
    # dy/dA with plain ReLUs: only the model after the layer runs (the part before
    # it is dead code once A is given, and is removed by XLA under jit).
    _, head_vjp = jax.vjp(
        lambda a: run(apply_fn, s.variables, images, s.layer, lambda _: a), a)
    (da,) = head_vjp(ct)
    cam, raw = _cam_maps(map_fn, a, da, images.shape[1:3], eps)
    return Explanation(cam, raw, grad, grad * cam[..., None].astype(grad.dtype),
                       output, targets)

  return _bind_params(guided_gradcam_explain, params, guided_gradcam.__doc__)
