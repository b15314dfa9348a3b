"""Layers inside a scan over a stack of blocks (``nnx.scan``, linen ``nn.scan``, a
hand-written ``jax.lax.scan``), explained per iteration: ``"blocks@k"`` is block k's
activation, and every method there equals the same method on the model split by hand
after block k (a :class:`gcj.Split` of the unrolled arrays)."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import gradcam_jax as gcj
from tests import models
from tests.models import assert_close
from tests.test_adapter_nnx import _ScanNet


def _conv(x, k, b):
  dn = ("NHWC", "HWIO", "NHWC")
  return jax.lax.conv_general_dilated(x, k, (1, 1), "SAME", dimension_numbers=dn) + b[None, None, None]


def _split_after(p, k):
  """The stacked model of arrays `p` split by hand after block k: a Python loop over
  the blocks, no scan (the reference)."""
  n = p["kernels"].shape[0]

  def features(_, x):
    h = jax.nn.relu(_conv(x, p["stem_k"], p["stem_b"]))
    for i in range(k + 1):
      h = jax.nn.relu(_conv(h, p["kernels"][i], p["biases"][i]))
    return h

  def head(_, a):
    for i in range(k + 1, n):
      a = jax.nn.relu(_conv(a, p["kernels"][i], p["biases"][i]))
    return a.mean((1, 2)) @ p["fc_k"] + p["fc_b"][None]

  return gcj.Split(features, head)


def _nnx_arrays(model):
  return {
    "stem_k": model.stem.kernel[...], "stem_b": model.stem.bias[...],
    "kernels": model.blocks.conv.kernel[...], "biases": model.blocks.conv.bias[...],
    "fc_k": model.fc.kernel[...], "fc_b": model.fc.bias[...],
  }


class _Block(nn.Module):
  @nn.compact
  def __call__(self, x, _):
    return nn.relu(nn.Conv(4, (3, 3), name="conv")(x)), None


class _LinenScanNet(nn.Module):
  n: int = 3

  @nn.compact
  def __call__(self, x):
    x = nn.relu(nn.Conv(4, (3, 3), name="stem")(x))
    stack = nn.scan(_Block, variable_axes={"params": 0}, split_rngs={"params": True},
                    length=self.n)
    x, _ = stack(name="blocks")(x, None)
    return nn.Dense(3, name="fc")(x.mean((1, 2)))


def _linen_arrays(v):
  p = v["params"]
  return {
    "stem_k": p["stem"]["kernel"], "stem_b": p["stem"]["bias"],
    "kernels": p["blocks"]["conv"]["kernel"], "biases": p["blocks"]["conv"]["bias"],
    "fc_k": p["fc"]["kernel"], "fc_b": p["fc"]["bias"],
  }


X, T = models.images(2), jnp.array([2, 0])
NNX_MODEL = _ScanNet(3, nnx.Rngs(0))
LINEN = _LinenScanNet()
LINEN_VARS = LINEN.init(jax.random.key(3), X)
CASES = {
  "nnx": (NNX_MODEL, None, _nnx_arrays(NNX_MODEL)),
  "linen": (LINEN.apply, LINEN_VARS, _linen_arrays(LINEN_VARS)),
}


@pytest.mark.parametrize("framework", CASES)
def test_layers_in_a_scan_are_listed_once_per_iteration(framework):
  model, params, _ = CASES[framework]
  layers, _ = gcj.list_layers(model, params, X)
  got = [(str(l.ref(3 if l.inside_loop else 1)), l.inside_loop) for l in layers]
  assert got == [("stem", False)] + [
    (name, True) for k in range(3) for name in (f"blocks/conv@{k}", f"blocks@{k}")
  ] + [("fc", False)]
  assert "blocks@2 " in str(gcj.list_layers(model, params, X))
  assert "(iteration 2 of a scan)" in str(gcj.list_layers(model, params, X))


@pytest.mark.parametrize("framework", CASES)
@pytest.mark.parametrize("k", [0, 1, 2])
def test_gradcam_at_each_iteration_equals_the_model_split_by_hand(framework, k):
  model, params, arrays = CASES[framework]
  want = gcj.jit(gcj.gradcam(_split_after(arrays, k), {}))(X, T)
  got = gcj.jit(gcj.gradcam(model, params, layer=f"blocks@{k}"))(X, T)
  assert float(jnp.abs(want.cam_raw).max()) > 0  # the reference is not a blank map
  assert_close(got.cam_raw, want.cam_raw, atol=1e-6)
  assert_close(got.cam, want.cam, atol=1e-5)


@pytest.mark.parametrize("framework", CASES)
@pytest.mark.parametrize("method", [m for m in gcj.ALL_METHODS if m not in (
    "gradcam", "cam", "fullgrad")])  # the original CAM needs a pool and a dense head:
# convs follow; FullGrad has no target layer (refused in a scan: below)
def test_every_method_at_a_middle_iteration(framework, method):
  """Iteration 1 of 3: a scan before the edited step and one after it."""
  model, params, arrays = CASES[framework]
  key = {"key": jax.random.key(0)} if gcj.ALL_METHODS[method].keyed else {}
  want = gcj.cam(_split_after(arrays, 1), {}, method=method)(X, T, **key)
  got = gcj.cam(model, params, layer="blocks@1", method=method)(X, T, **key)
  assert_close(got.cam_raw, want.cam_raw, atol=1e-5)


def test_guided_gradcam_vmap_and_several_layers_at_iterations():
  model, params, arrays = CASES["nnx"]
  want = gcj.guided_gradcam(_split_after(arrays, 0), {})(X, T)
  got = gcj.jit(gcj.guided_gradcam(model, params, layer="blocks@0"))(X, T)
  assert_close(got.guided_gradcam, want.guided_gradcam, atol=1e-6)
  one = gcj.gradcam(model, params, layer="blocks@1")
  per_example = jax.vmap(lambda x, t: one(x[None], t[None]).cam_raw[0])(X, T)
  assert_close(per_example, one(X, T).cam_raw, atol=1e-6)
  several = gcj.gradcam(model, params, layer=["blocks@2", "stem", "blocks@0"])(X, T)
  for layer, out in zip(["blocks@2", "stem", "blocks@0"], several.cam_raw):
    assert_close(out, gcj.gradcam(model, params, layer=layer)(X, T).cam_raw, atol=1e-6)


def test_layer_none_picks_the_last_iteration_of_a_scanned_stack():
  model, params, arrays = CASES["linen"]
  got = gcj.gradcam(model, params)(X, T)
  assert_close(got.cam_raw, gcj.gradcam(_split_after(arrays, 2), {})(X, T).cam_raw)


def test_a_hand_written_lax_scan_through_split():
  """The guide's recipe: a model that is a jax.lax.scan over stacked arrays, split
  after block k with the same scan over the first k + 1 blocks and over the rest."""
  p = _linen_arrays(LINEN_VARS)

  def blocks(h, kernels, biases):
    step = lambda h, kb: (jax.nn.relu(_conv(h, *kb)), None)  # noqa: E731
    return jax.lax.scan(step, h, (kernels, biases))[0]

  def split_after(k):
    return gcj.Split(
      features=lambda p, x: blocks(
        jax.nn.relu(_conv(x, p["stem_k"], p["stem_b"])),
        p["kernels"][: k + 1], p["biases"][: k + 1]),
      head=lambda p, a: blocks(a, p["kernels"][k + 1 :], p["biases"][k + 1 :]).mean(
        (1, 2)) @ p["fc_k"] + p["fc_b"][None],
    )

  for k in (0, 2):
    got = gcj.jit(gcj.gradcam(split_after(k), p))(X, T)
    assert_close(got.cam_raw, gcj.gradcam(_split_after(p, k), {})(X, T).cam_raw)


def test_an_iteration_past_the_end_names_the_valid_ones():
  model, params, _ = CASES["linen"]
  with pytest.raises(gcj.LayerNotFoundError, match=r"runs in 3 iteration\(s\) of a "
                     r"scan; valid indices: 0..2"):
    gcj.gradcam(model, params, layer="blocks@3")(X, T)


class _Reversed(nn.Module):
  @nn.compact
  def __call__(self, x):
    stack = nn.scan(_Block, variable_axes={"params": 0}, split_rngs={"params": True},
                    length=2, reverse=True)
    x, _ = stack(name="blocks")(nn.Conv(4, (3, 3), name="stem")(x), None)
    return x.mean((1, 2))


def test_a_reversed_scan_is_refused_by_name():
  net = _Reversed()
  v = net.init(jax.random.key(0), X)
  with pytest.raises(gcj.UnsupportedError, match=r"\['blocks'\]: inside a reversed scan"):
    gcj.gradcam(net.apply, v, layer="blocks@1")(X, T)
  assert np.isfinite(gcj.gradcam(net.apply, v, layer="stem")(X, T).cam).all()


@pytest.mark.parametrize("framework", CASES)
def test_fullgrad_refuses_convolutions_inside_a_scan(framework):
  """FullGrad needs each layer's own bias; one conv standing for every iteration of a
  scan is refused by name rather than counted once."""
  model, params, _ = CASES[framework]
  with pytest.raises(gcj.UnsupportedError, match="blocks/conv runs inside a loop"):
    gcj.cam(model, params, method="fullgrad")(X, T)
