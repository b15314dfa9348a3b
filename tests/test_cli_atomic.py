"""The job's folder and whole-file writes (gradcam_jax/cli/atomic.py)."""

import pytest

from gradcam_jax.cli import atomic


def test_work_dir_is_made_and_emptied_when_fresh(tmp_path):
  d = atomic.work_dir(tmp_path, "tmp-0000")
  assert d == tmp_path / atomic.MARKER / "tmp-0000" and d.is_dir()
  (d / "half").write_bytes(b"x")
  assert atomic.work_dir(tmp_path, "tmp-0000").joinpath("half").exists()
  assert not any(atomic.work_dir(tmp_path, "tmp-0000", fresh=True).iterdir())


def test_all_files_land_or_no_temporary_is_left(tmp_path):
  tmp = atomic.work_dir(tmp_path)
  atomic.write_atomically({tmp_path / "a" / "x.png": b"1", tmp_path / "y.npz": b"2"},
                          tmp)
  assert (tmp_path / "a" / "x.png").read_bytes() == b"1"
  assert list(tmp.iterdir()) == []
  (tmp_path / "blocked").mkdir()  # a folder where a file should go: the rename fails
  with pytest.raises(OSError):
    atomic.write_atomically({tmp_path / "z.png": b"3", tmp_path / "blocked": b"4"}, tmp)
  assert list(tmp.iterdir()) == []
