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


@pytest.mark.parametrize("method", [n for n, m in ALL_METHODS.items() if not m.keyed])
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


def _heads_model(kind: str):
  """A small CNN on 32x32 inputs with the head `kind`: a one-unit sigmoid, a 3-way
  sigmoid (multi-label), or two outputs (a 4-way softmax "cls" and a 2-unit linear
  "box")."""
  keras.utils.set_random_seed(1)
  inputs = keras.Input((32, 32, 3))
  x = keras.layers.Rescaling(1 / 255)(inputs)
  x = keras.layers.Conv2D(6, 3, padding="same", activation="relu", name="conv")(x)
  x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
  if kind == "two":
    return keras.Model(inputs, [keras.layers.Dense(4, activation="softmax", name="cls")(x),
                                keras.layers.Dense(2, name="box")(x)])
  units = 1 if kind == "binary" else 3
  return keras.Model(inputs, keras.layers.Dense(units, activation="sigmoid",
                                                bias_initializer="ones", name="head")(x))


def _own_output(model, pixels):
  """What the Keras model itself says (Keras broadcasts its biases)."""
  import jax
  with jax.numpy_rank_promotion("allow"):
    out = model(np.asarray(pixels, np.float32))
  return [np.asarray(o) for o in out] if isinstance(out, list) else np.asarray(out)


@pytest.fixture(scope="module")
def small_images(tmp_path_factory):
  """Three 32x32 PNGs (the models' own size: nothing is resized) and their pixels."""
  d = tmp_path_factory.mktemp("small")
  pixels = [s[:32, :32] for s in jh.scenes(3)]
  for i, p in enumerate(pixels):
    jh.write_png(d / f"s{i}.png", p)
  return d, np.stack(pixels)


@pytest.mark.parametrize("kind", ["binary", "multilabel"])
def test_a_sigmoid_head_is_recorded_with_the_models_own_probability(
    kind, small_images, tmp_path):
  """Issue 23 case 4: a sigmoid head's output is a probability already (the softmax
  of one unit was 1.0 for every image; of three sigmoids, a different number)."""
  model = _heads_model(kind)
  path = tmp_path / f"{kind}.keras"
  model.save(path)
  images, pixels = small_images
  out = tmp_path / "out"
  assert explain(images, "--model", f"keras:{path}", "--layer", "conv", "--out", out,
                 "--save", "overlay") == 0
  own = _own_output(model, pixels)
  records = sorted(_journal.read_index(out), key=lambda r: r["path"])
  for r, p in zip(records, own):
    assert r["predicted"] == int(np.argmax(p))
    np.testing.assert_allclose(r["probability"], p.max(), rtol=1e-5)
    assert r["probability_from"] == "the model's output (sigmoid)"
  assert not np.allclose(own.max(axis=1), 1.0)  # the test can tell the two apart


def test_a_softmax_head_is_recorded_with_the_models_own_probability(saved, tmp_path):
  path, images = saved
  out = tmp_path / "out"
  assert explain(images, "--model", f"keras:{path}", "--out", out, "--save", "overlay",
                 "--resize", "squash") == 0
  model = keras.saving.load_model(path)
  from gradcam_jax import io
  records = sorted(_journal.read_index(out), key=lambda r: r["path"])
  pixels = np.stack([io.resize_to(io.read_image(r["path"])[0], (32, 32), "squash")
                     for r in records]).astype(np.float32)
  own = _own_output(model, pixels)
  for r, p in zip(records, own):
    np.testing.assert_allclose(r["probability"], p.max(), rtol=1e-4)
    assert r["probability_from"] == "softmax of the model's scores"


@pytest.mark.slow
def test_a_two_output_model_names_its_outputs_and_explains_the_chosen_one(
    small_images, tmp_path, capsys):
  """Issue 23 case 10: a model of two outputs was a TypeError traceback; now exit 2
  naming the outputs, and --output NAME explains that one (explain and bench)."""
  model = _heads_model("two")
  path = tmp_path / "two.keras"
  model.save(path)
  images, pixels = small_images
  code, _, err = explain(images, "--model", f"keras:{path}", "--out", tmp_path / "o1",
                         capsys=capsys)
  assert code == 2 and "2 outputs (cls, box)" in err and "--output NAME" in err, err
  code, _, err = explain(images, "--model", f"keras:{path}", "--output", "nope",
                         "--out", tmp_path / "o2", capsys=capsys)
  assert code == 2 and "expected one of the model's outputs: cls, box" in err, err
  code, _, err = explain(images, "--model", "demo", "--output", "cls",
                         "--out", tmp_path / "o3", capsys=capsys)
  assert code == 2 and "only a keras:FILE.keras model" in err, err
  out = tmp_path / "out"
  assert explain(images, "--model", f"keras:{path}", "--output", "box", "--layer", "conv",
                 "--out", out, "--save", "arrays") == 0
  records = sorted(_journal.read_index(out), key=lambda r: r["path"])
  box = _own_output(model, pixels)[1]
  for r, b in zip(records, box):
    assert r["predicted"] == int(np.argmax(b))
    np.testing.assert_allclose(np.load(out / r["outputs"]["arrays"])["logits"], b,
                               rtol=1e-4, atol=1e-5)
  said = jh.run_cli("bench", "--model", f"keras:{path}", "--output", "cls", "--quick",
                    "--batch-size", "2", "--calls", "1")
  assert said.returncode == 0 and "fastest for gradcam" in said.stdout, said.stderr
