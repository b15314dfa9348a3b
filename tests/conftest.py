"""Fixtures shared by the CLI, io and folder-job tests."""

import os

# Keras 3 picks its backend when first imported: the tests explain Keras models on JAX
os.environ.setdefault("KERAS_BACKEND", "jax")

import cv2
import jax
import numpy as np
import pytest

import gradcam_jax as gcj
from gradcam_jax import cli, zoo
from gradcam_jax.zoo import demo as demo_model

GOOD = {"a.png", "b.jpg", "gray.png", "rgba.png", "deep16.png", "c.bmp", "a.webp"}
BAD = {"truncated.jpg", "text.png", "empty.png"}


def explain(*args, capsys=None):
  """Run `gradcam-jax explain ... --quiet` in this process: the exit status, or
  (exit status, stdout, stderr) with `capsys`."""
  code = cli.main(["explain", *map(str, args), "--quiet"])
  if capsys is None:
    return code
  captured = capsys.readouterr()
  return code, captured.out, captured.err


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
  """Good images in every supported form, and bad files of every kind."""
  d = tmp_path_factory.mktemp("inputs")
  images, _ = demo_model.load_samples()
  rgb = [im[..., ::-1] for im in images]  # OpenCV writes BGR
  cv2.imwrite(str(d / "a.png"), rgb[0])
  cv2.imwrite(str(d / "b.jpg"), cv2.resize(rgb[1], (100, 80)))
  cv2.imwrite(str(d / "gray.png"), cv2.cvtColor(rgb[2], cv2.COLOR_BGR2GRAY))
  cv2.imwrite(str(d / "rgba.png"), cv2.cvtColor(rgb[3], cv2.COLOR_BGR2BGRA))
  cv2.imwrite(str(d / "deep16.png"), rgb[4].astype(np.uint16) * 257)
  (d / "sub").mkdir()
  cv2.imwrite(str(d / "sub" / "c.bmp"), rgb[5])
  cv2.imwrite(str(d / "sub" / "a.webp"), rgb[0])
  good_jpeg = cv2.imencode(".jpg", rgb[1])[1].tobytes()
  (d / "truncated.jpg").write_bytes(good_jpeg[:len(good_jpeg) // 2])
  (d / "text.png").write_text("this is not an image")
  (d / "empty.png").write_bytes(b"")
  (d / "notes.txt").write_text("ignored: not an image extension")
  return d


@pytest.fixture(scope="module")
def model():
  return zoo.load("demo")


@pytest.fixture(scope="module")
def reference(model):
  """The explainer the command must agree with (one compile for the module)."""
  return jax.jit(gcj.guided_gradcam(model.apply_fn, model.variables, layer=model.layer))


@pytest.fixture(scope="session")
def keras_vgg16_h5(tmp_path_factory):
  """A randomly initialised keras.applications.VGG16 (224x224, 1000 classes, its
  softmax head) and its weights written by Keras itself in the legacy .h5 layout
  that keras.applications publishes (vgg16_weights_tf_dim_ordering_tf_kernels.h5)."""
  keras = pytest.importorskip("keras")
  h5py = pytest.importorskip("h5py")
  from keras.src.legacy.saving.legacy_h5_format import save_weights_to_hdf5_group
  keras.utils.set_random_seed(0)
  model = keras.applications.VGG16(weights=None)
  path = tmp_path_factory.mktemp("keras") / "vgg16_weights_tf_dim_ordering_tf_kernels.h5"
  with h5py.File(path, "w") as f:
    save_weights_to_hdf5_group(f, model)
  return model, path
