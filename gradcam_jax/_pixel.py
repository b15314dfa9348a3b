"""Pixel-space attribution: explainers of the form of :func:`guided_backprop` whose
result is an attribution per input pixel and channel (``Explanation.attribution``,
in the images' layout), with ``cam`` its heat map: the maximum over channels of the
attribution's absolute value, normalised per image to [0, 1] (tf-keras-vis' saliency
map; Captum leaves the channel reduction to its visualisation).

* :func:`saliency`: the input gradient (Simonyan et al. 2014), its absolute value by
  default (Captum's ``Saliency(abs=True)``); SmoothGrad is
  ``noise_tunnel(saliency(...))``.
* :func:`input_x_gradient`: input times gradient (Captum's ``InputXGradient``).
* :func:`deconvnet`: the gradient with every ReLU's backward rule replaced by
  ``g * [g > 0]`` (Zeiler & Fergus 2014; Captum's ``Deconvolution``), the third rule
  beside the plain one and the guided one.
* :func:`integrated_gradients`: (x - x0) times the path integral of the gradient
  from the baseline x0 (Sundararajan et al. 2017), every step in one program, with
  Captum's integration rules; ``Explanation.delta`` is the completeness gap.
"""

from __future__ import annotations


import jax
import jax.numpy as jnp
import numpy as np

from gradcam_jax._adapters import pick
from gradcam_jax._errors import ArgumentError
from gradcam_jax._explainer import Explainer
from gradcam_jax._guided import replace_relus
from gradcam_jax._postprocess import normalize
from gradcam_jax._layout import Layout, check_layout
from gradcam_jax._request import Request, batch_first, over_targets
from gradcam_jax._targets import class_logit, default_targets, score_cotangent

__all__ = [
  "INTEGRATION_METHODS",
  "deconvnet",
  "deconvnet_relu",
  "input_x_gradient",
  "integrated_gradients",
  "saliency",
]

INTEGRATION_METHODS = (
  "gausslegendre",
  "riemann_left",
  "riemann_right",
  "riemann_middle",
  "riemann_trapezoid",
)


@jax.custom_vjp
def deconvnet_relu(x):
  """ReLU whose backward pass is the deconvnet's (Zeiler & Fergus 2014): forward
  ``max(x, 0)``, backward ``g_in = g_out * [g_out > 0]`` (the forward sign ignored).

  Example:
    >>> import jax, jax.numpy as jnp, gradcam_jax as gcj
    >>> _, vjp = jax.vjp(gcj.deconvnet_relu, jnp.array([-1.0, 2.0, 3.0]))
    >>> vjp(jnp.array([1.0, 1.0, -1.0]))[0]
    Array([1., 1., 0.], dtype=float32)
  """
  return jnp.maximum(x, 0)


deconvnet_relu.defvjp(
  lambda x: (jnp.maximum(x, 0), None),
  lambda _, g: (jnp.where(g > 0, g, jnp.zeros_like(g)),),
)


def _heat(attribution, layout: Layout, eps: float = 1e-7):
  """(B, T, ...) attributions -> (B, T, *spatial) maps in [0, 1]: max over channels
  of the absolute value, normalised per example."""
  heat = jnp.max(jnp.abs(attribution), axis=layout.channel_index()).astype(jnp.float32)
  flat = heat.reshape(-1, *heat.shape[2:])
  return normalize(flat, eps, tuple(range(1, flat.ndim))).reshape(heat.shape)


def _gradient_explainer(
  apply_fn,
  params,
  target,
  image_layout,
  name,
  doc,
  rule=None,
  times_input=False,
  absolute=False,
) -> Explainer:
  check_layout(image_layout)
  adapter, params = pick(apply_fn, params)
  model = adapter if rule is None else replace_relus(adapter, rule, name=name)

  def explain(params, images, targets=None):
    r = Request(
      adapter, params, images, targets, False, layout=image_layout, target_fn=target
    )
    output, targets, cts, pullback = r.scores_vjp(lambda x: model(r.variables, x), images)
    (grad,) = pullback(cts)
    attribution = batch_first(grad)
    if times_input:
      attribution = attribution * images[:, None].astype(attribution.dtype)
    if absolute:
      attribution = jnp.abs(attribution)
    return r.explanation(
      output, targets, cam=_heat(attribution, r.layout), attribution=attribution
    )

  explain.__doc__ = doc
  return Explainer(explain, params, name)


def saliency(
  apply_fn,
  params=None,
  *,
  target=class_logit,
  image_layout: str | None = None,
  absolute: bool = True,
) -> Explainer:
  """Build a saliency explainer: the gradient of the target score w.r.t. the input.

  ``attribution`` is ``|d score / d x|`` (Captum's ``Saliency(abs=True)``), or the
  raw signed gradient with ``absolute=False``; ``cam`` is the maximum over channels
  of its absolute value, normalised per image (tf-keras-vis' saliency map). Other
  arguments as for :func:`gradcam_jax.cam`. SmoothGrad:
  ``gcj.noise_tunnel(gcj.saliency(...))``.

  Example:
    >>> import jax, jax.numpy as jnp, gradcam_jax as gcj
    >>> split = gcj.Split(lambda p, x: x * p, lambda p, a: a.sum((1, 2)))
    >>> out = gcj.saliency(split, jnp.float32(-2.0))(jnp.ones((1, 2, 2, 3)), jnp.array([0]))
    >>> out.attribution[0, 0, 0], out.cam.shape
    (Array([2., 0., 0.], dtype=float32), (1, 2, 2))

  References:
    Simonyan et al., "Deep Inside Convolutional Networks: Visualising Image
    Classification Models and Saliency Maps", 2014.
  """
  return _gradient_explainer(
    apply_fn,
    params,
    target,
    image_layout,
    "saliency",
    saliency.__doc__,
    absolute=absolute,
  )


def input_x_gradient(
  apply_fn, params=None, *, target=class_logit, image_layout: str | None = None
) -> Explainer:
  """Build an input × gradient explainer: ``attribution = x * d score / d x``
  (Captum's ``InputXGradient``); ``cam`` as for :func:`saliency`.

  References:
    Shrikumar et al., "Not Just a Black Box: Learning Important Features Through
    Propagating Activation Differences", 2016.
  """
  return _gradient_explainer(
    apply_fn,
    params,
    target,
    image_layout,
    "input_x_gradient",
    input_x_gradient.__doc__,
    times_input=True,
  )


def deconvnet(
  apply_fn, params=None, *, target=class_logit, image_layout: str | None = None
) -> Explainer:
  """Build a deconvnet explainer: the input gradient with every ReLU's backward rule
  replaced by :func:`deconvnet_relu` (``g * [g > 0]``, the forward sign ignored), by
  the rewrite :func:`gradcam_jax.guided` uses (the same ReLUs recognised, the same
  ``NoReLUError`` when there are none). Captum's ``Deconvolution``; ``cam`` as for
  :func:`saliency`.

  References:
    Zeiler & Fergus, "Visualizing and Understanding Convolutional Networks", 2014.
  """
  return _gradient_explainer(
    apply_fn,
    params,
    target,
    image_layout,
    "deconvnet",
    deconvnet.__doc__,
    rule=deconvnet_relu,
  )


def _quadrature(method: str, steps: int):
  """Captum's integration rules: (alphas, weights) on [0, 1]."""
  if method == "gausslegendre":
    x, w = np.polynomial.legendre.leggauss(steps)
    return 0.5 * (x + 1), 0.5 * w
  weights = np.full(steps, 1.0 / steps)
  if method == "riemann_trapezoid":
    weights[0] /= 2
    weights[-1] /= 2
    return np.linspace(0, 1, steps), weights
  start, stop = {
    "riemann_left": (0.0, 1 - 1 / steps),
    "riemann_right": (1 / steps, 1.0),
    "riemann_middle": (1 / (2 * steps), 1 - 1 / (2 * steps)),
  }[method]
  return np.linspace(start, stop, steps), weights


def _baseline(baseline, images, layout: Layout):
  """`baseline` broadcast to the images: a scalar, a colour (C,), an image or a
  batch of the images' shape."""
  b = jnp.asarray(baseline, images.dtype)
  c = images.shape[layout.channel_index()]
  if b.ndim == 0 or b.shape == images.shape:
    return jnp.broadcast_to(b, images.shape)
  if b.shape == (c,):
    colour = b if layout.channels_last else b.reshape(c, *[1] * layout.rank)
    return jnp.broadcast_to(colour, images.shape)
  if b.shape == images.shape[1:]:
    return jnp.broadcast_to(b[None], images.shape)
  raise ArgumentError(
    f"baseline: expected a scalar, a colour of shape ({c},), an image of shape "
    f"{tuple(images.shape[1:])} or a batch of shape {tuple(images.shape)}; got "
    f"shape {tuple(b.shape)}."
  )


def integrated_gradients(
  apply_fn,
  params=None,
  *,
  baseline=0.0,
  steps: int = 50,
  method: str = "gausslegendre",
  batch_size: int | None = None,
  target=class_logit,
  image_layout: str | None = None,
) -> Explainer:
  """Build an Integrated Gradients explainer.

  ``attribution = (x - x0) * sum_s w_s * d score / d x (x0 + a_s (x - x0))`` over
  `steps` points of the straight path from the baseline ``x0`` to ``x``, with the
  points ``a_s`` and weights ``w_s`` of `method`: ``"gausslegendre"`` (Captum's
  default) or ``"riemann_left"``, ``"riemann_right"``, ``"riemann_middle"``,
  ``"riemann_trapezoid"``. The steps run in one program (vmapped; in chunks of
  `batch_size` steps under ``lax.map`` when given, to bound memory). The targets are
  those of the images themselves (the argmax of their output by default), never of
  the path's points. ``delta`` is the completeness gap, Captum's
  ``convergence_delta``: ``sum(attribution) - (score(x) - score(x0))`` per example
  (and target). ``cam`` as for :func:`saliency`. Captum's ``"riemann_trapezoid"``
  weighs its n points on [0, 1] by 1/n (halved at the ends), so the weights sum to
  (n - 1)/n; matched here as its code does it.

  Args:
    baseline: a scalar, a colour (C,), an image, or a batch of the images' shape.
    steps: points on the path (at least 2).

  References:
    Sundararajan et al., "Axiomatic Attribution for Deep Networks", 2017.
  """
  check_layout(image_layout)
  if method not in INTEGRATION_METHODS:
    raise ArgumentError(
      f"method: expected one of {INTEGRATION_METHODS} (Captum's rules); got {method!r}."
    )
  if not isinstance(steps, int) or steps < 2:
    raise ArgumentError(f"steps: expected an integer of at least 2; got {steps!r}.")
  if batch_size is not None and (not isinstance(batch_size, int) or batch_size < 1):
    raise ArgumentError(
      f"batch_size: expected None or a positive integer; got {batch_size!r}."
    )
  adapter, params = pick(apply_fn, params)
  alphas, weights = _quadrature(method, steps)

  def explain(params, images, targets=None):
    r = Request(
      adapter, params, images, targets, False, layout=image_layout, target_fn=target
    )
    run = lambda x: adapter(r.variables, x)  # noqa: E731
    output = run(images)
    targets = r.targets
    if targets is None:
      found = default_targets(output, r.batch, target)
      targets = None if found is None else found[:, None]
    x0 = _baseline(baseline, images, r.layout)
    diff = images - x0
    path = (
      x0[None]
      + jnp.asarray(alphas, images.dtype).reshape(-1, *[1] * images.ndim) * diff[None]
    )

    def per_target(t):
      def gradient(x):
        out, vjp = jax.vjp(run, x)
        return vjp(score_cotangent(target, out, t, r.batch))[0]

      grads = (
        jax.vmap(gradient)(path)
        if batch_size is None
        else jax.lax.map(gradient, path, batch_size=batch_size)
      )
      total = jnp.tensordot(jnp.asarray(weights, grads.dtype), grads, 1)
      attribution = diff.astype(total.dtype) * total
      gap = target(output, t) - target(run(x0), t)
      flat = attribution.reshape(r.batch, -1).sum(1)
      return attribution, flat - gap

    attribution, delta = batch_first(over_targets(per_target, targets))
    return r.explanation(
      output,
      targets,
      cam=_heat(attribution, r.layout),
      attribution=attribution,
      delta=delta,
    )

  explain.__doc__ = integrated_gradients.__doc__
  return Explainer(explain, params, "integrated_gradients")
