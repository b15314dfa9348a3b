"""The `gradcam-jax` command line: usage errors exit 2 before anything is decoded,
messages in CLI words, --version and --help, the zoo's conventions, `demo`."""

import subprocess
import sys

import cv2
import pytest

import gradcam_jax as gcj
from gradcam_jax import cli, io, zoo
from gradcam_jax.zoo import demo as demo_model
from tests import job_helpers as jh
from tests.conftest import explain


# --- case 9: usage errors exit 2 before any image is decoded; nothing found exits 3 ------

@pytest.mark.parametrize("args, words", [
    (["--batch-size", "0"], "--batch-size"),
    (["--batch-size", "-4"], "--batch-size"),
    (["--layer", "nope"], "--layer"),
    (["--model", "bogus"], "demo, vgg16, resnet50"),
    (["--model", "nomod:f"], "cannot import module 'nomod'"),
    (["--target", "99"], "0..9"),
    (["--method", "nope"], "--method"),
    (["--method", "sscam"], "sscam draws at random"),
    (["--method", "randomcam"], "gcj.cam(..., method='randomcam')(images, key=...)"),
    (["--save", "overlay,nope"], "--save"),
    (["--model", "vgg16"], "--random-weights"),
    (["--weights", "missing.safetensors"], "no such file"),
])
def test_usage_errors_exit_2_with_one_message(folder, tmp_path, monkeypatch, capsys,
                                              args, words):
  def no_decoding(*a, **k):
    raise AssertionError("an image was decoded before the usage check")
  monkeypatch.setattr(io, "read_image", no_decoding)
  monkeypatch.setattr(io, "read_oriented", no_decoding)  # what the job decodes with
  try:
    code = cli.main(["explain", str(folder), "--out", str(tmp_path / "out"), *args])
  except SystemExit as stop:  # argparse's own usage errors
    code = stop.code
  err = capsys.readouterr().err
  assert code == 2 and words in err and "Traceback" not in err, err
  assert "weights=PATH" not in err and "random_init" not in err  # CLI words only


def test_out_that_is_a_file_and_no_images(tmp_path, capsys):
  (tmp_path / "file").write_text("x")
  jh.write_png(tmp_path / "in" / "a.png", jh.scenes(1)[0])
  code, _, err = explain(tmp_path / "in", "--out", tmp_path / "file", capsys=capsys)
  assert code == 2 and "it is a file" in err
  (tmp_path / "nothing").mkdir()
  code, _, err = explain(tmp_path / "nothing", "--out", tmp_path / "o", capsys=capsys)
  assert code == 3 and "no image found" in err

# --- case 11: tried as a new user -----------------------------------------------------

def test_missing_weights_reader_names_the_extra(tmp_path):
  weights = tmp_path / "vgg16.safetensors"
  weights.write_bytes(b"not read")
  jh.write_png(tmp_path / "in" / "a.png", jh.scenes(1)[0])
  code = ("import sys; sys.modules['safetensors'] = None; "
          "from gradcam_jax import cli; "
          f"sys.exit(cli.main(['explain', {str(tmp_path / 'in')!r}, '--model', 'vgg16', "
          f"'--weights', {str(weights)!r}, '--out', {str(tmp_path / 'out')!r}]))")
  done = subprocess.run([sys.executable, "-c", code], env=jh.CHILD_ENV,
                        capture_output=True, text=True, timeout=120)
  assert done.returncode == 2, done.stderr
  assert 'pip install "gradcam-jax[weights]"' in done.stderr
  assert "Traceback" not in done.stderr

def test_version_and_help_show_defaults(capsys):
  with pytest.raises(SystemExit) as stop:
    cli.main(["--version"])
  assert stop.value.code == 0 and capsys.readouterr().out.strip() == (
      f"gradcam-jax {gcj.__version__}")
  with pytest.raises(SystemExit):
    cli.main(["explain", "--help"])
  text = " ".join(capsys.readouterr().out.split())
  for default in ("(default: 16)", "(default: demo)", "(default: gradcam)",
                  "(default: gradcam_out)", "(default: 40000000)",
                  "(default: float32)"):
    assert default in text, default

def test_zoo_models_default_to_their_resize_convention(model):
  assert model.resize == "squash"
  resnet = zoo.load("resnet50", random_init=True)  # torchvision's convention
  assert resnet.resize == "crop" and "centre crop" in resnet.about

def test_demo_command(tmp_path, capsys):
  assert cli.main(["demo", "--out", str(tmp_path / "demo")]) == 0
  text = capsys.readouterr().out
  _, records = demo_model.load_samples()
  assert text.count("Predicted class:") == len(records)
  assert (tmp_path / "demo" / "summary.png").exists()
  for r in records:
    figure = cv2.imread(str(tmp_path / "demo" / r["file"]))
    assert figure is not None and figure.shape[1] > 4 * 64
