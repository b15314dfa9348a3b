"""Signals, volumes and clips in and out (gradcam_jax/media.py): arrays, NIfTI volumes
with their affine, video frames sampled to a clip length; bad files are reasons, not
exceptions, and sizes are checked before decoding."""

import numpy as np
import pytest

import gradcam_jax as gcj
from gradcam_jax import media


def test_read_array_takes_numeric_arrays_and_refuses_the_rest(tmp_path):
  np.save(tmp_path / "ok.npy", np.arange(12, dtype=np.int16).reshape(6, 2))
  array, error = media.read_array(tmp_path / "ok.npy")
  assert error is None and array.dtype == np.float32 and array.shape == (6, 2)
  np.testing.assert_array_equal(array, np.arange(12).reshape(6, 2))
  np.save(tmp_path / "objects.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
  np.save(tmp_path / "nan.npy", np.array([1.0, np.nan]))
  (tmp_path / "text.npy").write_text("not numpy")
  np.save(tmp_path / "big.npy", np.zeros((10, 10, 10), np.uint8))
  cases = {"objects": "not a numeric array: dtype object", "nan": "NaN or Inf",
           "text": "not a .npy array", "missing": "not a .npy array"}
  for name, reason in cases.items():
    got, error = media.read_array(tmp_path / f"{name}.npy")
    assert got is None and reason in error, (name, error)
  got, error = media.read_array(tmp_path / "big.npy", max_elements=999)
  assert got is None and error == ("too large: (10, 10, 10) is 1,000 elements, over the "
                                   "cap of 999")


def test_nifti_round_trip_keeps_the_affine(tmp_path):
  nib = pytest.importorskip("nibabel")
  affine = np.array([[0.8, 0, 0, -90], [0, 0.8, 0, -120], [0, 0, 2.5, -60], [0, 0, 0, 1]])
  volume = np.random.default_rng(0).normal(size=(6, 7, 5)).astype(np.float32)
  nib.save(nib.Nifti1Image(volume, affine), str(tmp_path / "ct.nii.gz"))
  got, got_affine, error = media.read_nifti(tmp_path / "ct.nii.gz")
  assert error is None
  np.testing.assert_array_equal(got, volume)
  np.testing.assert_allclose(got_affine, affine)
  cam = np.linspace(0, 1, volume.size, dtype=np.float32).reshape(volume.shape)
  media.write_nifti(tmp_path / "ct.cam.nii.gz", cam, got_affine)
  back = nib.load(str(tmp_path / "ct.cam.nii.gz"))
  np.testing.assert_allclose(back.affine, affine)
  np.testing.assert_array_equal(np.asarray(back.get_fdata(dtype=np.float32)), cam)
  _, _, error = media.read_nifti(tmp_path / "ct.nii.gz", max_elements=100)
  assert error == "too large: (6, 7, 5) is 210 elements, over the cap of 100"
  (tmp_path / "bad.nii").write_bytes(b"\0" * 400)
  assert media.read_nifti(tmp_path / "bad.nii")[2].startswith("not a NIfTI volume")
  with pytest.raises(gcj.ImageError, match=r"a 4x4 affine; got \(6, 7, 5\) and \(3, 3\)"):
    media.write_nifti(tmp_path / "x.nii", cam, np.eye(3))


def _video(path, count, size=(24, 32)):
  import cv2
  writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10, size[::-1])
  assert writer.isOpened()
  for t in range(count):  # frame t is a flat grey of level 20 t (MJPG keeps flat areas)
    writer.write(np.full((*size, 3), 20 * t, np.uint8))
  writer.release()


def test_read_clip_samples_frames_evenly(tmp_path):
  _video(tmp_path / "clip.avi", 12)
  clip, error = media.read_clip(tmp_path / "clip.avi", frames=4)
  assert error is None and clip.shape == (4, 24, 32, 3) and clip.dtype == np.uint8
  levels = clip.reshape(4, -1).mean(1) / 20  # frames 0, 4, 7, 11 of 12
  np.testing.assert_allclose(levels, [0, 4, 7, 11], atol=0.2)
  short, error = media.read_clip(tmp_path / "clip.avi", frames=20)  # longer than the video
  assert error is None and short.shape[0] == 20
  np.testing.assert_allclose(short.reshape(20, -1).mean(1) / 20,
                             np.linspace(0, 11, 20).round(), atol=0.2)


def test_read_clip_reasons(tmp_path):
  (tmp_path / "noise.mp4").write_bytes(np.random.default_rng(0).bytes(5000))
  assert media.read_clip(tmp_path / "noise.mp4", 4) == (
    None, "not a decodable video (MP4/AVI/MOV/MKV through OpenCV expected)")
  assert media.read_clip(tmp_path / "absent.mp4", 4) == (None, "no such file")
  _video(tmp_path / "clip.avi", 3)
  clip, error = media.read_clip(tmp_path / "clip.avi", 2, max_pixels=100)
  assert clip is None and error == "frames too large: 32x24 is over the cap of 100 pixels"
  with pytest.raises(gcj.ImageError, match="frames: expected a whole number >= 1; got 0"):
    media.read_clip(tmp_path / "clip.avi", 0)
