"""One job at a time on an --out (gradcam_jax/cli/lock.py), with real processes and
real signals: a second job is refused with the holder's pid and touches nothing; the
lock dies with its holder, even by SIGKILL."""

import json
import os
import signal
import subprocess
import time

from gradcam_jax import io
from tests import job_helpers as jh


def _wait_for(condition, seconds=120.0):
  end = time.monotonic() + seconds
  while time.monotonic() < end:
    if condition():
      return
    time.sleep(0.02)
  raise AssertionError("timed out")


def _done_lines(out):
  part = out / "index.part-0000.jsonl"
  if not part.exists():
    return 0
  return sum('"event": "done"' in l for l in part.read_text().splitlines())


def _stopped(pid) -> bool:
  """Whether every thread of `pid` has stopped: kill(SIGSTOP) returns before they all
  have, and a writer thread finishes the calls it is in (CI saw four more files
  appear after the snapshot)."""
  states = []
  for task in os.listdir(f"/proc/{pid}/task"):
    try:
      with open(f"/proc/{pid}/task/{task}/stat") as f:
        states.append(f.read().rsplit(")", 1)[1].split()[0])
    except FileNotFoundError:  # a thread that ended
      continue
  return bool(states) and all(state in ("T", "t") for state in states)


def _files(folder):
  return sorted((p.name, p.stat().st_size) for p in folder.rglob("*") if p.is_file())


def test_a_second_job_on_the_same_out_is_refused_until_the_first_dies(tmp_path):
  """Issue 23 case 7: two runs at once both explained everything (extra copies, and
  the second's start removed the first's temporary files in flight)."""
  images = tmp_path / "in"
  for i, scene in enumerate(jh.scenes(16)):
    jh.write_png(images / f"s{i:02d}.png", scene)
  out = tmp_path / "out"
  args = (images, "--out", out, "--model", "tests.job_helpers:slow_demo",
          "--batch-size", 2, "--quiet", "--no-report")
  first = subprocess.Popen(jh.command(*args), env=jh.CHILD_ENV, stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True)
  try:
    _wait_for(lambda: _done_lines(out) >= 2 or first.poll() is not None)
    os.kill(first.pid, signal.SIGSTOP)  # caught mid-job, holding --out
    assert first.poll() is None, first.communicate()
    _wait_for(lambda: _stopped(first.pid))
    before = _files(out)
    second = jh.run(*args)
    assert second.returncode == 2, second.stderr
    assert f"another gradcam-jax job (pid {first.pid})" in second.stderr, second.stderr
    assert "Traceback" not in second.stderr
    assert _files(out) == before  # nothing written, nothing removed
  finally:
    os.kill(first.pid, signal.SIGKILL)  # the lock goes with it
    first.communicate()
  again = jh.run(*args)
  assert again.returncode == 0, again.stderr
  records = io.read_index(out)
  assert len(records) == 16 and all(r["status"] == "ok" for r in records)
  assert len(list(out.glob("*.npz"))) == 16
  done = sum(_event(l) == "done" for p in out.glob("index.part-*.jsonl")
             for l in p.read_text().splitlines())
  assert done == 16  # each input done once


def _event(line):
  try:
    return json.loads(line)["event"]
  except (ValueError, KeyError):
    return None  # a line the kill cut
