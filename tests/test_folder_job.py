"""`gradcam-jax explain` as a job (gradcam_jax.cli.job and its stages): the
index, resume and its settings, output names, failed writes, every method, devices
and processes, bounded decoding and memory. The kill-and-resume tests with real
signals are in test_kill_resume.py, the report in test_report.py."""

import json
import socket
import subprocess
from pathlib import Path

import numpy as np
import pytest

import gradcam_jax as gcj
from gradcam_jax import io, zoo
from gradcam_jax.cli import atomic, outputs as _outputs, records
from gradcam_jax.cli import job as _folder_job
from tests import job_helpers as jh
from tests.conftest import BAD, GOOD, explain


def test_explain_folder_resume_and_index(folder, tmp_path, capsys, model, reference):
  out = tmp_path / "out"
  status, stdout, stderr = explain(folder, "--out", out, "--batch-size", 3,
                                   capsys=capsys)
  assert status == 3  # some inputs failed: reported, the rest written
  assert "model demo: the shipped demo model: a digit classifier" in stdout
  records = io.read_index(out)
  by_name = {Path(r["path"]).name: r for r in records}
  assert set(by_name) == GOOD | BAD
  for name in GOOD:
    r = by_name[name]
    assert r["status"] == "ok" and 0 <= r["predicted"] < 10
    assert set(r["outputs"]) == set(_outputs.MEDIA_KINDS["image"])
    for rel in r["outputs"].values():
      assert (out / rel).exists(), rel
  for name in BAD:
    assert by_name[name]["status"] == "error" and by_name[name]["error"]
  assert all(f"failed: {folder / name}" in stderr for name in BAD)
  merged = [json.loads(l) for l in (out / "index.jsonl").read_text().splitlines()]
  assert len(merged) == len(GOOD | BAD)
  assert by_name["a.webp"]["outputs"]["arrays"] == "sub/a.webp.npz"  # mirrored

  # the npz holds the explanation of the resized, preprocessed image
  npz = np.load(out / by_name["a.png"]["outputs"]["arrays"])
  image, _ = io.read_image(folder / "a.png")
  ref = reference(model.preprocess(image[None]))
  np.testing.assert_allclose(npz["cam"], ref.cam[0], atol=1e-5)
  np.testing.assert_allclose(npz["guided_gradcam"], ref.guided_gradcam[0], atol=1e-5)

  # second run resumes: nothing good is redone, the bad files are tried again
  mtime = (out / by_name["a.png"]["outputs"]["arrays"]).stat().st_mtime_ns
  status, stdout, _ = explain(folder, "--out", out, capsys=capsys)
  assert f"{len(GOOD)} already done, {len(BAD)} to explain" in stdout
  assert (out / by_name["a.png"]["outputs"]["arrays"]).stat().st_mtime_ns == mtime
  sources, _, _ = io.find_images([str(folder)])
  job = _folder_job.Job(layer=model.layer, weights=by_name["a.png"]["settings"]["weights"])
  summary = _folder_job.explain_files(model, sources, out, job, overwrite=True,
                                      progress=False)
  assert (summary.ok, summary.skipped, summary.failed) == (len(GOOD), 0, len(BAD))

def test_target_by_name_and_index(folder, tmp_path):
  out = tmp_path / "out"
  assert explain(folder / "a.png", "--out", out, "--target", "7") == 0
  (record,) = io.read_index(out)
  assert record["target"] == 7 and record["target_name"] == "7"

# --- case 1: --out inside the inputs; files the run did not write ---------------------

def test_out_inside_an_input_folder_is_refused(tmp_path, capsys):
  same = tmp_path / "same"
  jh.write_png(same / "cat.png", jh.scenes(1)[0])
  jh.write_png(same / "cat_overlay.png", jh.scenes(2)[1])
  before = {p: p.read_bytes() for p in same.iterdir()}
  for out in (same, same / "results"):
    code, _, err = explain(same, "--out", out, capsys=capsys)
    assert code == 2 and "inside the input folder" in err and "Traceback" not in err
  assert {p: p.read_bytes() for p in same.iterdir()} == before
  # a folder holding inputs is refused as --out too, whatever the arguments' form
  code, _, err = explain(same / "cat.png", "--out", same, capsys=capsys)
  assert code == 2 and "holds the input" in err


def test_never_writes_over_a_file_it_did_not_write(tmp_path, capsys):
  inputs, out = tmp_path / "in", tmp_path / "out"
  jh.write_png(inputs / "x.png", jh.scenes(1)[0])
  out.mkdir()
  (out / "mine.txt").write_text("the user's")
  code, _, err = explain(inputs, "--out", out, capsys=capsys)
  assert code == 2 and "did not write" in err
  assert (out / "mine.txt").read_text() == "the user's"
  # a folder of ours where the user then put a file with an output's name
  out2 = tmp_path / "out2"
  jh.write_png(inputs / "y.png", jh.scenes(2)[1])
  assert explain(inputs / "x.png", "--out", out2) == 0
  (out2 / "y.png.npz").write_bytes(b"the user's file")
  assert explain(inputs, "--out", out2) == 0
  assert (out2 / "y.png.npz").read_bytes() == b"the user's file"
  record = {Path(r["path"]).name: r for r in io.read_index(out2)}["y.png"]
  assert record["outputs"]["arrays"].startswith("y~") and (
      json.loads(str(np.load(out2 / record["outputs"]["arrays"])["meta"]))["path"]
      == str(inputs / "y.png"))

# --- case 2: output names are collision-free -------------------------------------------

def test_same_file_names_in_different_folders_keep_their_own_results(
    tmp_path, model, reference):
  coll = tmp_path / "coll"
  images = jh.scenes(3, seed=5)
  paths = [coll / "a" / "x.png", coll / "b" / "x.png", coll / "c" / "x~1.png"]
  for p, im in zip(paths, images):
    jh.write_png(p, im)
  out = tmp_path / "out"
  assert explain(*paths, "--out", out) == 0
  records = io.read_index(out)
  assert len(records) == 3
  assert len({r["outputs"]["arrays"] for r in records}) == 3
  assert len(jh.job_files(out)) == 3 * len(_outputs.MEDIA_KINDS["image"])
  want = reference(model.preprocess(np.stack(images)))
  for r in records:
    i = paths.index(Path(r["path"]))
    npz = np.load(out / r["outputs"]["arrays"])
    assert json.loads(str(npz["meta"]))["path"] == r["path"]
    np.testing.assert_allclose(npz["cam"], want.cam[i], atol=1e-5)

# --- case 4: resume redoes what other settings or another file produced ------------------

def test_resume_redoes_results_of_other_settings(tmp_path, capsys):
  inputs, out = tmp_path / "in", tmp_path / "out"
  for i, im in enumerate(jh.scenes(3)):
    jh.write_png(inputs / f"{i}.png", im)
  assert explain(inputs, "--out", out) == 0
  for extra, changed in ((["--target", "5"], ("target", 5)),
                         (["--target", "5", "--layer", "block3_relu2"],
                          ("layer", "block3_relu2")),
                         (["--target", "5", "--layer", "block3_relu2",
                           "--method", "hirescam"], ("method", "hirescam"))):
    code, stdout, _ = explain(inputs, "--out", out, *extra, capsys=capsys)
    assert code == 0 and "0 already done, 3 to explain" in stdout, extra
    assert all(r["settings"][changed[0]] == changed[1] for r in io.read_index(out))
  same = ["--target", "5", "--layer", "block3_relu2", "--method", "hirescam"]
  code, stdout, _ = explain(inputs, "--out", out, *same, capsys=capsys)
  assert "3 already done, 0 to explain" in stdout
  # argument order does not matter; a changed file is redone
  code, stdout, _ = explain(inputs / "2.png", inputs / "1.png", inputs / "0.png",
                            "--out", out, *same, capsys=capsys)
  assert "3 already done, 0 to explain" in stdout
  jh.write_png(inputs / "1.png", jh.scenes(5)[4])
  code, stdout, _ = explain(inputs, "--out", out, *same, capsys=capsys)
  assert "2 already done, 1 to explain" in stdout

# --- case 6: long names, deep trees, failed writes ---------------------------------------

def test_long_names_and_deep_trees_are_explained(tmp_path):
  inputs = tmp_path / "in"
  long_name = inputs / ("x" * 240 + ".png")
  deep = inputs.joinpath(*[f"level{i:02d}" for i in range(30)], "deep.png")
  images = jh.scenes(3)
  jh.write_png(long_name, images[0])
  jh.write_png(deep, images[1])
  jh.write_png(inputs / "plain.png", images[2])
  out = tmp_path / "out"
  assert explain(inputs, "--out", out) == 0
  records = io.read_index(out)
  assert [r["status"] for r in records] == ["ok"] * 3
  for r in records:
    for rel in r["outputs"].values():
      assert (out / rel).stat().st_size > 0, rel
  assert explain(inputs, "--out", out) == 0  # the resume does not crash either


def test_a_failed_write_is_reported_and_the_others_are_written(
    tmp_path, monkeypatch, capsys):
  inputs = tmp_path / "in"
  for i, im in enumerate(jh.scenes(3)):
    jh.write_png(inputs / f"{i}.png", im)
  real = atomic.write_atomically

  def failing(files, tmp_dir):
    if any("1.png" in p.name for p in files):
      raise OSError(28, "No space left on device")
    return real(files, tmp_dir)

  monkeypatch.setattr(records, "write_atomically", failing)
  out = tmp_path / "out"
  code, _, err = explain(inputs, "--out", out, capsys=capsys)
  assert code == 3 and "No space left on device" in err
  status = {Path(r["path"]).name: r["status"] for r in io.read_index(out)}
  assert status == {"0.png": "ok", "1.png": "error", "2.png": "ok"}
  monkeypatch.setattr(records, "write_atomically", real)
  code, stdout, _ = explain(inputs, "--out", out, capsys=capsys)
  assert code == 0 and "2 already done, 1 to explain" in stdout

# --- --method: every CAM method, recorded with each result --------------------------------

ONE_DEVICE = jh.ONE_DEVICE


@pytest.mark.slow
@pytest.mark.parametrize("method", [  # keyed methods are refused (tests/test_cli.py)
    m for m in sorted(gcj.METHODS) if not gcj.ALL_METHODS[m].keyed] + [
    "scorecam", "ablationcam", "iscam", "shapleycam", "fullgrad"])
def test_every_method(tmp_path, model, method):
  image = jh.scenes(1)[0]
  jh.write_png(tmp_path / "in" / "a.png", image)
  out = tmp_path / "out"
  args = (tmp_path / "in", "--out", out, "--method", method, "--save", "arrays")
  if method in ONE_DEVICE:
    assert jh.run(*args, "--quiet").returncode == 0
  else:
    assert explain(*args) == 0
  (record,) = io.read_index(out)
  assert record["settings"]["method"] == method and set(record["outputs"]) == {"arrays"}
  npz = np.load(out / record["outputs"]["arrays"])
  layer = None if method == "fullgrad" else model.layer  # FullGrad: every layer
  want = gcj.cam(model.apply_fn, model.variables, layer=layer, method=method)(
      model.preprocess(image[None]))
  np.testing.assert_allclose(npz["cam"], want.cam[0], atol=2e-5)
  np.testing.assert_allclose(npz["guided_gradcam"],
                             npz["guided"] * npz["cam"][..., None], atol=1e-6)


def test_float16_arrays(tmp_path):
  jh.write_png(tmp_path / "in" / "a.png", jh.scenes(1)[0])
  out = tmp_path / "out"
  assert explain(tmp_path / "in", "--out", out, "--arrays-dtype", "float16") == 0
  (record,) = io.read_index(out)
  npz = np.load(out / record["outputs"]["arrays"])
  assert npz["cam"].dtype == np.float16 and npz["logits"].dtype == np.float32

# --- devices and processes ----------------------------------------------------------------

def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]


def test_two_processes_under_jax_distributed(folder, tmp_path):
  out = tmp_path / "out"
  port = _free_port()
  procs = []
  for pid in range(2):
    env = dict(jh.CHILD_ENV, JAX_COORDINATOR_ADDRESS=f"localhost:{port}",
               JAX_NUM_PROCESSES="2", JAX_PROCESS_ID=str(pid))
    procs.append(subprocess.Popen(
        jh.command(folder, "--out", out, "--quiet", "--batch-size", 2), env=env,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
  results = [p.communicate(timeout=300) for p in procs]
  assert [p.returncode for p in procs] == [3, 3], results
  parts = sorted(out.glob("index.part-*.jsonl"))
  assert [p.name for p in parts] == ["index.part-0000.jsonl", "index.part-0001.jsonl"]
  per_part = [{json.loads(l)["path"] for l in p.read_text().splitlines()} for p in parts]
  assert per_part[0] and per_part[1] and not per_part[0] & per_part[1]
  merged = [json.loads(l) for l in (out / "index.jsonl").read_text().splitlines()]
  assert {Path(r["path"]).name for r in merged} == GOOD | BAD


def tiny_zoo_model():
  """A `module:factory` for --model: any ZooModel-shaped record works."""
  from tests import models
  model, variables = models.init(models.VggNet)
  return zoo.ZooModel("tiny", model, model.apply, variables, "conv2",
                      lambda im: np.asarray(im, np.float32)[..., :3] / 255.0,
                      [str(i) for i in range(4)], (8, 8))


def test_module_factory_model(folder, tmp_path):
  out = tmp_path / "out"
  assert explain(folder / "a.png", "--out", out,
                 "--model", "tests.test_folder_job:tiny_zoo_model") == 0
  (record,) = io.read_index(out)
  assert record["status"] == "ok" and record["predicted_name"] in "0123"
  npz = np.load(out / record["outputs"]["arrays"])
  assert npz["cam"].shape == (8, 8)

# --- case 10: memory does not grow with the folder ----------------------------------------

def test_job_memory_does_not_grow_with_the_number_of_inputs(tmp_path, model):
  """Records go to the journal, not to a list: the job's peak traced memory over
  2,000 inputs is within a few bytes per input of its peak over 500."""
  import tracemalloc
  folder = tmp_path / "many"
  folder.mkdir()
  for i in range(2000):
    (folder / f"{i:05d}.png").write_bytes(b"")  # each fails to decode: no compute
  sources, _, _ = io.find_images([str(folder)])
  job = _folder_job.Job(layer=model.layer)
  peaks = []
  for n in (100, 500, 2000):  # the first run warms up (imports, one-time objects)
    tracemalloc.start()
    _folder_job.explain_files(model, sources[:n], tmp_path / f"out{n}", job,
                              progress=False)
    peaks.append(tracemalloc.get_traced_memory()[1])
    tracemalloc.stop()
  per_input = (peaks[2] - peaks[1]) / 1500  # the last main measured 218 bytes
  assert per_input < 64, f"{per_input:.0f} bytes of peak memory per extra input"


def test_asking_for_fewer_kinds_deletes_nothing(tmp_path, capsys):
  """Issue 23 case 6: `--save overlay` on a folder explained before deleted every
  earlier .npz, input and Guided Grad-CAM PNG. --save says what to write: fewer
  kinds of the same computation are already done, and more kinds add to the files
  kept; only a different computation (here another method) removes the kinds it
  does not write again, so that one name never mixes two computations."""
  jh.write_png(tmp_path / "in" / "a.png", jh.scenes(1)[0])
  out = tmp_path / "out"
  everything = {"a.png" + _outputs.SUFFIXES[k] for k in _outputs.MEDIA_KINDS["image"]}
  assert explain(tmp_path / "in", "--out", out) == 0
  assert jh.job_files(out) == everything
  (first,) = io.read_index(out)
  code, said, _ = explain(tmp_path / "in", "--out", out, "--save", "overlay",
                          capsys=capsys)
  assert code == 0 and "1 already done, 0 to explain" in said
  assert jh.job_files(out) == everything and io.read_index(out) == [first]
  # same computation, one kind asked for that the folder lacks: written, others kept
  small = tmp_path / "small"
  assert explain(tmp_path / "in", "--out", small, "--save", "overlay,arrays") == 0
  assert explain(tmp_path / "in", "--out", small, "--save", "input") == 0
  (record,) = io.read_index(small)
  assert set(record["outputs"]) == {"overlay", "arrays", "input"}
  assert jh.job_files(small) == {"a.png.overlay.png", "a.png.npz", "a.png.input.png"}
  # another computation: what it does not write again would describe the old one
  assert explain(tmp_path / "in", "--out", out, "--save", "overlay",
                 "--method", "gradcam++") == 0
  (record,) = io.read_index(out)
  assert record["outputs"] == {"overlay": "a.png.overlay.png"}
  assert jh.job_files(out) == {"a.png.overlay.png"}


@pytest.mark.parametrize("how", ["glob", "symlinked folder", "recursive glob"])
def test_out_where_the_search_goes_is_refused_on_every_run(tmp_path, how, monkeypatch):
  """Accepted on the first run, refused on the identical rerun (exit 2) before: the
  outputs had become inputs. Now the same command gives the same decision."""
  monkeypatch.chdir(tmp_path)
  jh.write_png(tmp_path / "photos" / "a" / "x.png", np.zeros((8, 8, 3), np.uint8))
  (tmp_path / "elsewhere").mkdir()
  (tmp_path / "photos" / "linked").symlink_to(tmp_path / "elsewhere")
  args = {"glob": ("photos/*", "photos/out"),
          "symlinked folder": ("photos", "elsewhere/out"),
          "recursive glob": ("photos/**/*.png", "photos/new/out")}[how]
  for _ in range(2):
    code = explain(args[0], "--out", args[1], "--no-report")
    assert code == 2
    assert not (tmp_path / args[1]).exists()
  # a folder beside what a glob matches is fine, run after run
  jh.write_png(tmp_path / "flat" / "y.png", np.zeros((8, 8, 3), np.uint8))
  assert [explain("flat/*.png", "--out", "flat/out", "--no-report") for _ in range(2)] == [0, 0]


def test_file_names_that_are_not_utf8_are_explained(tmp_path):
  """A Latin-1 name (café.png from an old camera) crashed the job with
  UnicodeEncodeError in the output-name code, on every rerun: the folder could never
  be finished."""
  import os
  png = _outputs.encode_png(np.zeros((8, 8, 3), np.uint8))
  (tmp_path / "in").mkdir()
  long_stem = b"x" * 240 + b"\xe9"  # fits as an input; its outputs are shortened
  for name in (b"caf\xe9.png", long_stem + b".png", b"ok.png"):
    with open(os.path.join(os.fsencode(tmp_path / "in"), name), "wb") as f:
      f.write(png)
  out = tmp_path / "out"
  assert explain(tmp_path / "in", "--out", out) == 0
  records = io.read_index(out)
  assert len(records) == 3 and {r["status"] for r in records} == {"ok"}
  for r in records:  # every output is on disk under the name recorded
    assert all((out / rel).exists() for rel in r["outputs"].values()), r["outputs"]
  assert explain(tmp_path / "in", "--out", out) == 0  # resume: nothing redone
  assert len(io.read_index(out)) == 3
  page = (out / "report.html").read_text(encoding="utf-8")
  shown = json.dumps("caf\ufffd.png")[1:-1]  # as the page's JSON data holds it
  assert shown in page and "caf%E9.png" in page  # readable, and its URL
