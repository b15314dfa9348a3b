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
    ("vgg16", None, "needs weights: --weights imagenet .downloads Keras. VGG16"),
    ("demo", "/no/such/file", "no such file or folder"),
    ("no_such_module_xyz:make", None, "cannot import module"),
])
def test_bad_model_choices_are_usage_errors(spec, weights, words):
  with pytest.raises(UsageError, match=words):
    load_model(spec, weights, False)


def test_the_weights_identity_follows_the_weights_a_factory_returns(
    tmp_path, monkeypatch, capsys):
  """Issue 23 case 5: --model MODULE:FACTORY was recorded as "factory default": after
  the factory's weights changed, a rerun said "already done" and kept the old maps.
  The identity is now a digest of the weights used."""
  from tests import job_helpers as jh
  from tests.conftest import explain
  (tmp_path / "changing_factory.py").write_text(
      "import os\nimport jax\nfrom gradcam_jax import zoo\n\n"
      "def make():\n  m = zoo.load('demo')\n"
      "  scale = float(os.environ.get('FACTORY_SCALE', '1'))\n"
      "  return m._replace(variables=jax.tree.map(lambda a: a * scale, m.variables))\n")
  monkeypatch.syspath_prepend(str(tmp_path))
  images = tmp_path / "images"
  for i, scene in enumerate(jh.scenes(2)):
    jh.write_png(images / f"s{i}.png", scene)
  args = (images, "--model", "changing_factory:make", "--out", tmp_path / "out",
          "--save", "arrays")
  said = []
  for scale in ("1", "1", "1.5"):
    monkeypatch.setenv("FACTORY_SCALE", scale)
    code, out, _ = explain(*args, capsys=capsys)
    assert code == 0
    said.append(next(l for l in out.splitlines() if "inputs for this process" in l))
  assert "0 already done, 2 to explain" in said[0]
  assert "2 already done, 0 to explain" in said[1]
  assert "0 already done, 2 to explain" in said[2], said  # new weights: redone


def test_the_digest_names_the_weights():
  import numpy as np
  from gradcam_jax.cli.model_options import weights_digest
  a = {"w": np.arange(6, dtype=np.float32).reshape(2, 3), "b": np.zeros(3, np.float32)}
  assert weights_digest(a) == weights_digest({k: v.copy() for k, v in a.items()})
  for other in ({**a, "b": np.full(3, 1e-7, np.float32)},  # a value
                {**a, "w": a["w"].reshape(3, 2)},  # a shape, same bytes
                {**a, "w": a["w"].astype(np.float64)},  # a dtype
                {"w2": a["w"], "b": a["b"]}):  # a name
    assert weights_digest(other) != weights_digest(a)


@pytest.mark.slow
def test_random_keras_weights_are_the_same_in_every_process():
  """Issue 23 case 5: keras.applications.NAME --random-weights was recorded as
  "random(seed 0)" while each process drew other weights: a resumed or
  multi-process folder mixed two models under one identity."""
  import subprocess
  import sys
  from tests import job_helpers as jh
  code = (
      "import hashlib, numpy as np, jax\n"
      "from gradcam_jax.cli.model_options import load_model\n"
      "m, identity = load_model('keras.applications.MobileNetV3Small', None, True)\n"
      "h = hashlib.sha256()\n"
      "[h.update(np.asarray(a).tobytes()) for a in jax.tree.leaves(m.variables)]\n"
      "print(identity, h.hexdigest())\n")
  said = [subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env=dict(jh.CHILD_ENV, KERAS_BACKEND="jax"), timeout=300)
          for _ in range(2)]
  for s in said:
    assert s.returncode == 0, s.stderr[-2000:]
  lines = [s.stdout.strip().splitlines()[-1] for s in said]
  assert lines[0] == lines[1], lines
  assert lines[0].startswith("random (seed 0) sha256:")
