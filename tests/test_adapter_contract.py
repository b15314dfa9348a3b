"""The contracts every model adapter keeps (gradcam_jax/_adapters), one test each,
run for every adapter: linen, NNX, Equinox, Keras 3 and Split.

The same network in each framework, with the same weights: a stem conv, then one
conv block applied twice (shared weights), global average pooling and a dense head.
A pure-JAX copy gives the reference activations and gradients by hand."""

import copy

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import gradcam_jax as gcj
from tests import models
from tests.models import assert_close

eqx = pytest.importorskip("equinox")
keras = pytest.importorskip("keras")  # on JAX: tests/conftest.py sets KERAS_BACKEND

K0 = jax.random.normal(jax.random.key(10), (3, 3, 3, 4)) * 0.4   # HWIO
K1 = jax.random.normal(jax.random.key(11), (3, 3, 4, 4)) * 0.4
WH = jax.random.normal(jax.random.key(12), (4, 3))
X = models.images(2)                                              # (2, 8, 8, 3) NHWC
T = jnp.array([0, 2])


def _conv(x, k):
  return jax.lax.conv_general_dilated(x, k, (1, 1), "SAME",
                                      dimension_numbers=("NHWC", "HWIO", "NHWC"))


def _block(x):
  return jax.nn.relu(_conv(x, K1))


def _head(a):
  return a.mean((1, 2)) @ WH


def reference_raw(call):
  """Grad-CAM's raw map at call 0 or 1 of the shared block, by hand."""
  a = jax.nn.relu(_conv(X, K0))
  a0 = _block(a)
  if call == 0:
    act, rest = a0, lambda z: _head(_block(z))
  else:
    act, rest = _block(a0), _head
  grad = jax.grad(lambda z: jnp.take_along_axis(rest(z), T[:, None], 1).sum())(act)
  alpha = grad.mean((1, 2))
  return jax.nn.relu(jnp.einsum("bhwk,bk->bhw", act, alpha))


# --- the network in each framework ---------------------------------------------------

class LinenNet(nn.Module):
  def setup(self):
    self.stem = models.ConvReLU(4)
    self.block = models.ConvReLU(4)
    self.fc = nn.Dense(3, use_bias=False)

  def __call__(self, x):
    return self.fc(self.block(self.block(self.stem(x))).mean((1, 2)))


def linen():
  zero = jnp.zeros(4)
  variables = {"params": {"stem": {"conv": {"kernel": K0, "bias": zero}},
                          "block": {"conv": {"kernel": K1, "bias": zero}},
                          "fc": {"kernel": WH}}}
  return dict(model=LinenNet().apply, params=variables, x=X, layout="NHWC",
              once="block", calls=("block@0", "block@1"), user=variables)


class NNXBlock(nnx.Module):
  def __init__(self, cin, kernel):
    self.conv = nnx.Conv(cin, 4, (3, 3), use_bias=False, rngs=nnx.Rngs(0))
    self.conv.kernel[...] = kernel

  def __call__(self, x):
    return nnx.relu(self.conv(x))


class NNXNet(nnx.Module):
  def __init__(self):
    self.stem = NNXBlock(3, K0)
    self.block = NNXBlock(4, K1)
    self.fc = nnx.Linear(4, 3, use_bias=False, rngs=nnx.Rngs(0))
    self.fc.kernel[...] = WH

  def __call__(self, x):
    return self.fc(self.block(self.block(self.stem(x))).mean((1, 2)))


class EqxBlock(eqx.Module):
  conv: eqx.nn.Conv2d

  def __init__(self, kernel):
    conv = eqx.nn.Conv2d(kernel.shape[2], 4, 3, padding=1, use_bias=False,
                         key=jax.random.key(0))
    self.conv = eqx.tree_at(lambda c: c.weight, conv, jnp.transpose(kernel, (3, 2, 0, 1)))

  def __call__(self, x):  # one (C, H, W) activation
    return jax.nn.relu(self.conv(x))


class EqxNet(eqx.Module):
  stem: EqxBlock
  block: EqxBlock
  fc: eqx.nn.Linear

  def __init__(self):
    self.stem, self.block = EqxBlock(K0), EqxBlock(K1)
    fc = eqx.nn.Linear(4, 3, use_bias=False, key=jax.random.key(0))
    self.fc = eqx.tree_at(lambda f: f.weight, fc, WH.T)

  def __call__(self, x):  # one (C, H, W) image, as Equinox models are written
    return self.fc(self.block(self.block(self.stem(x))).mean((1, 2)))


def nnx_case():
  net = NNXNet()
  return dict(model=net, params=None, x=X, layout="NHWC", once=("block",),
              calls=("block@0", "block@1"), user=net)


def equinox():
  net = EqxNet()
  block = lambda m: m.block  # noqa: E731
  return dict(model=net, params=None, x=jnp.transpose(X, (0, 3, 1, 2)), layout="NCHW",
              once=block, calls=((block, 0), (block, 1)), user=net)


def split():
  features = lambda p, x: _block(_block(jax.nn.relu(_conv(x, p["k0"]))))  # noqa: E731
  head = lambda p, a: _head(a)  # noqa: E731
  params = {"k0": K0}
  return dict(model=gcj.Split(features, head), params=params, x=X, layout="NHWC",
              once=None, calls=None, user=params)


def keras_net(block_layer=None):
  """The network as a Keras Functional model, the block one shared Conv2D layer."""
  inputs = keras.Input((8, 8, 3))
  stem = keras.layers.Conv2D(4, 3, padding="same", use_bias=False, activation="relu",
                             name="stem")
  block = block_layer or keras.layers.Conv2D(4, 3, padding="same", use_bias=False,
                                             activation="relu", name="block")
  pooled = keras.layers.GlobalAveragePooling2D(name="pool")(block(block(stem(inputs))))
  fc = keras.layers.Dense(3, use_bias=False, name="fc")
  model = keras.Model(inputs, fc(pooled))
  stem.set_weights([np.asarray(K0)])
  block.set_weights([np.asarray(K1)])
  fc.set_weights([np.asarray(WH)])
  return model


def keras_case():
  net = keras_net()
  return dict(model=net, params=None, x=X, layout="NHWC", once="block",
              calls=("block@0", "block@1"), user=net)


CASES = {"linen": linen, "nnx": nnx_case, "equinox": equinox, "keras": keras_case,
         "split": split}


def _explain(case, layer, **kw):
  return gcj.gradcam(case["model"], case["params"], layer=layer,
                     image_layout=case["layout"], **kw)(case["x"], T)


# --- contract 1: a layer called twice needs its call index ---------------------------

@pytest.mark.parametrize("name", ["linen", "nnx", "equinox", "keras"])
def test_a_layer_called_twice_needs_its_call_index(name):
  case = CASES[name]()
  with pytest.raises(gcj.LayerNotFoundError, match="called 2 times"):
    _explain(case, case["once"])
  for call in (0, 1):  # each call's map, worked out by hand
    assert_close(_explain(case, case["calls"][call]).cam_raw, reference_raw(call),
                 atol=1e-5)
  assert float(jnp.abs(reference_raw(0) - reference_raw(1)).max()) > 1e-3


def test_split_has_one_layer_and_matches_by_hand():
  case = split()
  assert_close(_explain(case, None).cam_raw, reference_raw(1), atol=1e-5)


# --- contract 2: the user's model and variables are never modified -------------------

def _snapshot(obj):
  if isinstance(obj, keras.Model):  # config, weights, and the very layer objects
    return (obj.to_json(), [np.array(v) for v in obj.get_weights()],
            [(id(layer), id(getattr(layer, "activation", None))) for layer in obj.layers])
  if isinstance(obj, nnx.Module):
    return (jax.tree_util.tree_map(np.array, nnx.state(obj)),
            [(p, type(n)) for p, n in nnx.iter_graph(obj)])
  if isinstance(obj, eqx.Module):
    return (jax.tree_util.tree_map(np.array, eqx.filter(obj, eqx.is_array)),
            [type(x) for x in jax.tree_util.tree_leaves(obj, is_leaf=lambda x: x is not obj
                                                       and isinstance(x, eqx.Module))])
  return copy.deepcopy(jax.tree_util.tree_map(np.array, obj))


def _same(a, b):
  leaves_a, tree_a = jax.tree_util.tree_flatten(a)
  leaves_b, tree_b = jax.tree_util.tree_flatten(b)
  assert tree_a == tree_b
  for x, y in zip(leaves_a, leaves_b):
    if isinstance(x, np.ndarray):
      np.testing.assert_array_equal(x, y)
    else:
      assert x == y


@pytest.mark.parametrize("name", sorted(CASES))
def test_the_users_model_and_variables_are_not_modified(name):
  case = CASES[name]()
  before = _snapshot(case["user"])
  layer = case["calls"][1] if case["calls"] else None
  gcj.guided_gradcam(case["model"], case["params"], layer=layer,
                     image_layout=case["layout"])(case["x"], T)
  with pytest.raises(gcj.TargetError):  # and after an exception half-way
    gcj.gradcam(case["model"], case["params"], layer=layer,
                image_layout=case["layout"])(case["x"], jnp.array([0, 99]))
  _same(_snapshot(case["user"]), before)


# --- contract 3: the model's own failure is reported as the model's ------------------

class Boom(Exception):
  pass


def _failing(name):
  def fail(x):
    raise Boom("the model's own failure")
  if name == "linen":
    class Net(nn.Module):
      failing: bool = True

      @nn.compact
      def __call__(self, x):
        a = models.ConvReLU(4, name="c")(x)
        return fail(a) if self.failing else a

    return Net().apply, Net(failing=False).init(jax.random.key(0), X), X, "c"
  if name == "nnx":
    class Net(nnx.Module):
      def __init__(self):
        self.c = nnx.Conv(3, 4, (3, 3), rngs=nnx.Rngs(0))

      def __call__(self, x):
        return fail(self.c(x))
    return Net(), None, X, "c"
  if name == "equinox":
    class Net(eqx.Module):
      c: eqx.nn.Conv2d

      def __call__(self, x):
        return fail(self.c(x))
    return (Net(eqx.nn.Conv2d(3, 4, 3, key=jax.random.key(0))), None,
            jnp.transpose(X, (0, 3, 1, 2)), lambda m: m.c)
  if name == "keras":
    class Fails(keras.layers.Layer):
      def call(self, x):
        if isinstance(x, jax.core.Tracer) or isinstance(x, jax.Array):
          fail(x)
        return x

      def compute_output_shape(self, shape):
        return shape

    inputs = keras.Input((8, 8, 3))
    a = keras.layers.Conv2D(4, 3, name="c")(inputs)
    return keras.Model(inputs, Fails()(a)), None, X, "c"
  return gcj.Split(lambda p, x: x * p, lambda p, a: fail(a)), 2.0, X, None


@pytest.mark.parametrize("name", sorted(CASES))
def test_the_models_own_failure_is_the_models_error(name):
  model, params, x, layer = _failing(name)
  layout = "NCHW" if name == "equinox" else "NHWC"
  # (Keras adds its own words around the message: "Exception encountered when ...")
  with pytest.raises(gcj.GradCAMError, match="(?s)Boom: .*the model's own failure") as err:
    gcj.gradcam(model, params, layer=layer, image_layout=layout)(x)
  assert isinstance(err.value.__cause__, Boom)
