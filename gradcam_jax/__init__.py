"""gradcam-jax: Grad-CAM, guided backprop and Guided Grad-CAM as pure JAX functions.

    import gradcam_jax as gcj
    explain = jax.jit(gcj.guided_gradcam(model.apply, variables))
    out = explain(images)          # out.cam, out.guided_gradcam, ...

The tree says who each part is for. The library is this namespace (``gcj.*``) and
the private modules beside it; data flows one way through them: ``_adapters/`` (one
class per framework behind one protocol) -> ``_request`` (one call's images,
targets and layers, checked; the scores' pullback) -> ``_explain`` (the explainers; ``_perturbation_maps``, the run of the methods
that read the model after the layer; ``_pixel``, the pixel-space ones;
``_factorization``, Deep Feature Factorization)
-> ``_methods/`` (one record per CAM method) -> ``_postprocess`` -> ``_result``
(the Explanation). Beside that flow: ``_layers`` (naming and listing layers),
``_edits`` (edits at a layer), ``_loops`` (edits at one iteration of a scanned
stack), ``_reach`` (``layer=None`` with a reshape: a layer that reaches the output),
``_inputs`` and ``_targets`` (checks, target
scores), ``_layout`` (the inputs' layouts: signals, images, volumes, any channel axis), ``_guided/`` (the guided-ReLU rewrite), ``_explainer`` (the Explainer
value, ``gcj.jit``), ``_smooth`` (noise and augmentation wrappers), ``_reshape``
(token grids, channels last), ``_errors``, and ``_ranks_blur`` (pixel ranks and
blur kernels for the metrics). Public edges: ``metrics``, ``sanity``,
``visualize``, ``io``, ``media`` (signals, volumes and clips: .npy, NIfTI, video) and
``zoo/`` (models; ``zoo/training/`` retrains the shipped
one). The command: ``cli/`` (``gradcam-jax``), which the library does not import
(``io.read_index``, reading a job's index, reaches it on use). Each folder's
``__init__`` lists its modules.
"""

from gradcam_jax._adapters.keras import keras_params
from gradcam_jax._adapters.split import Split
from gradcam_jax._errors import ArgumentError
from gradcam_jax._errors import GradCAMError
from gradcam_jax._errors import ImageError
from gradcam_jax._errors import LayerNotFoundError
from gradcam_jax._errors import LayerShapeError
from gradcam_jax._errors import LayerSpecError
from gradcam_jax._errors import MethodError
from gradcam_jax._errors import ModelError
from gradcam_jax._errors import NoReLUError
from gradcam_jax._errors import TargetError
from gradcam_jax._errors import UnsupportedError
from gradcam_jax._errors import WeightsError
from gradcam_jax._explain import cam
from gradcam_jax._explain import gradcam
from gradcam_jax._explain import guided_backprop
from gradcam_jax._explain import guided_gradcam
from gradcam_jax._explainer import Explainer
from gradcam_jax._factorization import Factorization
from gradcam_jax._factorization import feature_factorization
from gradcam_jax._factorization import nmf
from gradcam_jax._explainer import jit
from gradcam_jax._guided import GuidedReport
from gradcam_jax._guided import guided
from gradcam_jax._guided import guided_relu
from gradcam_jax._guided import guided_report
from gradcam_jax._layout import LAYOUTS
from gradcam_jax._layers import LayerInfo
from gradcam_jax._layers import LayerRef
from gradcam_jax._layers import list_layers
from gradcam_jax._methods import ALL_METHODS
from gradcam_jax._methods import METHODS
from gradcam_jax._methods import Method
from gradcam_jax._pixel import INTEGRATION_METHODS
from gradcam_jax._pixel import deconvnet
from gradcam_jax._pixel import deconvnet_relu
from gradcam_jax._pixel import input_x_gradient
from gradcam_jax._pixel import integrated_gradients
from gradcam_jax._pixel import saliency
from gradcam_jax._postprocess import normalize
from gradcam_jax._postprocess import upsample
from gradcam_jax._reshape import channels_last
from gradcam_jax._reshape import tokens_to_grid
from gradcam_jax._result import Explanation
from gradcam_jax._smooth import augment
from gradcam_jax._smooth import noise_tunnel
from gradcam_jax._targets import class_logit
from gradcam_jax._targets import class_probability
from gradcam_jax._targets import detection_target
from gradcam_jax._targets import embedding_target
from gradcam_jax._targets import finer_target
from gradcam_jax._targets import rest_target
from gradcam_jax._targets import segmentation_target

__version__ = "0.1.0"

__all__ = (
  "ArgumentError",
  "Explainer",
  "Explanation",
  "Factorization",
  "feature_factorization",
  "nmf",
  "GradCAMError",
  "ImageError",
  "LayerInfo",
  "LayerNotFoundError",
  "LayerRef",
  "LayerShapeError",
  "LayerSpecError",
  "ALL_METHODS",
  "INTEGRATION_METHODS",
  "LAYOUTS",
  "METHODS",
  "Method",
  "MethodError",
  "ModelError",
  "NoReLUError",
  "Split",
  "augment",
  "TargetError",
  "UnsupportedError",
  "WeightsError",
  "class_logit",
  "deconvnet",
  "deconvnet_relu",
  "input_x_gradient",
  "integrated_gradients",
  "saliency",
  "cam",
  "channels_last",
  "class_probability",
  "detection_target",
  "embedding_target",
  "finer_target",
  "rest_target",
  "gradcam",
  "guided",
  "guided_backprop",
  "guided_gradcam",
  "guided_relu",
  "guided_report",
  "GuidedReport",
  "jit",
  "keras_params",
  "list_layers",
  "noise_tunnel",
  "normalize",
  "segmentation_target",
  "tokens_to_grid",
  "upsample",
)
