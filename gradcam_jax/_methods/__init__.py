"""CAM methods, one :class:`Method` record each in :data:`ALL_METHODS`.

A gradient method (``gradient.py``) maps ``A`` (h, w, K) and ``dA = dy/dA`` (h, w, K)
of one example to a map (h, w) before the final ReLU (any spatial rank:
``(*spatial, K)`` to ``(*spatial)``); the explainers batch it with
``vmap`` and apply the ReLU. A perturbation method (``perturbation.py``: Score-CAM,
Ablation-CAM) weighs the channels by extra forward passes. Adding a method is one
function plus one :class:`Method` record below; the explainers dispatch through the
record's ``kind``, never by name. ``head.py``: the original CAM, whose weights are
the classifier's, found in the program of the model after the layer, and ShapleyCAM,
which needs that part's second derivative. ``fullgrad.py``: FullGrad, a method of the
whole model (kind ``"model"``): the input gradient and every convolution's and batch
normalisation's bias gradient, no target layer.
"""

from __future__ import annotations

from typing import Callable, NamedTuple

from gradcam_jax._errors import MethodError, format_choices
from gradcam_jax._methods.gradient import (
  MapFn,
  eigencam_map,
  eigengradcam_map,
  fem_map,
  gradcam_elementwise_map,
  gradcam_map,
  gradcampp_map,
  hirescam_map,
  kpcacam_map,
  layercam_map,
  randomcam_map,
  xgradcam_map,
)
from gradcam_jax._methods.fullgrad import fullgrad
from gradcam_jax._methods.head import cam, shapleycam
from gradcam_jax._targets import finer_target
from gradcam_jax._methods.perturbation import (
  ablationcam,
  iscam,
  scorecam,
  smoothgradcampp,
  sscam,
)

__all__ = ["ALL_METHODS", "METHODS", "Method", "get_method"]


class Method(NamedTuple):
  """One CAM method.

  Attributes:
    name: what ``method=`` takes.
    kind: ``"gradient"`` (`fn` is ``map(A, dA) -> (h, w)`` for one example),
      ``"perturbation"`` (`fn` is ``weights(Perturbation) -> (B, K)``, see
      ``gradcam_jax._methods.perturbation``) or ``"model"`` (`fn` reads the whole
      model, no target layer: ``fn(request) -> (output, targets, raw maps at input
      size)``, see ``gradcam_jax._methods.fullgrad``).
    fn: the method.
    paper: where it comes from.
    keyed: whether it draws at random: ``fn`` then takes a PRNG key (a gradient
      method as ``map(A, dA, key)``; a perturbation method as ``Perturbation.key``)
      and the explainer is called with ``key=``.
    target: the target function the method explains by default (None: the
      explainer's, the class logit); a ``target=`` given to the explainer wins.
  """

  name: str
  kind: str
  fn: Callable
  paper: str
  keyed: bool = False
  target: Callable | None = None


ALL_METHODS: dict[str, Method] = {
  m.name: m
  for m in (
    Method("gradcam", "gradient", gradcam_map, "Selvaraju et al., ICCV 2017"),
    Method("hirescam", "gradient", hirescam_map, "Draelos & Carin, 2020"),
    Method(
      "gradcam_elementwise",
      "gradient",
      gradcam_elementwise_map,
      "pytorch-grad-cam's GradCAMElementWise",
    ),
    Method("xgradcam", "gradient", xgradcam_map, "Fu et al., BMVC 2020"),
    Method("gradcam++", "gradient", gradcampp_map, "Chattopadhay et al., WACV 2018"),
    Method("layercam", "gradient", layercam_map, "Jiang et al., IEEE TIP 2021"),
    Method("eigencam", "gradient", eigencam_map, "Muhammad & Yeasin, IJCNN 2020"),
    Method("eigengradcam", "gradient", eigengradcam_map, "pytorch-grad-cam's EigenGradCAM"),
    Method("fem", "gradient", fem_map, "Fuad et al., IPTA 2020"),
    Method("kpcacam", "gradient", kpcacam_map, "Karmani et al., 2024"),
    Method("scorecam", "perturbation", scorecam, "Wang et al., CVPR Workshops 2020"),
    Method("ablationcam", "perturbation", ablationcam, "Desai & Ramaswamy, WACV 2020"),
    Method("sscam", "perturbation", sscam, "Wang et al., arXiv:2006.14255 (2020)", True),
    Method("iscam", "perturbation", iscam, "Naidu et al., arXiv:2010.03023 (2020)"),
    Method("randomcam", "gradient", randomcam_map, "pytorch-grad-cam's RandomCAM", True),
    Method("cam", "perturbation", cam, "Zhou et al., CVPR 2016"),
    Method("shapleycam", "perturbation", shapleycam, "Cai, arXiv:2501.06261 (2025)"),
    Method(
      "finercam", "gradient", gradcam_map, "Zhang et al., CVPR 2025", target=finer_target()
    ),
    Method("fullgrad", "model", fullgrad, "Srinivas & Fleuret, NeurIPS 2019"),
    Method(
      "smoothgradcam++",
      "perturbation",
      smoothgradcampp,
      "Omeiza et al., arXiv:1908.01224 (2019); torch-cam's SmoothGradCAMpp",
      True,
    ),
  )
}

# The gradient methods' map functions by name (``METHODS["gradcam"](A, dA)``).
METHODS: dict[str, MapFn] = {
  name: m.fn for name, m in ALL_METHODS.items() if m.kind == "gradient"
}

_WHY_NOT = {
  "perturbation": "it weighs channels by running the model after the layer again "
  "(masked passes, its weights or its second derivative), not by the gradient "
  "this explainer computes; use gcj.cam(..., method={name!r}) for its "
  "map (times gcj.guided_backprop for the guided product, as "
  "gradcam-jax explain --method {name} does)",
  "model": "it sums the input gradient and every convolution's and batch "
  "normalisation's bias gradient, not one layer's map; use gcj.cam(..., "
  "method={name!r}) for its map (times gcj.guided_backprop for the guided product, "
  "as gradcam-jax explain --method {name} does)",
}


def get_method(
  method: str | MapFn | Method,
  *,
  kinds=("gradient", "perturbation", "model"),
  where: str = "cam",
) -> Method:
  """The record of a method name; a :class:`Method` record as it is (a method with
  other options: ``ALL_METHODS["sscam"]._replace(fn=functools.partial(...))``); or a
  user's own ``map(A, dA) -> (h, w)`` function as a gradient method. `kinds` are
  the kinds the caller (`where`) runs."""
  if isinstance(method, Method):
    if method.kind not in kinds:
      why = _WHY_NOT.get(
        method.kind, "the kinds are 'gradient', 'perturbation' and 'model'"
      )
      raise MethodError(
        f"{where}: method: {method.name!r} is a {method.kind} method: "
        + why.format(name=method.name)
      )
    return method
  if callable(method):
    return Method(getattr(method, "__name__", "custom"), "gradient", method, "")
  valid = [name for name, m in ALL_METHODS.items() if m.kind in kinds]
  if method in valid:
    return ALL_METHODS[method]
  if method in ALL_METHODS:
    kind = ALL_METHODS[method].kind
    reason = f"{method!r} is a {kind} method: " + _WHY_NOT[kind].format(name=method)
  else:
    reason = f"got {method!r}"
  raise MethodError(
    f"{where}: method: expected one of the names below or a function "
    f"map(A, dA) -> (h, w); {reason}. Methods {where} runs:\n" + format_choices(valid)
  )
