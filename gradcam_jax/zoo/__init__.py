"""Model zoo: the shipped demo model and torchvision/Keras architectures in Flax.

    model = gradcam_jax.zoo.load("demo")
    explain = gcj.jit(gcj.guided_gradcam(model.apply_fn, model.variables,
                                         layer=model.layer))
    out = explain(model.preprocess(images_uint8))
"""

from gradcam_jax.zoo._load import ZooModel
from gradcam_jax.zoo._load import decode_predictions
from gradcam_jax.zoo._load import load
from gradcam_jax.zoo._load import NAMES

__all__ = ("NAMES", "ZooModel", "decode_predictions", "load")
