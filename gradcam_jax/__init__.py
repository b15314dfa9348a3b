"""gradcam-jax: Grad-CAM, guided backprop and Guided Grad-CAM as pure JAX functions.

    import gradcam_jax as gcj
    explain = jax.jit(gcj.guided_gradcam(model.apply, variables))
    out = explain(images)          # out.cam, out.guided_gradcam, ...

Module map (data flows down the first block: adapter -> explainer -> method ->
post-processing -> Explanation):

    _adapters/          one module per kind of model, one protocol; pick() chooses
      linen.py nnx.py equinox.py keras.py split.py
    _layers.py          naming layers: LayerRef, LayerInfo, select_layer
    _model.py           edits at a layer (tap, replace), list_layers, model_failure
    _inputs.py          checks of the images
    _targets.py         target scores (class_logit, ...) and target checks
    _explain.py         the explainers: cam, gradcam, guided_backprop, guided_gradcam
    _setup.py           what one trace of an explainer knows: inputs checked, layer
    _methods.py         one record per CAM method (ALL_METHODS) and the gradient methods
    _perturb.py         Score-CAM and Ablation-CAM channel weights
    _guided.py          the guided-ReLU rewrite of a function (gcj.guided)
    _relus.py           the guided ReLU, finding ReLUs in a jaxpr, guided_report
    _fast_vjp.py        faster backward rules for max pools and strided convolutions
    _postprocess.py     upsample and normalize maps
    _result.py          Explanation, the result pytree
    _forms.py           Explainer (both API forms, a pytree) and gcj.jit
    _smooth.py          noise_tunnel and augment
    _reshape.py         tokens_to_grid, channels_last
    _map_stats.py       ranks and Gaussian kernels for metrics and sanity
    _errors.py          the error classes
    metrics.py          faithfulness metrics (deletion, insertion, ROAD, ...)
    sanity.py           randomisation sanity checks
    visualize.py        overlays and panels
    io.py               finding, reading and resizing image files
    cli.py              the gradcam-jax command
    _folder_job.py      the explain command's pipeline: decode, explain, write
    _journal.py         its append-only index (claims and results)
    _outputs.py         its output names and atomic writes
    _report.py          its report.html
    _demo_command.py    the demo command
    _bench.py           the bench command
    _model_option.py    the command's --model/--weights: which model, its weights' identity
    _xla_setting.py     the XLA flags the command runs under
    zoo/                models: demo (shipped), vgg16, resnet50, vit
      _load.py          zoo.load and ZooModel
      _modules.py       the zoo's ReLU and MaxPool modules
      _download.py      weights="imagenet": Keras' published file, fetched into a cache
      keras_models.py   Keras models for the command line (keras:FILE, applications)
      demo.py demo_eval.py train_demo.py digit_scenes.py imagenet.py vgg.py
      resnet.py vit.py
"""

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
from gradcam_jax._forms import Explainer
from gradcam_jax._forms import jit
from gradcam_jax._relus import GuidedReport
from gradcam_jax._guided import guided
from gradcam_jax._relus import guided_report
from gradcam_jax._relus import guided_relu
from gradcam_jax._layers import LayerInfo
from gradcam_jax._layers import LayerRef
from gradcam_jax._methods import ALL_METHODS
from gradcam_jax._methods import METHODS
from gradcam_jax._methods import Method
from gradcam_jax._adapters.keras import keras_params
from gradcam_jax._adapters.split import Split
from gradcam_jax._model import list_layers
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
from gradcam_jax._targets import segmentation_target

__version__ = "0.1.0"

__all__ = (
    "ArgumentError",
    "Explainer",
    "Explanation",
    "GradCAMError",
    "ImageError",
    "LayerInfo",
    "LayerNotFoundError",
    "LayerRef",
    "LayerShapeError",
    "LayerSpecError",
    "ALL_METHODS",
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
    "cam",
    "channels_last",
    "class_probability",
    "detection_target",
    "embedding_target",
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
