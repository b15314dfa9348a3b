"""``gradcam-jax explain`` on signals (.npy), volumes (.npy, NIfTI) and video clips
(.avi, .mp4, uint8 .npy): each input read, fitted, explained as the library explains
it, and written with the pictures of its kind; bad files are failed records with the
reason and everything else is written; a rerun resumes."""

from __future__ import annotations

import json
import pickle

import cv2
import numpy as np
import pytest

import gradcam_jax as gcj
from gradcam_jax import io
from gradcam_jax.cli.inputs import fit_array
from tests import media_models
from tests.conftest import explain

nib = pytest.importorskip("nibabel", reason="NIfTI needs the nifti extra (nibabel)")


def _records(out) -> dict:
  return {r["path"].rsplit("/", 1)[-1]: r for r in io.read_index(out)}


def _library_cam(model, array) -> np.ndarray:
  """The map the library gives for one input fitted to the model: what the command
  must have written."""
  x = model.preprocess(fit_array(np.asarray(array, np.float32), model.input_size)[None])
  out = gcj.guided_gradcam(model.apply_fn, model.variables, layer="conv2")(x)
  return np.asarray(out.cam[0])


def test_fit_array_resamples_each_axis_and_keeps_linear_ramps():
  ramp = np.arange(10, dtype=np.float32)[:, None, None] * np.ones((1, 6, 2), np.float32)
  grown = fit_array(ramp, (20, 6))
  assert grown.shape == (20, 6, 2)
  # half-pixel linear interpolation: sample i of 20 reads (i + 0.5) / 2 - 0.5
  inner = (np.arange(1, 19) + 0.5) / 2 - 0.5
  np.testing.assert_allclose(grown[1:19, 3, 1], inner, atol=1e-5)
  shrunk = fit_array(ramp, (5, 3))  # area: the mean of each pair
  np.testing.assert_allclose(shrunk[:, 0, 0], [0.5, 2.5, 4.5, 6.5, 8.5], atol=1e-5)
  constant = fit_array(np.full((7, 9, 5, 1), 3.0, np.float32), (4, 4, 4))
  assert constant.shape == (4, 4, 4, 1)
  np.testing.assert_allclose(constant, 3.0, rtol=1e-6)  # area weights of 7/4: 1 ulp


def test_signals_from_npy(tmp_path, capsys):
  d = tmp_path / "in"
  (d / "sub").mkdir(parents=True)
  rng = np.random.default_rng(0)
  good = rng.standard_normal((40, 2)).astype(np.float32)
  np.save(d / "a.npy", good)
  np.save(d / "sub" / "exact.npy", good[:32])
  np.save(d / "one_channel.npy", good[:, 0])  # the model takes 2 channels
  (d / "pickled.npy").write_bytes(b"\x93NUMPY" + pickle.dumps([1, 2]))
  np.save(d / "objects.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
  np.save(d / "nan.npy", np.full((32, 2), np.nan, np.float32))
  cv2.imwrite(str(d / "photo.png"), np.zeros((8, 8, 3), np.uint8))  # not a signal
  out = tmp_path / "out"
  code, stdout, err = explain(d, "--out", out, "--model", "tests.media_models:signal",
                              capsys=capsys)
  assert code == 3, err
  assert "signal 32 (squash)" in stdout
  recs = _records(out)
  assert set(recs) == {"a.npy", "exact.npy", "one_channel.npy", "pickled.npy",
                       "objects.npy", "nan.npy"}  # the .png is not searched for
  assert "expected a signal (L, C=2)" in recs["one_channel.npy"]["error"]
  assert "(40,)" in recs["one_channel.npy"]["error"]
  assert "not a .npy array" in recs["pickled.npy"]["error"]
  assert "not a numeric array" in recs["objects.npy"]["error"]
  assert "NaN or Inf" in recs["nan.npy"]["error"]
  model = media_models.signal()
  for name, array in (("a.npy", good), ("exact.npy", good[:32])):
    r = recs[name]
    assert r["status"] == "ok" and set(r["outputs"]) == {"overlay", "arrays"}, r
    arrays = np.load(out / r["outputs"]["arrays"])
    assert arrays["cam"].shape == (32,) and arrays["guided"].shape == (32, 2)
    np.testing.assert_allclose(arrays["cam"], _library_cam(model, array), atol=1e-5)
    picture = cv2.imread(str(out / r["outputs"]["overlay"]))
    assert picture.shape == (160 + 24, 512, 3)
  code, stdout, _ = explain(d, "--out", out, "--model", "tests.media_models:signal",
                            capsys=capsys)
  assert code == 3 and "2 already done, 4 to explain" in stdout  # the bad are retried


def _nifti(path, volume, affine):
  nib.save(nib.Nifti1Image(np.asarray(volume, np.float32), affine), str(path))


def test_volumes_from_nifti_and_npy(tmp_path, capsys):
  d = tmp_path / "in"
  d.mkdir()
  rng = np.random.default_rng(1)
  scan = rng.normal(0, 100, (10, 12, 9)).astype(np.float32)
  affine = np.array([[0.8, 0, 0, -40], [0, 0.8, 0, -50], [0, 0, 2.5, 10], [0, 0, 0, 1]])
  _nifti(d / "scan.nii.gz", scan, affine)
  _nifti(d / "plain.nii", scan[:8, :8, :8], np.eye(4))
  np.save(d / "array.npy", scan[:8, :8, :8, None])
  (d / "fake.nii.gz").write_bytes(b"not a volume at all")
  np.save(d / "big.npy", np.zeros((40, 40, 40), np.float32))
  np.save(d / "flat.npy", np.zeros((8, 8), np.float32))
  out = tmp_path / "out"
  code, _, err = explain(d, "--out", out, "--model", "tests.media_models:volume",
                         "--max-elements", 30**3, capsys=capsys)
  assert code == 3, err
  recs = _records(out)
  assert "not a NIfTI volume" in recs["fake.nii.gz"]["error"]
  assert "too large: (40, 40, 40)" in recs["big.npy"]["error"]
  assert "expected a volume (D, H, W, C=1)" in recs["flat.npy"]["error"]
  for name in ("fake.nii.gz", "big.npy", "flat.npy"):
    assert f"failed: {d / name}: " in err
  model = media_models.volume()
  r = recs["scan.nii.gz"]
  assert set(r["outputs"]) == {"overlay", "arrays", "nifti"}
  arrays = np.load(out / r["outputs"]["arrays"])
  assert arrays["cam"].shape == (8, 8, 8) and arrays["cam_raw"].shape == (8, 8, 8)
  np.testing.assert_allclose(arrays["cam"], _library_cam(model, scan[..., None]),
                             atol=1e-5)
  written = nib.load(str(out / r["outputs"]["nifti"]))
  assert written.shape == scan.shape  # the scan's own voxel grid, over it in a viewer
  np.testing.assert_allclose(written.affine, affine)
  np.testing.assert_allclose(written.get_fdata(),
                             fit_array(arrays["cam"][..., None], scan.shape)[..., 0],
                             atol=1e-6)
  view = cv2.imread(str(out / r["outputs"]["overlay"]))
  assert view.shape[0] > 8 and view.shape[1] >= 3 * 8  # three slices side by side
  same = [np.load(out / recs[n]["outputs"]["arrays"])["cam"] for n in ("plain.nii",
                                                                       "array.npy")]
  np.testing.assert_allclose(same[0], same[1], atol=1e-6)  # one volume, two formats
  assert "nifti" in recs["plain.nii"]["outputs"]
  assert set(recs["array.npy"]["outputs"]) == {"overlay", "arrays"}
  report = (out / "report.html").read_text()
  assert "scan.nii.gz.overlay.png" in report or ".overlay.png" in report


def _write_video(path, frames, fourcc="MJPG"):
  h, w = frames[0].shape[:2]
  writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), 10, (w, h))
  assert writer.isOpened()
  for f in frames:
    writer.write(np.ascontiguousarray(f[..., ::-1]))
  writer.release()


def test_video_clips(tmp_path, capsys):
  d = tmp_path / "in"
  d.mkdir()
  rng = np.random.default_rng(2)
  frames = [np.full((20, 24, 3), 20 * t, np.uint8) for t in range(10)]
  for t, f in enumerate(frames):
    f[5:12, 2 * t:2 * t + 6] = 255  # a bright square moving right
  _write_video(d / "clip.avi", frames)
  (d / "broken.mp4").write_bytes(rng.integers(0, 256, 3000, dtype=np.uint8).tobytes())
  np.save(d / "frames.npy", rng.integers(0, 256, (6, 16, 16, 3)).astype(np.uint8))
  np.save(d / "floats.npy", rng.standard_normal((6, 16, 16, 3)).astype(np.float32))
  out = tmp_path / "out"
  code, _, err = explain(d, "--out", out, "--model", "tests.media_models:video",
                         capsys=capsys)
  assert code == 3, err
  recs = _records(out)
  assert "not a decodable video" in recs["broken.mp4"]["error"]
  assert "uint8 RGB values" in recs["floats.npy"]["error"]
  model = media_models.video()
  r = recs["clip.avi"]
  assert r["status"] == "ok" and set(r["outputs"]) == {"overlay", "arrays"}, r
  arrays = np.load(out / r["outputs"]["arrays"])
  assert arrays["cam"].shape == (4, 16, 16) and arrays["guided"].shape == (4, 16, 16, 3)
  # the 4 frames the model sees: 0, 3, 6 and 9 of 10, each squashed to 16x16
  clip, _ = gcj.media.read_clip(d / "clip.avi", 4)
  fitted = np.stack([io.resize_to(f, (16, 16), "squash") for f in clip])
  x = model.preprocess(fitted[None])
  want = gcj.guided_gradcam(model.apply_fn, model.variables, layer="conv2")(x).cam[0]
  np.testing.assert_allclose(arrays["cam"], np.asarray(want), atol=1e-5)
  row = cv2.imread(str(out / r["outputs"]["overlay"]))
  assert row.shape[1] >= 4 * 16  # the frames side by side
  meta = json.loads(str(np.load(out / recs["frames.npy"]["outputs"]["arrays"])["meta"]))
  assert meta["path"].endswith("frames.npy")


@pytest.mark.parametrize("factory, says", [
  ("bad_media", "media='audio'; expected one of signal, image, volume, video"),
  ("bad_size", "media 'signal' needs an input_size of 1 sizes"),
])
def test_a_factory_of_inconsistent_media_is_a_usage_error(tmp_path, capsys, factory,
                                                         says):
  np.save(tmp_path / "a.npy", np.zeros((32, 2), np.float32))
  code, _, err = explain(tmp_path / "a.npy", "--out", tmp_path / "out", "--model",
                         f"tests.media_models:{factory}", capsys=capsys)
  assert code == 2 and says in err, err


def test_no_input_of_the_models_kind_names_its_extensions(tmp_path, capsys):
  (tmp_path / "in").mkdir()
  cv2.imwrite(str(tmp_path / "in" / "a.png"), np.zeros((8, 8, 3), np.uint8))
  code, _, err = explain(tmp_path / "in", "--out", tmp_path / "out", "--model",
                         "tests.media_models:volume", capsys=capsys)
  assert code == 3 and "no volume found" in err and ".nii.gz" in err, err


@pytest.mark.slow
def test_a_volume_job_killed_anywhere_then_resumed_gives_the_uninterrupted_result(
    tmp_path):
  """Real processes, real signals: SIGKILL at two points of a job of NIfTI and .npy
  volumes, then the same command to the end, equals one uninterrupted run."""
  import signal

  from tests import job_helpers as jh

  d = tmp_path / "in"
  d.mkdir()
  rng = np.random.default_rng(3)
  for i in range(16):
    v = rng.normal(0, 100, (9 + i % 3, 8, 10)).astype(np.float32)
    if i % 2:
      _nifti(d / f"v{i:02d}.nii.gz", v, np.diag([1.0, 1.0, 2.0 + i, 1.0]))
    else:
      np.save(d / f"v{i:02d}.npy", v)
  (d / "bad.nii").write_bytes(b"\0" * 400)

  def args(out):
    return (d, "--out", out, "--quiet", "--batch-size", 4, "--model",
            "tests.media_models:slow_volume")

  ref = tmp_path / "ref"
  assert jh.run(*args(ref)).returncode == 3  # bad.nii fails, the rest is written
  for k, lines in enumerate((7, 20)):
    out = tmp_path / f"out{k}"
    code, reached, _ = jh.kill_at(args(out), out, lines, signal.SIGKILL)
    assert code == -signal.SIGKILL and reached < 2 * 16 + 1
    done = jh.run(*args(out))
    assert done.returncode == 3 and "failed: " in done.stderr
    got, want = _records(out), _records(ref)
    assert set(got) == set(want) and jh.job_files(out) == jh.job_files(ref)
    for name, r in got.items():
      assert r["status"] == want[name]["status"], name
      assert r.get("outputs") == want[name].get("outputs"), name
      for kind, rel in (r.get("outputs") or {}).items():
        if kind == "arrays":
          np.testing.assert_allclose(np.load(out / rel)["cam"],
                                     np.load(ref / rel)["cam"], atol=1e-6)
        if kind == "nifti":
          a, b = nib.load(str(out / rel)), nib.load(str(ref / rel))
          np.testing.assert_allclose(a.get_fdata(), b.get_fdata(), atol=1e-6)
          np.testing.assert_allclose(a.affine, b.affine)
