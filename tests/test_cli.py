"""`gradcam-jax explain` end to end: mixed good and bad files, resume, the index,
sharding over 4 fake devices, two processes under jax.distributed; and `demo`."""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import cv2
import jax
import numpy as np
import pytest

import gradcam_jax as gcj
from gradcam_jax import _batch, cli, io, zoo
from gradcam_jax.zoo import demo as demo_model

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
  """Good images in every supported form, and bad files of every kind."""
  d = tmp_path_factory.mktemp("inputs")
  images, _ = demo_model.load_samples()
  rgb = [im[..., ::-1] for im in images]  # OpenCV writes BGR
  cv2.imwrite(str(d / "a.png"), rgb[0])
  cv2.imwrite(str(d / "b.jpg"), cv2.resize(rgb[1], (100, 80)))
  cv2.imwrite(str(d / "gray.png"), cv2.cvtColor(rgb[2], cv2.COLOR_BGR2GRAY))
  cv2.imwrite(str(d / "rgba.png"), cv2.cvtColor(rgb[3], cv2.COLOR_BGR2BGRA))
  cv2.imwrite(str(d / "deep16.png"), rgb[4].astype(np.uint16) * 257)
  (d / "sub").mkdir()
  cv2.imwrite(str(d / "sub" / "c.bmp"), rgb[5])
  cv2.imwrite(str(d / "sub" / "a.webp"), rgb[0])
  good_jpeg = cv2.imencode(".jpg", rgb[1])[1].tobytes()
  (d / "truncated.jpg").write_bytes(good_jpeg[:len(good_jpeg) // 2])
  (d / "text.png").write_text("this is not an image")
  (d / "empty.png").write_bytes(b"")
  (d / "notes.txt").write_text("ignored: not an image extension")
  return d


GOOD = {"a.png", "b.jpg", "gray.png", "rgba.png", "deep16.png", "c.bmp", "a.webp"}
BAD = {"truncated.jpg", "text.png", "empty.png"}


def test_read_image_conversions(folder):
  for name in ("gray.png", "rgba.png", "deep16.png", "a.png"):
    image, error = io.read_image(folder / name)
    assert error is None and image.dtype == np.uint8 and image.shape == (64, 64, 3)
  deep, _ = io.read_image(folder / "deep16.png")
  plain = demo_model.load_samples()[0][4]
  np.testing.assert_array_equal(deep, plain)
  for name, reason in (("truncated.jpg", "truncated"), ("text.png", "not a decodable"),
                       ("empty.png", "empty file")):
    image, error = io.read_image(folder / name)
    assert image is None and reason in error


def test_find_images(folder):
  sources, missing = io.find_images([str(folder), str(folder / "nope*.png"),
                                     str(folder / "missing.png")])
  assert {s.path.name for s in sources} == GOOD | BAD
  assert len({s.stem for s in sources}) == len(sources)  # sub/a.webp != a.png
  assert len(missing) == 2


def test_explain_folder_resume_and_index(folder, tmp_path, capsys):
  out = tmp_path / "out"
  status = cli.main(["explain", str(folder), "--out", str(out), "--quiet",
                     "--batch-size", "3"])
  assert status == 3  # some inputs failed: reported, the rest written
  records = io.read_index(out)
  by_name = {Path(r["path"]).name: r for r in records}
  assert set(by_name) == GOOD | BAD
  for name in GOOD:
    r = by_name[name]
    assert r["status"] == "ok" and 0 <= r["predicted"] < 10
    for rel in r["outputs"]:
      assert (out / rel).exists(), rel
  for name in BAD:
    assert by_name[name]["status"] == "error" and by_name[name]["error"]
  stderr = capsys.readouterr().err
  assert all(f"failed: {folder / name}" in stderr for name in BAD)
  merged = [json.loads(l) for l in (out / "index.jsonl").read_text().splitlines()]
  assert len(merged) == len(GOOD | BAD)

  # the npz holds the explanation of the resized, preprocessed image
  model = zoo.load("demo")
  npz = np.load(out / by_name["a.png"]["outputs"][2])
  image, _ = io.read_image(folder / "a.png")
  ref = jax.jit(gcj.guided_gradcam(model.apply_fn, model.variables,
                                   layer=model.layer))(model.preprocess(image[None]))
  np.testing.assert_allclose(npz["cam"], ref.cam[0], atol=1e-5)
  np.testing.assert_allclose(npz["guided_gradcam"], ref.guided_gradcam[0], atol=1e-5)

  # second run resumes: nothing good is redone
  mtime = (out / by_name["a.png"]["outputs"][2]).stat().st_mtime_ns
  sources, _ = io.find_images([str(folder)])
  summary = _batch.explain_files(model, sources, out, progress=False)
  assert (summary.ok, summary.skipped, summary.failed) == (0, len(GOOD), len(BAD))
  assert (out / by_name["a.png"]["outputs"][2]).stat().st_mtime_ns == mtime
  summary = _batch.explain_files(model, sources, out, overwrite=True, progress=False)
  assert (summary.ok, summary.skipped) == (len(GOOD), 0)


def test_explain_target_by_name(folder, tmp_path):
  out = tmp_path / "out"
  assert cli.main(["explain", str(folder / "a.png"), "--out", str(out), "--quiet",
                   "--target", "7"]) == 0
  (record,) = io.read_index(out)
  assert record["target"] == 7 and record["target_name"] == "7"


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]


def test_two_processes_under_jax_distributed(folder, tmp_path):
  out = tmp_path / "out"
  port = _free_port()
  procs = []
  for pid in range(2):
    env = dict(os.environ, JAX_COORDINATOR_ADDRESS=f"localhost:{port}",
               JAX_NUM_PROCESSES="2", JAX_PROCESS_ID=str(pid),
               XLA_FLAGS="--xla_force_host_platform_device_count=1",
               PYTHONPATH=str(ROOT))
    procs.append(subprocess.Popen(
        [sys.executable, "-m", "gradcam_jax.cli", "explain", str(folder), "--out",
         str(out), "--quiet", "--batch-size", "2"], env=env, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True))
  results = [p.communicate(timeout=300) for p in procs]
  assert [p.returncode for p in procs] == [3, 3], results
  parts = sorted(out.glob("index.part-*.jsonl"))
  assert [p.name for p in parts] == ["index.part-0000.jsonl", "index.part-0001.jsonl"]
  per_part = [{json.loads(l)["path"] for l in p.read_text().splitlines()} for p in parts]
  assert per_part[0] and per_part[1] and not per_part[0] & per_part[1]
  merged = [json.loads(l) for l in (out / "index.jsonl").read_text().splitlines()]
  assert {Path(r["path"]).name for r in merged} == GOOD | BAD


def test_demo_command(tmp_path, capsys):
  assert cli.main(["demo", "--out", str(tmp_path / "demo")]) == 0
  text = capsys.readouterr().out
  _, records = demo_model.load_samples()
  assert text.count("Predicted class:") == len(records)
  assert (tmp_path / "demo" / "summary.png").exists()
  for r in records:
    figure = cv2.imread(str(tmp_path / "demo" / r["file"]))
    assert figure is not None and figure.shape[1] > 4 * 64


def test_decoding_runs_a_bounded_distance_ahead(tmp_path):
  """The decoder never holds more than `ahead` images beyond what was consumed."""
  sources = [io.Source(tmp_path / f"{i}.png", str(i)) for i in range(50)]
  started = []
  real = io.read_image

  def counting(path):
    started.append(path)
    return real(path)

  io.read_image = counting
  try:
    stream = _batch._decoded(sources, (8, 8), workers=2, ahead=4)
    consumed = 0
    for _ in range(10):
      next(stream)
      consumed += 1
      assert len(started) <= consumed + 4
  finally:
    io.read_image = real


def tiny_zoo_model():
  """A `module:factory` for --model: any ZooModel-shaped record works."""
  model, variables = models_init()
  return zoo.ZooModel("tiny", model, model.apply, variables, "conv2",
                      lambda im: np.asarray(im, np.float32)[..., :3] / 255.0,
                      [str(i) for i in range(4)], (8, 8))


def models_init():
  from tests import models
  return models.init(models.VggNet)


def test_module_factory_model(folder, tmp_path):
  out = tmp_path / "out"
  assert cli.main(["explain", str(folder / "a.png"), "--out", str(out), "--quiet",
                   "--model", "tests.test_cli:tiny_zoo_model"]) == 0
  (record,) = io.read_index(out)
  assert record["status"] == "ok" and record["predicted_name"] in "0123"
  npz = np.load(out / record["outputs"][2])
  assert npz["cam"].shape == (8, 8)
