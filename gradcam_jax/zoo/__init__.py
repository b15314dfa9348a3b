"""Model zoo: the shipped demo model and torchvision/Keras architectures in Flax.

Models: ``demo.py`` (shipped, trained on digit scenes), ``vgg.py``, ``resnet.py``,
``vit.py`` (with ``_modules.py``, their ReLU and MaxPool modules), ``imagenet.py``
(ImageNet weights from torchvision/Keras files), ``keras_models.py`` (Keras models
for the command line). Loading: ``_load.py`` (``zoo.load``), ``_zoo_model.py``
(``ZooModel``), ``_download.py`` (published weights, fetched once into a cache),
``_torch_file.py`` (``torch.save`` files read without torch or its pickle).
``training/`` retrains the demo model (data, training, evaluation). In use::

    model = gradcam_jax.zoo.load("demo")
    explain = gcj.jit(gcj.guided_gradcam(model.apply_fn, model.variables,
                                         layer=model.layer))
    out = explain(model.preprocess(images_uint8))
"""

from gradcam_jax.zoo._load import decode_predictions
from gradcam_jax.zoo._load import load
from gradcam_jax.zoo._load import NAMES
from gradcam_jax.zoo._zoo_model import ZooModel

__all__ = ("NAMES", "ZooModel", "decode_predictions", "load")
