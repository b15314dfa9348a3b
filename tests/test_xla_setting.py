"""The XLA flags the command runs under (gradcam_jax/_xla_setting.py) and
``gradcam-jax bench`` (gradcam_jax/_bench.py): set for the command's own process only
when the user set none, never by the library."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest

from gradcam_jax.cli import xla_setting as _xla_setting
from tests.job_helpers import ROOT

NOYNN = "--xla_cpu_experimental_ynn_fusion_type="


def test_choose_follows_option_then_environment_then_project_default():
  assert _xla_setting.choose(None, {}) == (_xla_setting.SETTINGS[_xla_setting.CHOSEN],
                                           "gradcam-jax", True)
  assert _xla_setting.choose(None, {"XLA_FLAGS": "--x=1"}) == ("--x=1", "XLA_FLAGS",
                                                               False)
  # an empty XLA_FLAGS is a choice too (XLA's defaults), left alone
  assert _xla_setting.choose(None, {"XLA_FLAGS": ""}) == ("", "XLA_FLAGS", False)
  assert _xla_setting.choose("default", {"XLA_FLAGS": "--x=1"}).flags == ""
  assert _xla_setting.choose("noynn", {}).flags == NOYNN
  assert _xla_setting.choose("--y=2", {"XLA_FLAGS": "--x=1"}) == ("--y=2", "--xla-flags",
                                                                  True)


def _child(environ_flags, *cli_args):
  """Run the command's main() in a fresh process on an empty folder (exit 3, no
  image) and report XLA_FLAGS as it was after importing the library and after main."""
  script = (
      "import json, os, sys\n"
      "import gradcam_jax\n"
      "after_import = os.environ.get('XLA_FLAGS')\n"
      "from gradcam_jax import cli\n"
      "rc = cli.main(sys.argv[1:])\n"
      "print(json.dumps({'rc': rc, 'after_import': after_import,\n"
      "                  'after_main': os.environ.get('XLA_FLAGS')}))\n")
  env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
  env["PYTHONPATH"] = str(ROOT)
  if environ_flags is not None:
    env["XLA_FLAGS"] = environ_flags
  proc = subprocess.run([sys.executable, "-c", script, *cli_args], env=env,
                        capture_output=True, text=True, timeout=120)
  lines = proc.stdout.strip().splitlines()
  return lines, json.loads(lines[-1])


@pytest.fixture(scope="module")
def empty(tmp_path_factory):
  return tmp_path_factory.mktemp("empty")


@pytest.fixture
def out(tmp_path):
  return str(tmp_path / "out")


def test_command_sets_the_flag_when_xla_flags_is_unset(empty, out):
  lines, got = _child(None, "explain", str(empty), "--out", out)
  assert got["rc"] == 3  # nothing to explain, after the flags were chosen
  assert got["after_import"] is None  # importing the library changes nothing
  assert got["after_main"] == _xla_setting.SETTINGS[_xla_setting.CHOSEN]
  assert lines[0].startswith("XLA flags: ") and "because XLA_FLAGS is unset" in lines[0]


def test_command_leaves_the_users_xla_flags_alone(empty, out):
  lines, got = _child("--xla_force_host_platform_device_count=2", "explain", str(empty),
                      "--out", out)
  assert got["after_main"] == "--xla_force_host_platform_device_count=2"
  assert "left as it is" in lines[0]


def test_xla_flags_option_overrides(empty, out):
  lines, got = _child("--xla_force_host_platform_device_count=2", "explain", str(empty),
                      "--out", out, "--xla-flags", "default")
  assert got["after_main"] == ""
  assert "from --xla-flags" in lines[0]


def test_xla_flags_option_rejects_a_word_that_is_no_setting(capsys):
  from gradcam_jax import cli
  with pytest.raises(SystemExit) as err:
    cli.main(["explain", "x", "--xla-flags", "fast"])
  assert err.value.code == 2
  message = capsys.readouterr().err
  assert "default, noynn, ynn-individual" in message and "'fast'" in message


@pytest.mark.slow
def test_bench_times_every_setting_and_names_the_fastest():
  env = dict(os.environ, PYTHONPATH=str(ROOT), XLA_FLAGS="")
  proc = subprocess.run([sys.executable, "-m", "gradcam_jax.cli", "bench", "--quick",
                         "--calls", "1", "--batch-size", "2"], env=env,
                        capture_output=True, text=True, timeout=300)
  assert proc.returncode == 0, proc.stderr
  assert "one round can flip the answer" in proc.stdout  # --quick says what it costs
  # each row: the setting, then forward and explainer as "seconds s (ratio to default)"
  rows = {line.split()[0]: re.findall(r"([\d.]+) s \(\s*([\d.]+)x\)", line)
          for line in proc.stdout.splitlines()
          if line.split() and line.split()[0] in _xla_setting.SETTINGS}
  assert set(rows) == set(_xla_setting.SETTINGS)
  assert all(len(r) == 2 for r in rows.values())
  assert [ratio for _, ratio in rows["default"]] == ["1.00", "1.00"]
  for name, cells in rows.items():
    for (sec, ratio), (base, _) in zip(cells, rows["default"]):
      # seconds are printed to 4 decimals and ratios to 2, both from unrounded times
      sec, base, half = float(sec), float(base), 0.5e-4
      assert (sec - half) / (base + half) - 0.005 <= float(ratio) <= (
          (sec + half) / (base - half) + 0.005)
  seconds = {name: float(r[1][0]) for name, r in rows.items()}
  fastest = proc.stdout.split("fastest for gradcam: ")[1]
  low = min(seconds.values())
  rounding = 1e-4  # the table prints seconds to 4 decimals
  if fastest.startswith("XLA's defaults"):
    assert low >= (1 - 0.05) * seconds["default"] - rounding
  else:
    named = fastest.split(",")[0]
    assert seconds[named] <= low + rounding and f"--xla-flags {named}" in fastest
    assert seconds[named] < (1 - 0.05) * seconds["default"] + rounding


def test_bench_reports_a_bad_model_as_a_usage_error():
  env = dict(os.environ, PYTHONPATH=str(ROOT), XLA_FLAGS="")
  proc = subprocess.run([sys.executable, "-m", "gradcam_jax.cli", "bench", "--quick",
                         "--model", "nope"], env=env, capture_output=True, text=True,
                        timeout=120)
  assert proc.returncode == 2
  assert proc.stderr.strip().splitlines()[-1] == (
      "gradcam-jax bench: error: --model: expected one of demo, vgg16, resnet50, "
      "keras.applications.NAME, keras:FILE.keras or MODULE:FACTORY; got 'nope'.")


@pytest.mark.slow
@pytest.mark.parametrize("form", ["keras:FILE", "keras.applications"])
def test_bench_takes_every_keras_model_form(tmp_path, form):
  """bench accepted the Keras forms half-way and crashed with a traceback (exit 1):
  its forward called the Keras model on (variables, images). It now runs the model
  through its adapter, as the explainer does."""
  keras = pytest.importorskip("keras")
  if form == "keras:FILE":
    L = keras.layers
    inputs = keras.Input((32, 32, 3))
    pooled = L.GlobalAveragePooling2D()(L.Conv2D(4, 3, activation="relu", name="c")(inputs))
    keras.Model(inputs, L.Dense(3, activation="softmax")(pooled)).save(tmp_path / "m.keras")
    model = ["--model", f"keras:{tmp_path / 'm.keras'}"]
  else:
    model = ["--model", "keras.applications.MobileNetV3Small", "--random-weights"]
  env = dict(os.environ, PYTHONPATH=str(ROOT), XLA_FLAGS="", KERAS_BACKEND="jax")
  proc = subprocess.run([sys.executable, "-m", "gradcam_jax.cli", "bench", "--quick",
                         "--calls", "1", "--batch-size", "1", *model], env=env,
                        capture_output=True, text=True, timeout=600)
  assert proc.returncode == 0, proc.stderr[-2000:]
  assert "fastest for gradcam" in proc.stdout


@pytest.mark.slow
def test_bench_reports_the_spread_of_its_rounds():
  env = dict(os.environ, PYTHONPATH=str(ROOT), XLA_FLAGS="")
  proc = subprocess.run([sys.executable, "-m", "gradcam_jax.cli", "bench", "--rounds", "2",
                         "--calls", "1", "--batch-size", "1"], env=env,
                        capture_output=True, text=True, timeout=600)
  assert proc.returncode == 0, proc.stderr
  assert "spread of explain over rounds" in proc.stdout
  spreads = [re.findall(r"x\)\s+([\d.]+)%$", line) for line in proc.stdout.splitlines()
             if line.split() and line.split()[0] in _xla_setting.SETTINGS]
  assert len(spreads) == len(_xla_setting.SETTINGS) and all(len(s) == 1 for s in spreads)
  assert "one round can flip" not in proc.stdout
