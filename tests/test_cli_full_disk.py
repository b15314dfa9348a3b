"""A full disk (issue 23 case 9), on a real small file system: a size-limited tmpfs
mounted for the test (needs root and permission to mount; skipped otherwise, with
the reason). The job reports what it could not write, prints its summary, exits 3
("partly failed"), leaves no temporary file, and a resume after space is freed
gives what an uninterrupted run gives."""

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from gradcam_jax.cli import atomic
from tests import job_helpers as jh


def _mount(path: Path, size: str):
  if os.geteuid() != 0 or shutil.which("mount") is None:
    pytest.skip("mounting a size-limited tmpfs needs root")
  path.mkdir()
  said = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                        capture_output=True, text=True)
  if said.returncode:
    pytest.skip(f"cannot mount a tmpfs here: {said.stderr.strip()}")


@pytest.fixture
def small_disk(tmp_path):
  disk = tmp_path / "disk"
  _mount(disk, "400k")
  yield disk
  subprocess.run(["umount", "-l", str(disk)], check=False)


def _fill(disk: Path) -> Path:
  """Fill the file system to the last byte with one file; return it."""
  filler = disk / "filler"
  with open(filler, "wb", buffering=0) as f:
    for size in (1 << 16, 1 << 12, 1 << 9, 1):
      try:
        while True:
          f.write(b"\0" * size)
      except OSError:
        pass
  return filler


@pytest.mark.parametrize("full", ["outputs", "journal"])
def test_a_full_disk_is_reported_and_resumed(tmp_path, small_disk, full):
  """`outputs`: the disk fills while outputs are written (some images fit). `journal`:
  the disk is full before the job starts, so the journal, the index and the report
  cannot be written either: an OSError traceback without a summary before."""
  images = tmp_path / "in"
  for i, scene in enumerate(jh.scenes(12)):
    jh.write_png(images / f"s{i:02d}.png", scene)
  ref, out = tmp_path / "ref", small_disk / "out"
  args = ("--batch-size", 4, "--quiet")
  assert jh.run(images, "--out", ref, *args).returncode == 0
  filler = _fill(small_disk) if full == "journal" else None
  said = jh.run(images, "--out", out, *args)
  assert said.returncode == 3, said.stderr
  assert "Traceback" not in said.stderr, said.stderr
  assert "process 0/1: explained" in said.stdout  # the summary
  failures = [l for l in said.stderr.splitlines() if l.startswith("failed: ")]
  assert failures and all("No space left on device" in l for l in failures), said.stderr
  explained = int(said.stdout.split("explained ")[1].split(",")[0])
  assert explained + len(failures) == 12, (said.stdout, failures)
  if full == "journal":
    assert explained == 0 and all("could not record it" in l for l in failures)
    assert ("error: could not write index.jsonl: No space left" in said.stderr
            or (out / "index.jsonl").read_bytes() == b"")  # no record: nothing to hold
    assert "error: could not write report.html: No space left" in said.stderr
  leftovers = [p for p in (out / atomic.MARKER).rglob("*") if p.is_file()]
  assert leftovers in ([], [out / atomic.MARKER / "lock"]), leftovers
  # space freed: the same command finishes the job as an uninterrupted run did
  if filler:
    filler.unlink()
  subprocess.run(["mount", "-o", "remount,size=20m", str(small_disk)], check=True)
  again = jh.run(images, "--out", out, *args)
  assert again.returncode == 0, again.stderr
  jh.assert_same_results(out, ref)
