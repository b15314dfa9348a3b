"""The command's model options (gradcam_jax/cli/model_options.py): one definition
for explain and bench, and usage errors in command-line words."""

import pytest

from gradcam_jax.cli.main import build_parser
from gradcam_jax.cli.model_options import MODEL_FORMS, load_model
from gradcam_jax.cli.usage import UsageError

OPTIONS = ("--model", "--weights", "--random-weights", "--output", "--layer", "--method")


def _options(sub):
  parser = build_parser()
  action = next(a for a in parser._actions if a.dest == "command")
  return {o: a for a in action.choices[sub]._actions for o in a.option_strings}


def test_explain_and_bench_take_the_same_model_options():
  explain, bench = _options("explain"), _options("bench")
  for option in OPTIONS:
    assert explain[option].help == bench[option].help, option
    assert explain[option].default == bench[option].default, option
  assert "keras:FILE.keras" in bench["--model"].help == MODEL_FORMS


@pytest.mark.parametrize("spec, weights, words", [
    ("nope", None, "expected one of demo, vgg16, resnet50"),
    ("vgg16", None, "needs --weights FILE"),
    ("demo", "/no/such/file", "no such file or folder"),
    ("no_such_module_xyz:make", None, "cannot import module"),
])
def test_bad_model_choices_are_usage_errors(spec, weights, words):
  with pytest.raises(UsageError, match=words):
    load_model(spec, weights, False)
