"""Keras models on the command line (gradcam_jax/zoo/keras_models.py):
``--model keras:FILE.keras`` and ``--model keras.applications.VGG16``, layers by
Keras name, every CAM method, the application's own preprocessing and class names."""

import json

import numpy as np
import pytest

from gradcam_jax import cli
from gradcam_jax.cli import journal as _journal
from gradcam_jax._methods import ALL_METHODS
from gradcam_jax.zoo import keras_models
from tests import job_helpers as jh
from tests.conftest import explain

keras = pytest.importorskip("keras")  # on JAX: tests/conftest.py sets KERAS_BACKEND


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
  """A small Functional CNN with a softmax head, saved with model.save()."""
  keras.utils.set_random_seed(0)
  inputs = keras.Input((32, 32, 3))
  x = keras.layers.Rescaling(1 / 255)(inputs)
  x = keras.layers.Conv2D(6, 3, padding="same", activation="relu", name="conv1")(x)
  x = keras.layers.MaxPooling2D()(x)
  x = keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="conv2")(x)
  x = keras.layers.GlobalAveragePooling2D()(x)
  model = keras.Model(inputs, keras.layers.Dense(5, activation="softmax")(x))
  path = tmp_path_factory.mktemp("saved") / "small.keras"
  model.save(path)
  images = tmp_path_factory.mktemp("images")
  for i, scene in enumerate(jh.scenes(3)):
    jh.write_png(images / f"s{i}.png", scene)
  return path, images


@pytest.mark.parametrize("method", list(ALL_METHODS))
def test_a_saved_keras_model_with_every_method(saved, tmp_path, method):
  path, images = saved
  out = tmp_path / "out"
  args = (images, "--model", f"keras:{path}", "--layer", "conv2", "--method", method,
          "--out", out, "--save", "overlay,arrays")
  if method in jh.ONE_DEVICE:
    said = jh.run(*args, "--quiet")
    assert said.returncode == 0, said.stderr
  else:
    assert explain(*args) == 0
  records = _journal.read_index(out)
  assert len(records) == 3 and all(r["status"] == "ok" for r in records), records
  assert all(r["predicted_name"].startswith("class_") for r in records)
  arrays = np.load(out / records[0]["outputs"]["arrays"])
  assert arrays["cam"].shape == (32, 32) and float(arrays["cam"].max()) > 0


def test_keras_usage_errors(saved, tmp_path, capsys):
  path, images = saved
  for args, words in ((["--model", f"keras:{path}", "--layer", "nope"], "'nope'"),
                      (["--model", f"keras:{path}", "--weights", str(path)],
                       "holds its weights"),
                      (["--model", "keras:missing.keras"], "no such file"),
                      (["--model", "keras.applications.VGG17"], "no such application")):
    code = cli.main(["explain", str(images), "--out", str(tmp_path / "o"), *args])
    err = capsys.readouterr().err
    assert code == 2 and words in err and "Traceback" not in err, (args, err)


@pytest.mark.slow
def test_keras_applications_vgg16_from_a_weights_file(keras_vgg16_h5, saved, tmp_path):
  """keras.applications.VGG16 with the file Keras wrote for the random VGG16:
  the application's preprocess_input, ImageNet class names, block5_conv3."""
  model, h5 = keras_vgg16_h5
  _, images = saved
  out = tmp_path / "out"
  code = explain(images, "--model", "keras.applications.VGG16", "--weights", h5,
                 "--out", out, "--batch-size", "4")
  assert code == 0
  records = _journal.read_index(out)
  assert len(records) == 3 and all(r["status"] == "ok" for r in records)
  zm = keras_models.load_application("VGG16", str(h5))
  assert zm.layer == "block5_conv3" and zm.input_size == (224, 224)
  from gradcam_jax.zoo.imagenet import class_names
  assert zm.class_names == class_names() and records[0]["predicted_name"] in zm.class_names
  rgb = np.full((1, 2, 2, 3), [10, 20, 30], np.uint8)  # caffe: BGR minus means
  np.testing.assert_allclose(zm.preprocess(rgb)[0, 0, 0],
                             [30 - 103.939, 20 - 116.779, 10 - 123.68], rtol=1e-6)
  assert "sha256:" in json.dumps(records[0]["settings"])  # the file names the run
  np.testing.assert_array_equal(zm.variables[0][0], model.trainable_variables[0].value)
