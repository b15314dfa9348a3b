"""Messages a person reads (issue 24 item 5): each option's default shown once and
readably, a wrong --layer listing the layers nearest the output first and how to
list them all, --target by name with suggestions, the layer chosen named at start,
and `gradcam-jax layers`."""

import numpy as np
import pytest

from gradcam_jax.cli.main import build_parser
from tests import job_helpers as jh
from tests.conftest import explain


def _subparsers():
  parser = build_parser()
  action = next(a for a in parser._actions if a.dest == "command")
  return action.choices


def test_every_default_is_shown_once_and_readably():
  """Was "(default: the predicted class) (default: None)" and a Python tuple."""
  for name, sub in _subparsers().items():
    formatter = sub._get_formatter()
    for action in sub._actions:
      if not action.option_strings or action.help is None:
        continue
      text = formatter._get_help_string(action)
      assert text.count("default") <= 1 or "(default:" not in text, (name, text)
      assert "(default: None)" not in text and "(default: False)" not in text, text
      assert "(default: (" not in text and "('" not in text, text  # no Python tuple
    flat = " ".join(sub.format_help().split())
    assert "(default: None)" not in flat, name
  flat = " ".join(_subparsers()["explain"].format_help().split())
  assert "(default: input,overlay,guided_gradcam,arrays,nifti)" in flat
  assert "(default: the predicted class)" in flat and "(default: demo)" in flat


@pytest.fixture
def images(tmp_path):
  folder = tmp_path / "in"
  jh.write_png(folder / "a.png", jh.scenes(1)[0][:8, :8])
  return folder


def test_a_wrong_layer_lists_those_nearest_the_output_first(images, tmp_path, capsys):
  code, _, err = explain(images, "--layer", "nope", "--out", tmp_path / "o", capsys=capsys)
  assert code == 2 and "nearest the output first" in err
  listed = [l.split()[0] for l in err.splitlines() if l.startswith("  ")]
  assert listed[0] == "fc2" and listed[-1] == "block1_conv1", listed
  assert "gradcam-jax layers --model demo lists every layer" in err


def test_target_names_are_matched_and_near_misses_suggested(images, tmp_path, capsys):
  model = ("--model", "tests.job_helpers:named_classes_model")
  code, _, err = explain(images, *model, "--target", "tabbby", "--out", tmp_path / "o",
                         capsys=capsys)
  assert code == 2 and "Did you mean 'tabby'" in err, err
  code, _, err = explain(images, *model, "--target", "cat", "--out", tmp_path / "o",
                         capsys=capsys)
  assert code == 2 and "'tiger cat', 'Persian cat'" in err, err
  code, out, _ = explain(images, *model, "--target", "Tabby", "--out", tmp_path / "o",
                         capsys=capsys)
  assert code == 0 and "target tabby" in out


def test_the_start_up_line_names_the_layer_chosen(images, tmp_path, capsys):
  """A model without a usual layer (a Keras file, a factory's layer=None) printed
  `layer None`; it now names the automatic choice, which the records keep."""
  import json
  code, out, _ = explain(images, "--model", "tests.test_cli_messages:no_layer_model",
                         "--out", tmp_path / "o", capsys=capsys)
  assert code == 0 and "layer None" not in out
  chosen = out.split(", layer ")[1].split(",")[0]
  assert chosen == "conv2", out
  (record,) = [json.loads(l) for l in (tmp_path / "o" / "index.jsonl").read_text()
               .splitlines()]
  assert record["settings"]["layer"] == "conv2"


def no_layer_model():
  return jh.named_classes_model()._replace(layer=None)


def test_layers_prints_the_models_layers(capsys):
  from gradcam_jax import cli
  assert cli.main(["layers", "--model", "demo"]) == 0
  out = capsys.readouterr().out
  assert "block4_relu2" in out and "output: (1, 10)" in out
  assert np.argmax([l.startswith("  fc2") for l in out.splitlines()]) > 0
