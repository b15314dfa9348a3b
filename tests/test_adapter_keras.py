"""The Keras 3 adapter (gradcam_jax/_adapters/keras.py): Functional, Sequential,
nested and subclassed models on the JAX backend, checked against references built
from Keras' own sub-models and a head written out by hand.

(The contracts all adapters keep are in test_adapter_contract.py; the Keras VGG16
against the Flax zoo VGG16 through a Keras-written .h5 is in test_zoo_imagenet.py.)"""

import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gradcam_jax as gcj
from gradcam_jax._adapters import pick
from tests.models import assert_close

keras = pytest.importorskip("keras")  # on JAX: tests/conftest.py sets KERAS_BACKEND
L = keras.layers

X = jax.random.normal(jax.random.key(0), (2, 16, 16, 3))
T = jnp.array([1, 3])


def _build(head="softmax", dtype=None):
  """A small residual CNN: c1 -> c2 -> bn -> r (ReLU layer), add(c1, r) -> act ->
  global pooling -> dense "pred" (softmax unless `head` is None; or a separate
  Activation("softmax") layer with head="layer"). BatchNorm statistics are not 0/1,
  so inference mode matters."""
  keras.utils.set_random_seed(0)
  inputs = keras.Input((16, 16, 3))
  c1 = L.Conv2D(6, 3, padding="same", activation="relu", name="c1", dtype=dtype)(inputs)
  c2 = L.Conv2D(6, 3, padding="same", name="c2", dtype=dtype)(c1)
  r = L.ReLU(name="r", dtype=dtype)(L.BatchNormalization(name="bn", dtype=dtype)(c2))
  act = L.Activation("relu", name="act", dtype=dtype)(L.Add(name="add", dtype=dtype)([c1, r]))
  pooled = L.GlobalAveragePooling2D(name="gap", dtype=dtype)(act)
  out = L.Dense(4, activation=head if head != "layer" else None, name="pred",
                dtype=dtype)(pooled)
  if head == "layer":
    out = L.Activation("softmax", name="probs")(out)
  model = keras.Model(inputs, out)
  rng = np.random.default_rng(0)
  bn = model.get_layer("bn")
  bn.set_weights([rng.uniform(0.5, 1.5, 6), rng.normal(size=6), rng.normal(size=6),
                  rng.uniform(0.5, 2.0, 6)])
  return model


MODEL = _build()


def run(model, x):
  """`model` on `x` as Keras runs it, in inference mode (under NumPy's rank
  promotion, which Keras' ops rely on and the suite's JAX config forbids)."""
  with jax.numpy_rank_promotion("allow"):
    return model(x, training=False)


def _sub(model, name):
  """Keras' own sub-model from the input to a layer's output."""
  sub = keras.Model(model.inputs, model.get_layer(name).output)
  return lambda x: run(sub, x)


def _logits_of(model, act):
  """The head after "act" by hand: global average pooling, then pred's kernel/bias
  without its softmax."""
  kernel, bias = model.get_layer("pred").get_weights()
  return act.mean((1, 2)) @ kernel + bias[None]


def _raw(act, grad):
  return jax.nn.relu(jnp.einsum("bhwk,bk->bhw", act, grad.mean((1, 2))))


def _pick(scores):
  return jnp.take_along_axis(scores, T[:, None], 1).sum()


def test_gradcam_matches_keras_submodels_and_the_head_by_hand():
  act = _sub(MODEL, "act")(X)
  grad = jax.grad(lambda a: _pick(_logits_of(MODEL, a)))(act)
  out = jax.jit(gcj.gradcam(MODEL, layer="act"))(X, T)
  assert_close(out.cam_raw, _raw(act, grad), atol=1e-5)
  # the scores explained are pred's before its softmax, and they are the model's
  assert_close(out.logits, _logits_of(MODEL, act), atol=1e-5)
  assert_close(jax.nn.softmax(out.logits), run(MODEL, X), atol=1e-6)


def test_a_layer_inside_a_skip_connection():
  """"r" feeds the Add beside the c1 branch: keras.Model(r.output, model.output)
  is not connected there, the adapter runs the whole graph with an edit."""
  with pytest.raises(ValueError):
    keras.Model(MODEL.get_layer("r").output, MODEL.output)
  r, c1 = _sub(MODEL, "r")(X), _sub(MODEL, "c1")(X)
  rest = lambda z: _logits_of(MODEL, jax.nn.relu(c1 + z))  # noqa: E731
  grad = jax.grad(lambda z: _pick(rest(z)))(r)
  assert_close(gcj.gradcam(MODEL, layer="r")(X, T).cam_raw, _raw(r, grad), atol=1e-5)


def test_class_probability_explains_the_models_own_output():
  act = _sub(MODEL, "act")(X)
  probs = lambda a: jax.nn.softmax(_logits_of(MODEL, a))  # noqa: E731
  grad = jax.grad(lambda a: _pick(probs(a)))(act)
  out = gcj.gradcam(MODEL, layer="act", target=gcj.class_probability)(X, T)
  assert_close(out.cam_raw, _raw(act, grad), atol=1e-6)


def test_explaining_draws_nothing_from_keras_random_state():
  """The pre-softmax copy of the last layer is built without drawing initial weights
  from Keras' global seed generator: the user's next random numbers are unchanged."""
  keras.utils.set_random_seed(1)
  expected = np.asarray(keras.random.uniform((4,)))
  keras.utils.set_random_seed(1)
  gcj.gradcam(MODEL, layer="act")(X, T)
  np.testing.assert_array_equal(np.asarray(keras.random.uniform((4,))), expected)


def test_a_softmax_activation_layer_at_the_end_is_skipped():
  model = _build(head="layer")
  out = gcj.gradcam(model, layer="act")(X, T)
  assert_close(out.logits, _logits_of(model, _sub(model, "act")(X)), atol=1e-5)
  assert_close(out.cam_raw, gcj.gradcam(MODEL, layer="act")(X, T).cam_raw, atol=1e-6)


def test_a_model_without_softmax_is_explained_as_it_is():
  model = _build(head=None)
  out = gcj.gradcam(model, layer="act")(X, T)
  assert_close(out.logits, run(model, X), atol=1e-5)
  assert_close(out.cam_raw, gcj.gradcam(MODEL, layer="act")(X, T).cam_raw, atol=1e-6)


def test_sequential_and_nested_models_by_keras_names():
  flat = _build(head=None)
  convs = [L.Conv2D(5, 3, padding="same", activation="relu", name=f"s{i}")
           for i in range(2)]
  seq = keras.Sequential([keras.Input((16, 16, 3)), *convs,
                          L.GlobalAveragePooling2D(), L.Dense(4, name="fc")])
  inputs = keras.Input((16, 16, 3))
  inner = keras.Model(inputs, convs[1](convs[0](inputs)), name="inner")
  outer_in = keras.Input((16, 16, 3))
  nested = keras.Model(outer_in, seq.get_layer("fc")(
      L.GlobalAveragePooling2D()(inner(outer_in))))
  a = run(seq, X)  # the same layer objects, the same weights
  assert_close(run(nested, X), a, atol=1e-6)
  by_seq = gcj.guided_gradcam(seq, layer="s1")(X, T)
  by_nested = gcj.guided_gradcam(nested, layer="inner/s1")(X, T)
  for field in ("cam_raw", "guided", "logits"):
    assert_close(getattr(by_nested, field), getattr(by_seq, field), atol=1e-6)
  s1 = run(keras.Model(seq.inputs, seq.get_layer("s1").output), X)
  kernel, bias = seq.get_layer("fc").get_weights()
  grad = jax.grad(lambda z: _pick(z.mean((1, 2)) @ kernel + bias[None]))(s1)
  assert_close(by_seq.cam_raw, _raw(s1, grad), atol=1e-5)
  names = [str(i.ref(1)) for i in gcj.list_layers(nested, None, X).layers]
  assert "inner/s0" in names and "inner" in names
  del flat


def test_mixed_bfloat16_activations_are_widened():
  model = _build(dtype="mixed_bfloat16")
  layers = {str(i.ref(1)): i for i in gcj.list_layers(model, None, X).layers}
  assert layers["act"].dtype == "bfloat16"
  out = gcj.guided_gradcam(model, layer="act")(X, T)
  assert out.cam.dtype == out.cam_raw.dtype == out.guided.dtype == jnp.float32
  ref = gcj.gradcam(MODEL, layer="act")(X, T)  # same weights, float32 throughout
  assert_close(out.cam, ref.cam, atol=0.05)


def test_closure_and_params_as_argument_forms():
  model = _build()
  explain = gcj.gradcam(model, layer="act")
  params = gcj.keras_params(model)
  assert_close(explain.with_params(params, X, T).cam_raw, explain(X, T).cam_raw, atol=0)
  # the closure form holds the values the model had when the explainer was made
  before = explain(X, T).cam_raw
  model.get_layer("c2").set_weights([w * 2 for w in model.get_layer("c2").get_weights()])
  assert_close(explain(X, T).cam_raw, before, atol=0)
  assert float(jnp.abs(gcj.gradcam(model, layer="act")(X, T).cam_raw - before).max()) > 1e-4
  assert_close(explain.with_params(gcj.keras_params(model), X, T).cam_raw,
               gcj.gradcam(model, layer="act")(X, T).cam_raw, atol=1e-6)
  with pytest.raises(gcj.WeightsError, match=r"two lists of 8 and 2 arrays.*got a pair "
                     r"of lists of lengths \(8, 0\)"):
    explain.with_params((params[0], []), X)


class Subclassed(keras.Model):
  """ReLUs written as keras.ops.relu in call(), no graph."""

  def __init__(self):
    super().__init__()
    self.conv = L.Conv2D(4, 3, padding="same")
    self.fc = L.Dense(4)

  def call(self, x):
    return self.fc(keras.ops.mean(keras.ops.relu(self.conv(x)), axis=(1, 2)))


def test_subclassed_models_run_whole_and_point_to_split_for_layers():
  model = Subclassed()
  run(model, X)
  adapter, params = pick(model, None)
  assert gcj.guided_report(adapter, params, X).replaced == 1
  out = gcj.guided_backprop(model)(X, T)
  kernel, bias = model.conv.get_weights()
  w, b = model.fc.get_weights()

  def by_hand(x):
    conv = jax.lax.conv_general_dilated(x, kernel, (1, 1), "SAME",
                                        dimension_numbers=("NHWC", "HWIO", "NHWC"))
    return gcj.guided_relu(conv + bias[None, None, None]).mean((1, 2)) @ w + b[None]
  assert_close(out.guided, jax.grad(lambda x: _pick(by_hand(x)))(X), atol=1e-6)
  with pytest.raises(gcj.UnsupportedError, match="subclassed Keras model.*gcj.Split"):
    gcj.gradcam(model, layer="conv")
  with pytest.raises(gcj.UnsupportedError, match="layer=None.*gcj.Split"):
    gcj.gradcam(model)


def test_keras_relu_forms_are_all_guided():
  """Conv2D(activation="relu"), Activation("relu") and layers.ReLU in one graph; the
  applications' counts: VGG16 13 convs + 2 dense, ResNet50 49 (weights=None)."""
  adapter, params = pick(MODEL, None)
  assert gcj.guided_report(adapter, params, X).replaced == 3
  for build, size, count in ((keras.applications.VGG16, 32, 15),
                             (keras.applications.ResNet50, 32, 49)):
    model = build(weights=None, input_shape=(size, size, 3))
    adapter, params = pick(model, None)
    report = gcj.guided_report(adapter, params, jnp.zeros((1, size, size, 3)))
    assert (report.replaced, report.left) == (count, {}), build.__name__


def test_resnet50_target_layer_inside_the_last_block():
  model = keras.applications.ResNet50(weights=None, input_shape=(64, 64, 3))
  x = jax.random.normal(jax.random.key(1), (2, 64, 64, 3))
  explain = gcj.jit(gcj.gradcam(model, layer="conv5_block3_2_relu"))
  out = explain(x)
  assert out.cam_raw.shape == (2, 2, 2) and out.cam.shape == (2, 64, 64)
  assert_close(jax.nn.softmax(out.logits), run(model, x), atol=1e-5)
  features = keras.Model(model.inputs, model.get_layer("conv5_block3_2_relu").output)
  assert bool(jnp.all(run(features, x) >= 0)) and float(jnp.abs(out.cam_raw).max()) > 0


def test_not_built_and_wrong_backend_are_clear_errors():
  model = keras.Sequential([L.Conv2D(2, 3), L.Flatten(), L.Dense(2)])
  with pytest.raises(gcj.ModelError, match="not built.*Input shape"):
    gcj.gradcam(model)
  code = ("import keras, gradcam_jax as gcj\n"
          "m = keras.Sequential([keras.Input((4, 4, 3)), keras.layers.Dense(2)])\n"
          "try:\n  gcj.gradcam(m)\nexcept gcj.UnsupportedError as e:\n  print(e)\n")
  env = dict(os.environ, KERAS_BACKEND="numpy")
  said = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                        text=True, timeout=300)
  assert "on the 'numpy' backend" in said.stdout and "KERAS_BACKEND=jax" in said.stdout, (
      said.stdout + said.stderr)


def test_a_layer_named_with_a_dot_is_reached_by_its_name():
  """"features.0" was parsed as a path and a method: the layer could not be named as
  a string (nor with --layer), though the error listed it as valid."""
  inputs = keras.Input((16, 16, 3))
  a = L.Conv2D(4, 3, name="features.0", activation="relu")(inputs)
  pooled = L.GlobalAveragePooling2D(name="gap")(a)  # named: Keras numbers its own names
  model = keras.Model(inputs, L.Dense(3, name="fc")(pooled))
  out = gcj.gradcam(model, layer="features.0")(X)
  features = keras.Model(model.inputs, model.get_layer("features.0").output)
  head = keras.Model(model.get_layer("gap").input, model.output)
  act = run(features, X)
  grad = jax.grad(lambda a: jnp.take_along_axis(run(head, a), out.targets[:, None],
                                                1).sum())(act)
  want = jax.nn.relu(jnp.einsum("bhwk,bk->bhw", act, grad.mean((1, 2))))
  assert_close(out.cam_raw, want, atol=1e-5)


def test_a_nested_model_runs_without_keras_structure_warnings(recwarn):
  """Keras warned "The structure of `inputs` doesn't match" on every explanation of a
  model with a nested model (a Keras Hub classifier's backbone): the adapter passed
  the nested model a 1-tuple."""
  inner_in = keras.Input((16, 16, 3))
  backbone = keras.Model(inner_in, L.Conv2D(4, 3, activation="relu", name="c")(inner_in),
                         name="backbone")
  outer_in = keras.Input((16, 16, 3))
  pooled = L.GlobalAveragePooling2D(name="gap")(backbone(outer_in))
  model = keras.Model(outer_in, L.Dense(3, name="fc")(pooled))
  out = gcj.gradcam(model, layer="backbone/c")(X)
  assert out.cam.shape == (2, 16, 16)
  said = [str(w.message) for w in recwarn if "structure of `inputs`" in str(w.message)]
  assert said == []
