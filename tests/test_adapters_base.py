"""The adapter protocol's shared bookkeeping (gradcam_jax/_adapters/base.py): calls
numbered per layer, each edit applied at its call and reached exactly once."""

import pytest

import gradcam_jax as gcj
from gradcam_jax._adapters import ADAPTERS, Adapter
from gradcam_jax._adapters.base import CallCounter, EditsAt
from gradcam_jax._edits import Edit


def test_call_counter_numbers_each_key_on_its_own():
  count = CallCounter()
  assert [count("a"), count("b"), count("a"), count("a")] == [0, 0, 1, 2]


def test_edits_apply_at_their_call_and_are_checked():
  double = Edit(lambda a: a * 2)
  at = EditsAt([(gcj.LayerRef(("blk",), 1), double), (gcj.LayerRef(("fc",)), double)])
  assert [at(("blk",), 5), at(("blk",), 5), at(("other",), 5)] == [5, 10, 5]
  with pytest.raises(gcj.ModelError, match="reached 1 edit"):
    at.check()  # fc was never called
  assert at(("fc",), 1) == 2
  at.check()


def test_every_adapter_implements_the_protocol():
  for adapter in ADAPTERS:
    for name in ("claims", "adapt", "variables", "parse_layer", "list_layers",
                 "run_with_edits", "__call__"):
      assert callable(getattr(adapter, name, None)), (adapter.__name__, name)
      assert name in Adapter.__dict__ or name == "__call__"
