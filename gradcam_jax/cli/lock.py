"""One job at a time on an ``--out``: an OS lock on ``.gradcam-jax/lock``.

The first process of a job takes an exclusive ``flock`` on the file and writes its
pid there; the kernel releases it when the process ends, however it ends (SIGKILL
included), so a dead job never blocks the next. A second job on the same folder
finds the lock taken and stops with a usage error naming the holder's pid, before
it touches any file. Under ``jax.distributed`` only process 0 takes the lock and
every process learns its answer, so the processes of one job share the folder and
a second job is refused as a whole. Where ``fcntl`` does not exist (Windows), no
lock is taken.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Iterator

from gradcam_jax.cli.atomic import work_dir
from gradcam_jax.cli.usage import UsageError

__all__ = ["holding_out"]


def _try_lock(out: Path) -> tuple[int | None, str]:
  """(the open, locked file descriptor, "") or (None, what the holder wrote)."""
  import fcntl

  fd = os.open(work_dir(out) / "lock", os.O_RDWR | os.O_CREAT, 0o644)
  try:
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
  except OSError:
    holder = os.pread(fd, 200, 0).decode(errors="replace").strip()
    os.close(fd)
    return None, holder
  try:  # who holds it, for the message a second job prints (best effort: the
    os.ftruncate(fd, 0)  # lock itself needs no room on a full disk)
    os.pwrite(fd, f"pid {os.getpid()}\n".encode(), 0)
  except OSError:
    pass
  return fd, ""


def _agreed(ok: bool, process: tuple[int, int]) -> bool:
  if process[1] == 1:
    return ok
  import numpy as np
  from jax.experimental import multihost_utils

  return bool(multihost_utils.broadcast_one_to_all(np.int32(ok)))


@contextlib.contextmanager
def holding_out(out: Path, process: tuple[int, int] = (0, 1)) -> Iterator[None]:
  """Hold `out` for this job while the block runs; UsageError when another job
  holds it."""
  try:
    import fcntl  # noqa: F401
  except ImportError:  # no flock here: nothing to hold
    yield
    return
  fd, holder = _try_lock(out) if process[0] == 0 else (None, "")
  if not _agreed(fd is not None or process[0] != 0, process):
    who = f"({holder})" if holder else "(its first process)"
    raise UsageError(
      f"--out {out}: another gradcam-jax job {who} is writing there now. Wait for "
      "it to finish (run the same command again then: it resumes), or choose "
      "another --out."
    )
  try:
    yield
  finally:
    if fd is not None:
      os.close(fd)  # releases the lock
