"""The command's model options, one definition for ``explain`` and ``bench``:
``--model``/``--weights``/``--random-weights`` (which model runs: a zoo name,
``keras.applications.NAME``, ``keras:FILE.keras`` or ``MODULE:FACTORY``) and
``--layer``/``--method``; loading the model; and the identity of its weights,
recorded with every result. Every bad choice is a :class:`UsageError` in
command-line words."""

from __future__ import annotations

import argparse
import hashlib
import importlib
import os
from pathlib import Path

from gradcam_jax.cli.usage import UsageError

__all__ = ["add_model_options", "input_spec", "load_model"]

RANDOM_SEED = 0  # --random-weights draws from it: every process draws the same weights

MODEL_FORMS = (
  "demo | vgg16 | resnet50 | keras.applications.NAME (e.g. "
  "keras.applications.VGG16) | keras:FILE.keras | MODULE:FACTORY"
)


def add_model_options(parser) -> None:
  """--model, --weights, --random-weights, --layer and --method, as every
  subcommand that runs a model takes them."""
  from gradcam_jax._methods import ALL_METHODS

  parser.add_argument("--model", default="demo", help=MODEL_FORMS)
  parser.add_argument(
    "--weights",
    help="imagenet (vgg16/resnet50: the published file, downloaded once into the "
    "cache and hash-checked), a weights file for vgg16/resnet50 (.safetensors, .pth, "
    'or Keras .h5 for vgg16; .safetensors/.h5 need pip install "gradcam-jax[weights]"'
    "), a checkpoint folder for demo, or the file a keras.applications model loads "
    "(keras.applications default: Keras downloads its ImageNet weights)",
  )
  parser.add_argument(
    "--random-weights",
    action="store_true",
    help="vgg16/resnet50/keras.applications with random weights (timing runs)",
  )
  parser.add_argument(
    "--output",
    metavar="NAME",
    help="for a keras:FILE.keras model of several outputs: the one to explain "
    "(the name of the layer that computes it)",
  )
  parser.add_argument(
    "--layer",
    help="target layer, e.g. features_29 or layer4 (default: the model's usual "
    "Grad-CAM layer, else the last spatial activation; the start-up line names it; "
    "gradcam-jax layers --model ... lists them all)",
  )
  methods = [name for name, m in ALL_METHODS.items() if not m.keyed]

  def method(name: str) -> str:
    if name in ALL_METHODS and ALL_METHODS[name].keyed:
      raise argparse.ArgumentTypeError(
        f"{name} draws at random, and the command gives each input one result "
        "whatever batch it lands in (a resumed job equals an uninterrupted one); "
        f"run it from Python: gcj.cam(..., method={name!r})(images, key=...)"
      )
    return name

  parser.add_argument(
    "--method",
    default="gradcam",
    type=method,
    choices=methods,
    metavar="METHOD",
    help="CAM method: " + ", ".join(methods),
  )


def weights_digest(variables) -> str:
  """sha256 of the weights a run uses: every leaf's path, dtype, shape and bytes, so
  the identity changes whenever the weights do, wherever they came from (a file, a
  factory, a download, a random draw)."""
  import jax
  import numpy as np

  digest = hashlib.sha256()
  for path, leaf in jax.tree_util.tree_flatten_with_path(variables)[0]:
    if isinstance(leaf, jax.Array) and jax.dtypes.issubdtype(
      leaf.dtype, jax.dtypes.prng_key
    ):
      leaf = jax.random.key_data(leaf)
    a = np.ascontiguousarray(np.asarray(leaf))
    digest.update(f"{jax.tree_util.keystr(path)} {a.dtype} {a.shape};".encode())
    digest.update(a.reshape(-1).view(np.uint8))
  return "sha256:" + digest.hexdigest()[:16]


def input_spec(model):
  """The shape and dtype of a batch of one of `model`'s inputs, preprocessed (its
  preprocessing is run on one input of zeros: it may be plain NumPy, which shapes
  alone cannot trace)."""
  import jax
  import numpy as np

  from gradcam_jax.cli.inputs import input_dtype

  shape = (1, *model.input_size, model.channels)
  x = np.asarray(model.preprocess(np.zeros(shape, input_dtype(model.media))))
  return jax.ShapeDtypeStruct(x.shape, x.dtype)


def load_model(
  spec: str, weights: str | None, random_weights: bool, output: str | None = None
):
  """(ZooModel, weights identity); UsageError in CLI words for every bad choice."""
  from gradcam_jax import zoo
  from gradcam_jax.zoo._zoo_model import OUTPUTS

  if output is not None and not spec.startswith("keras:"):
    raise UsageError(
      f"--output {output}: only a keras:FILE.keras model can have several outputs; "
      f"--model {spec} has one."
    )
  imagenet = weights == "imagenet" and not Path(weights).exists()
  if (
    imagenet
    and spec not in ("vgg16", "resnet50")
    and not spec.startswith("keras.applications.")
  ):
    raise UsageError(
      f"--weights imagenet: published weights are downloaded for vgg16, resnet50 and "
      f"keras.applications models; --model {spec} takes a weights file or folder."
    )
  if weights is not None and not imagenet and not Path(weights).exists():
    raise UsageError(f"--weights {weights}: no such file or folder.")
  try:
    if spec.startswith("keras:") or spec.startswith("keras.applications."):
      model = _load_keras(spec, weights, random_weights, output)
    elif ":" in spec:
      module, _, factory = spec.partition(":")
      try:
        make = getattr(importlib.import_module(module), factory)
      except ImportError as err:
        raise UsageError(f"--model {spec}: cannot import module {module!r} ({err}).")
      except AttributeError:
        raise UsageError(f"--model {spec}: module {module!r} has no {factory!r}.")
      model = make(**({"weights": weights} if weights else {}))
      missing = [f for f in zoo.ZooModel._fields[:8] if not hasattr(model, f)]
      if missing:
        raise UsageError(
          f"--model {spec}: expected the factory to return a "
          f"gradcam_jax.zoo.ZooModel; it lacks {missing}."
        )
      _check_media(spec, model)
      if getattr(model, "output", "logits") not in OUTPUTS:
        raise UsageError(
          f"--model {spec}: the factory's ZooModel has output={model.output!r}; "
          f"expected one of {', '.join(OUTPUTS)}."
        )
    elif spec not in zoo.NAMES:
      raise UsageError(
        f"--model: expected one of {', '.join(zoo.NAMES)}, "
        f"keras.applications.NAME, keras:FILE.keras or "
        f"MODULE:FACTORY; got {spec!r}."
      )
    elif spec != "demo" and weights is None and not random_weights:
      from gradcam_jax.zoo._download import describe
      from gradcam_jax.zoo.imagenet import WHERE

      raise UsageError(
        f"--model {spec} needs weights: --weights imagenet (downloads "
        f"{describe(spec)} once into the cache), --weights FILE ({WHERE[spec]}), "
        "or --random-weights for a timing run."
      )
    else:
      model = zoo.load(spec, weights, random_init=random_weights)
  except ModuleNotFoundError as err:
    package = (err.name or "").split(".")[0]
    if package in ("safetensors", "h5py", "torch"):
      extra = (
        "pip install torch" if package == "torch" else 'pip install "gradcam-jax[weights]"'
      )
      raise UsageError(
        f"--weights {weights}: reading this file needs {package}, "
        f"which is not installed; run: {extra}"
      ) from None
    raise
  except ValueError as err:  # a weights file that does not hold the model; a download
    raise UsageError(f"--weights {weights}: {err}") from None
  identity = weights_digest(model.variables)  # once per run, of what runs
  if random_weights:
    identity = f"random (seed {RANDOM_SEED}) {identity}"
  return model, identity


def _check_media(spec: str, model) -> None:
  """A factory's ZooModel says what it explains, consistently: a known media, an
  input size of that media's rank, a whole number of channels (3 for RGB media)."""
  from gradcam_jax.zoo._zoo_model import MEDIA

  media, size = getattr(model, "media", "image"), tuple(model.input_size)
  channels = getattr(model, "channels", 3)
  if media not in MEDIA:
    raise UsageError(
      f"--model {spec}: the factory's ZooModel has media={media!r}; expected one of "
      f"{', '.join(MEDIA)}."
    )
  if len(size) != MEDIA[media] or not all(isinstance(n, int) and n > 0 for n in size):
    raise UsageError(
      f"--model {spec}: media {media!r} needs an input_size of {MEDIA[media]} sizes > 0; "
      f"the factory's ZooModel has input_size={size!r}."
    )
  rgb = media in ("image", "video")
  if not isinstance(channels, int) or channels < 1 or (rgb and channels != 3):
    raise UsageError(
      f"--model {spec}: media {media!r} needs channels="
      f"{'3 (RGB)' if rgb else 'a whole number >= 1'}; the factory's ZooModel has "
      f"channels={channels!r}."
    )


def _load_keras(spec: str, weights, random_weights: bool, output=None):
  """--model keras:FILE.keras or keras.applications.NAME (Keras on JAX: the
  backend is set for this process when KERAS_BACKEND is unset)."""
  os.environ.setdefault("KERAS_BACKEND", "jax")
  try:
    import keras  # noqa: F401
  except ImportError:
    raise UsageError(
      f"--model {spec}: needs Keras 3, which is not installed; run: "
      'pip install "gradcam-jax[keras]"'
    ) from None
  import gradcam_jax as gcj
  from gradcam_jax.zoo import keras_models

  try:
    if spec.startswith("keras:"):
      if weights or random_weights:
        raise UsageError(
          f"--model {spec}: a saved .keras file holds its weights; "
          "drop --weights/--random-weights."
        )
      model = keras_models.load_saved(spec.partition(":")[2], output)
    else:
      model = keras_models.load_application(
        spec[len("keras.applications.") :],
        None if random_weights else (weights or "imagenet"),
        seed=RANDOM_SEED,
      )
    # the adapter's own checks (backend, built) in command-line words
    from gradcam_jax._adapters import pick

    pick(model.apply_fn, model.variables)
  except gcj.GradCAMError as err:
    raise UsageError(f"--model {spec}: {err}") from None
  return model
