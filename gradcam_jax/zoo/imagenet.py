"""ImageNet models from weight files the user downloaded: VGG16 and ResNet-50.

Readers: a torchvision state dict as ``.safetensors`` (no torch needed) or ``.pth``
(needs torch), and for VGG16 the Keras file
``vgg16_weights_tf_dim_ordering_tf_kernels.h5`` (needs h5py), which keeps Keras'
layer names (``block5_conv3``) and caffe-style BGR preprocessing, so the classic
Keras Grad-CAM pipeline runs unchanged in JAX. Every reader checks that the file
holds exactly the model's weights and names what is missing or unexpected.
"""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from gradcam_jax._errors import WeightsError

from gradcam_jax.zoo._zoo_model import ZooModel
from gradcam_jax.zoo.resnet import ResNet50
from gradcam_jax.zoo.vgg import VGG16

__all__ = [
  "load",
  "class_names",
  "torchvision_preprocess",
  "caffe_preprocess",
  "from_torchvision",
  "from_keras_vgg16",
  "read_state_dict",
]

IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], np.float32)
CAFFE_MEAN_BGR = np.array([103.939, 116.779, 123.68], np.float32)

WHERE = {
  "vgg16": "torchvision's vgg16 IMAGENET1K_V1 weights (vgg16-397923af.pth, or its "
  "state dict saved with safetensors), or Keras' "
  "vgg16_weights_tf_dim_ordering_tf_kernels.h5",
  "resnet50": "torchvision's resnet50 IMAGENET1K_V1/V2 weights (resnet50-*.pth, or "
  "its state dict saved with safetensors)",
}


def class_names() -> tuple[str, ...]:
  """The 1000 ImageNet class names in the standard index order (Keras spelling)."""
  path = resources.files("gradcam_jax") / "assets" / "imagenet_classes.json"
  return tuple(name for _, name in json.loads(path.read_text()))


def _channels(v: np.ndarray, x) -> np.ndarray:
  return v.reshape((1,) * (x.ndim - 1) + (-1,))  # explicit rank: no implicit promotion


def torchvision_preprocess(images) -> jax.Array:
  """uint8 RGB -> float32 normalised with the ImageNet mean and std (torchvision)."""
  x = jnp.asarray(images, jnp.float32) / 255.0
  return (x - _channels(IMAGENET_MEAN, x)) / _channels(IMAGENET_STD, x)


def caffe_preprocess(images) -> jax.Array:
  """uint8 RGB -> float32 BGR minus the caffe means (Keras' VGG16 preprocessing)."""
  x = jnp.asarray(images, jnp.float32)[..., ::-1]
  return x - _channels(CAFFE_MEAN_BGR, x)


def read_state_dict(path: Path) -> dict[str, np.ndarray]:
  """A torchvision state dict from ``.safetensors`` or ``.pth``, as NumPy arrays
  (a ``.pth`` in torch.save's zip format is read without torch)."""
  path = Path(path)
  if path.suffix == ".safetensors":
    from safetensors.numpy import load_file

    return dict(load_file(str(path)))
  if path.suffix in (".pth", ".pt", ".bin"):
    import zipfile

    if zipfile.is_zipfile(path):  # torch.save's format since torch 1.6: no torch needed
      from gradcam_jax.zoo._torch_file import read_torch_file

      return {
        k: v.astype(np.float32) if np.issubdtype(v.dtype, np.floating) else v
        for k, v in read_torch_file(path).items()
      }
    try:
      import torch
    except ImportError as err:
      raise ImportError(
        f"{path.name}: reading .pth files needs torch "
        "(pip install torch), or convert the file to .safetensors."
      ) from err
    state = torch.load(str(path), map_location="cpu", weights_only=True)
    state = state.get("state_dict", state) if isinstance(state, dict) else state
    return {
      k: v.detach().float().numpy() if v.is_floating_point() else v.numpy()
      for k, v in state.items()
    }
  raise WeightsError(
    f"weights file {path.name}: expected .safetensors, .pth or (vgg16) "
    f"Keras .h5; got suffix {path.suffix!r}."
  )


def _flax_path(name: str, key: str) -> tuple[tuple[str, ...], str]:
  """torchvision key -> (module path, param name) in our Flax models."""
  *mods, leaf = key.split(".")
  if name == "vgg16":
    path = ("_".join(mods),)  # features.28 -> features_28
  else:
    path = tuple(mods)
    if "downsample" in path:  # layer1.0.downsample.1 -> layer1/0/downsample_1
      i = path.index("downsample")
      path = path[:i] + (f"downsample_{path[i + 1]}",) + path[i + 2 :]
  return path, leaf


def _set(tree: dict, path, value) -> None:
  for p in path[:-1]:
    tree = tree.setdefault(p, {})
  tree[path[-1]] = value


def _check_and_cast(variables, abstract, source: str):
  """Every leaf present with the right shape; report all mismatches at once."""

  def flat(tree):
    return {
      "/".join(str(getattr(k, "key", k)) for k in path): v
      for path, v in jax.tree_util.tree_leaves_with_path(tree)
    }

  flat, want = flat(variables), flat(abstract)
  problems = [f"  missing {k} {v.shape}" for k, v in want.items() if k not in flat]
  problems += [f"  unexpected {k} {np.shape(v)}" for k, v in flat.items() if k not in want]
  problems += [
    f"  {k}: expected shape {want[k].shape}, got {np.shape(v)}"
    for k, v in flat.items()
    if k in want and np.shape(v) != want[k].shape
  ]
  if problems:
    raise WeightsError(
      f"{source}: the file does not hold this model's weights "
      f"({len(want)} arrays expected, {len(flat)} found):\n"
      + "\n".join(problems[:30])
      + (f"\n  ... {len(problems) - 30} more" if len(problems) > 30 else "")
    )
  return jax.tree_util.tree_map(lambda a, s: jnp.asarray(a, s.dtype), variables, abstract)


def from_torchvision(name: str, state: dict[str, np.ndarray], module=None):
  """Flax variables of our `name` model from a torchvision state dict."""
  variables: dict = {"params": {}}
  for key, value in state.items():
    if key.endswith("num_batches_tracked"):
      continue
    path, leaf = _flax_path(name, key)
    value = np.asarray(value, np.float32)
    if leaf == "weight" and value.ndim == 4:  # conv (O, I, kh, kw) -> (kh, kw, I, O)
      _set(variables["params"], path + ("kernel",), value.transpose(2, 3, 1, 0))
    elif leaf == "weight" and value.ndim == 2:  # linear (O, I) -> (I, O)
      _set(variables["params"], path + ("kernel",), value.T)
    elif leaf == "weight":  # batch norm
      _set(variables["params"], path + ("scale",), value)
    elif leaf == "bias":
      _set(variables["params"], path + ("bias",), value)
    elif leaf in ("running_mean", "running_var"):
      stats = variables.setdefault("batch_stats", {})
      _set(stats, path + ("mean" if leaf == "running_mean" else "var",), value)
    else:
      _set(variables["params"], path + (leaf,), value)  # reported as unexpected
  module = module or (VGG16() if name == "vgg16" else ResNet50())
  return _check_and_cast(variables, _abstract(module), f"torchvision {name}")


def from_keras_vgg16(path: Path):
  """Flax variables of ``VGG16(naming="keras")`` from a Keras VGG16 ``.h5`` file."""
  import h5py

  params: dict = {}
  with h5py.File(str(path), "r") as f:
    group = f["model_weights"] if "model_weights" in f else f
    names = [n.decode() if isinstance(n, bytes) else n for n in group.attrs["layer_names"]]
    for layer in names:
      g = group[layer]
      weight_names = [
        w.decode() if isinstance(w, bytes) else w for w in g.attrs["weight_names"]
      ]
      if not weight_names:
        continue  # input, pooling and flatten layers
      kernel, bias = (np.asarray(g[w], np.float32) for w in weight_names)
      if layer.startswith("block"):
        params[layer] = {"conv": {"kernel": kernel, "bias": bias}}
      else:
        if layer == "fc1":  # Keras flattens (7, 7, 512); our model flattens (512, 7, 7)
          kernel = (
            kernel.reshape(7, 7, 512, -1).transpose(2, 0, 1, 3).reshape(7 * 7 * 512, -1)
          )
        params[layer] = {"kernel": kernel, "bias": bias}
  return _check_and_cast(
    {"params": params}, _abstract(VGG16(naming="keras")), f"Keras VGG16 {Path(path).name}"
  )


def _abstract(module):
  return jax.eval_shape(module.init, jax.random.key(0), jnp.zeros((1, 224, 224, 3)))


def load(name: str, weights=None, *, random_init: bool = False) -> ZooModel:
  """See :func:`gradcam_jax.zoo.load`."""
  names = class_names()
  if isinstance(weights, str) and weights == "imagenet":
    from gradcam_jax.zoo._download import weights_file

    weights = weights_file(name)
  if weights is None:
    if not random_init:
      raise WeightsError(
        f"zoo.load({name!r}): expected a weights file; got none. Pass "
        f"weights=PATH with {WHERE[name]}"
        + ", or weights='imagenet' to download the published file into the cache"
        + ". For benchmarks, random_init=True gives random weights."
      )
    module = VGG16() if name == "vgg16" else ResNet50()
    variables = jax.jit(module.init)(jax.random.key(0), jnp.zeros((1, 224, 224, 3)))
    preprocess = torchvision_preprocess
  elif name == "vgg16" and Path(weights).suffix in (".h5", ".hdf5"):
    module = VGG16(naming="keras")
    variables, preprocess = from_keras_vgg16(weights), caffe_preprocess
  else:
    module = VGG16() if name == "vgg16" else ResNet50()
    variables = from_torchvision(name, read_state_dict(weights), module)
    preprocess = torchvision_preprocess
  if name == "vgg16":
    layer = "block5_conv3" if module.naming == "keras" else "features_29"
  else:
    layer = "layer4"
  keras = preprocess is caffe_preprocess
  origin = (
    "random weights (timing only: the classes mean nothing)"
    if weights is None
    else f"weights {Path(weights).name}"
  )
  about = f"{name} (ImageNet, 1000 classes), {origin}; preprocessing: " + (
    "Keras caffe-style (BGR minus channel means); resize: squash to 224x224"
    if keras
    else "torchvision (ImageNet mean/std); resize: shorter side to 256, centre crop 224x224"
  )
  return ZooModel(
    name,
    module,
    module.apply,
    variables,
    layer,
    preprocess,
    names,
    (224, 224),
    "squash" if keras else "crop",
    about,
  )
