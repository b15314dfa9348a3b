"""A kill at any instant, then a resume, gives what an uninterrupted run gives.

Real processes and real signals: `gradcam-jax explain` runs over 300 images in a
child process and is killed (SIGKILL, SIGTERM, SIGINT) when its journal reaches a
random length (or during start-up); the same command is then run to the end and its
folder compared with an uninterrupted run's.
"""

import random
import signal

import pytest

from tests import job_helpers as jh

pytestmark = pytest.mark.slow  # the fast loop is pytest -m "not slow"

N = 300


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
  d = tmp_path_factory.mktemp("kill_inputs")
  for i, image in enumerate(jh.scenes(N)):
    jh.write_png(d / f"g{i % 3}" / f"img_{i:03d}.png", image)
  return d


@pytest.fixture(scope="module")
def reference(inputs, tmp_path_factory):
  out = tmp_path_factory.mktemp("kill_ref") / "out"
  done = jh.run(inputs, "--out", out, "--quiet", "--batch-size", 8)
  assert done.returncode == 0, done.stderr
  return out


def test_sigkill_at_random_points_then_resume(inputs, reference, tmp_path):
  rng = random.Random(20261128)
  # a claim and a done line per image: 2N lines in all; 0 kills during start-up
  points = [0] + sorted(rng.randrange(1, 2 * N - 10) for _ in range(4))
  for k, lines in enumerate(points):
    out = tmp_path / f"out{k}"
    args = (inputs, "--out", out, "--quiet", "--batch-size", 8)
    code, reached, _ = jh.kill_at(args, out, lines, signal.SIGKILL,
                                delay=rng.uniform(0, 0.02) if lines else rng.uniform(0, 3))
    assert code == -signal.SIGKILL, f"kill point {lines}: exit {code}"
    assert reached < 2 * N
    done = jh.run(*args)
    assert done.returncode == 0, done.stderr
    jh.assert_same_results(out, reference)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_sigterm_and_sigint_stop_cleanly_then_resume(inputs, reference, tmp_path, sig):
  out = tmp_path / "out"
  args = (inputs, "--out", out, "--quiet", "--batch-size", 8)
  code, reached, err = jh.kill_at(args, out, random.Random(sig).randrange(50, 400), sig)
  assert code == 130 and "run the same command again to resume" in err, err
  assert reached < 2 * N
  done = jh.run(*args)
  assert done.returncode == 0, done.stderr
  jh.assert_same_results(out, reference)


def test_sigint_stops_cleanly_even_when_inherited_ignored(inputs, reference, tmp_path):
  """A command started in the background by a non-interactive shell inherits SIGINT
  ignored, and Python then installs no KeyboardInterrupt handler: `kill -INT` did
  nothing and the job ran on. The command installs its own handler."""
  out = tmp_path / "out"
  args = (inputs, "--out", out, "--quiet", "--batch-size", 8)
  code, reached, err = jh.kill_at(args, out, 120, signal.SIGINT, sigint_ignored=True)
  assert code == 130 and "run the same command again to resume" in err, err
  assert reached < 2 * N
  assert jh.run(*args).returncode == 0
  jh.assert_same_results(out, reference)


def test_killed_overwrite_with_new_target_then_resume(inputs, tmp_path):
  """A folder explained for the predicted class, then re-run with --overwrite
  --target 3 and killed: the resume (same command, or without --overwrite) leaves
  every record and every output from a --target 3 computation."""
  ref = tmp_path / "ref3"
  assert jh.run(inputs, "--out", ref, "--quiet", "--batch-size", 8,
                "--target", 3).returncode == 0
  out = tmp_path / "out"
  assert jh.run(inputs, "--out", out, "--quiet", "--batch-size", 8).returncode == 0
  before = jh.journal_lines(out)
  args = (inputs, "--out", out, "--quiet", "--batch-size", 8, "--target", 3)
  code, _, _ = jh.kill_at((*args, "--overwrite"), out, before + 301, signal.SIGKILL,
                        retry=False)
  assert code == -signal.SIGKILL
  done = jh.run(*args)  # resume: redoes what still has the old target
  assert done.returncode == 0, done.stderr
  assert "already done" in done.stdout
  jh.assert_same_results(out, ref)
