"""Naming, listing and choosing layers (gradcam_jax/_layers.py)."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import pytest

import gradcam_jax as gcj
from gradcam_jax._layers import LayerInfo, parse_layer, select_layer


def test_parse_layer_forms():
  assert parse_layer(None) is None
  assert parse_layer("layer4/1") == gcj.LayerRef(("layer4", "1"))
  assert parse_layer("block@1") == gcj.LayerRef(("block",), 1)
  assert parse_layer("enc/proj.attend@2") == gcj.LayerRef(("enc", "proj"), 2, "attend")
  assert parse_layer(("blocks", 3, "conv")) == gcj.LayerRef(("blocks", "3", "conv"))
  ref = gcj.LayerRef(("x",), 0)
  assert parse_layer(ref) is ref
  assert str(gcj.LayerRef(("enc", "proj"), 2, "attend")) == "enc/proj.attend@2"
  with pytest.raises(gcj.LayerNotFoundError, match="call index after '@'"):
    parse_layer("block@one")
  with pytest.raises(gcj.LayerSpecError, match="got 3.5"):
    parse_layer(3.5)


def test_layer_info_of_an_output():
  info = LayerInfo.of_output(["a", "b"], "__call__", 1, jnp.zeros((2, 4, 4, 3)), "Conv")
  assert info == LayerInfo(("a", "b"), "__call__", 1, (2, 4, 4, 3), "float32", "Conv")
  assert LayerInfo.of_output(("t",), "__call__", 0, (1, 2), "Tuple").shape is None
  assert info.ref(calls=1) == gcj.LayerRef(("a", "b"))        # the only call: no index
  assert info.ref(calls=2) == gcj.LayerRef(("a", "b"), 1)


def _infos():
  shape = lambda *s: dict(shape=s, dtype="float32")
  return [LayerInfo(("c1",), "__call__", 0, module_type="Conv", **shape(2, 8, 8, 4)),
          LayerInfo(("blk",), "__call__", 0, module_type="Conv", **shape(2, 4, 4, 4)),
          LayerInfo(("blk",), "__call__", 1, module_type="Conv", **shape(2, 4, 4, 4)),
          LayerInfo(("pool",), "__call__", 0, module_type="Pool", **shape(2, 1, 1, 4)),
          LayerInfo(("fc",), "__call__", 0, module_type="Dense", **shape(2, 3))]


def test_select_layer_automatic_and_by_name():
  infos = _infos()
  # automatic: the last (B, h, w, C) activation with h, w > 1 (not the 1x1 pool)
  assert select_layer(infos, None, 2) == infos[2]
  assert select_layer(infos, gcj.LayerRef(("c1",)), 2) == infos[0]
  assert select_layer(infos, gcj.LayerRef(("blk",), 1), 2) == infos[2]
  with pytest.raises(gcj.LayerNotFoundError, match="called 2 times"):
    select_layer(infos, gcj.LayerRef(("blk",)), 2)
  with pytest.raises(gcj.LayerNotFoundError, match="valid indices: 0..1"):
    select_layer(infos, gcj.LayerRef(("blk",), 5), 2)
  with pytest.raises(gcj.LayerShapeError, match="c1"):  # lists the spatial layers
    select_layer(infos, gcj.LayerRef(("fc",)), 2)
  with pytest.raises(gcj.LayerNotFoundError, match="pool"):  # lists every layer
    select_layer(infos, gcj.LayerRef(("nope",)), 2)


def test_list_layers_numbers_each_call_and_prints_a_table():
  class Net(nn.Module):
    @nn.compact
    def __call__(self, x):
      conv = nn.Conv(4, (3, 3), name="conv")
      x = conv(nn.relu(conv(x[..., :4])))
      return nn.Dense(3, name="fc")(x.mean((1, 2)))

  net, x = Net(), jnp.ones((2, 6, 6, 4))
  layers, output = gcj.list_layers(net.apply, net.init(jax.random.key(0), x), x)
  assert [(l.path, l.call) for l in layers] == [(("conv",), 0), (("conv",), 1),
                                                (("fc",), 0)]
  assert output.shape == (2, 3)
  table = str(gcj.list_layers(net.apply, net.init(jax.random.key(0), x), x))
  assert "conv@0" in table and "conv@1" in table and "output: (2, 3)" in table


def test_exact_names_with_dots_win_over_parsing():
  """A layer named "features.0" (models converted from PyTorch) was parsed as path
  "features" + method "0" and reported missing, while the error listed it."""
  infos = [LayerInfo(("features.0",), "__call__", 0, (2, 6, 6, 4), "float32", "Conv2D"),
           LayerInfo(("enc", "proj"), "attend", 0, (2, 6, 6, 4), "float32", "Attn")]
  assert select_layer(infos, parse_layer("features.0"), 2) == infos[0]
  # a method is still a method where no layer has the literal name
  assert select_layer(infos, parse_layer("enc/proj.attend"), 2) == infos[1]
