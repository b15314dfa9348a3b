"""The index of a batch job: an append-only journal that survives a kill at any instant.

Each process appends JSON lines to ``index.part-NNNN.jsonl`` in the output folder:

* ``{"event": "claim", "path", "id", "outputs", "t"}`` before any output of an image
  is written: from then on those file names belong to this input;
* ``{"event": "done", "status": "ok", "path", "id", "outputs", "settings", "input",
  ...}`` after every output of that computation is in place (each was written to a
  temporary file and renamed), or ``{"event": "done", "status": "error", "path",
  "error", ...}`` for an input that could not be explained.

An input is finished when its latest line (by ``t``, nanoseconds) is a ``done``;
a ``claim`` without a later ``done`` means the computation was interrupted and is
redone on resume. A line cut by a kill is ignored, and the next writer starts on a
fresh line.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Iterator, NamedTuple

from gradcam_jax.cli.atomic import work_dir, write_atomically

__all__ = ["Journal", "State", "read_state", "read_index", "merge_index"]


def _parts(out_dir: Path) -> list[Path]:
  parts = sorted(Path(out_dir).glob("index.part-*.jsonl"))
  if not parts and (Path(out_dir) / "index.jsonl").exists():
    parts = [Path(out_dir) / "index.jsonl"]
  return parts


def _lines(out_dir: Path) -> Iterator[dict]:
  for part in _parts(out_dir):
    with part.open() as f:
      for line in f:
        try:
          record = json.loads(line)
        except json.JSONDecodeError:
          continue  # a line cut by a kill; its image is redone on resume
        if isinstance(record, dict) and "path" in record:
          yield record


class State(NamedTuple):
  """What the journal says, read in one pass.

  Attributes:
    latest: input path -> its latest line (a claim or a done record).
    owners: output name (the common stem of an input's outputs, relative to the
      folder) -> the input that claimed it last.
  """

  latest: dict
  owners: dict


def read_state(out_dir: Path) -> State:
  latest: dict = {}
  owners: dict = {}
  for record in _lines(out_dir):
    previous = latest.get(record["path"])
    if previous is None or record.get("t", 0) >= previous.get("t", 0):
      latest[record["path"]] = record
    if record.get("name"):
      owners[record["name"]] = record["path"]
  return State(latest, owners)


def _public(record: dict) -> dict:
  return {k: v for k, v in record.items() if k != "event"}


def read_index(out_dir: Path) -> list[dict]:
  """The finished record of every input under `out_dir` (all processes' parts),
  sorted by path. Inputs whose latest computation was interrupted are left out."""
  latest = read_state(out_dir).latest
  return [_public(r) for _, r in sorted(latest.items()) if r.get("event", "done") == "done"]


def merge_index(out_dir: Path, records: list[dict] | None = None) -> Path:
  """Write every finished record (`records`, as :func:`read_index` gives them; read
  when None) into one ``index.jsonl`` (sorted by path), atomically."""
  records = read_index(out_dir) if records is None else records
  target = Path(out_dir) / "index.jsonl"
  write_atomically(
    {target: "".join(json.dumps(r) + "\n" for r in records).encode()}, work_dir(out_dir)
  )
  return target


class Journal:
  """Appends lines to this process's part, one ``write`` system call per line (no
  buffer: a line the disk had no room for is an ``OSError`` at once, and the next
  line starts on a fresh line)."""

  def __init__(self, out_dir: Path, process_index: int = 0):
    self.path = Path(out_dir) / f"index.part-{process_index:04d}.jsonl"
    self._fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
    size = os.fstat(self._fd).st_size
    # the line a kill cut stays alone and unparsable
    self._torn = bool(size) and os.pread(self._fd, 1, size - 1) != b"\n"

  def write(self, event: str, record: dict) -> dict:
    """Append one line; OSError (a full disk) when it could not be written whole."""
    line = {"event": event, **record, "t": time.time_ns()}
    data = (("\n" if self._torn else "") + json.dumps(line) + "\n").encode()
    done = 0
    try:
      while done < len(data):
        done += os.write(self._fd, data[done:])
    finally:
      if done:
        self._torn = not data[:done].endswith(b"\n")
    return line

  def close(self) -> None:
    try:
      os.fsync(self._fd)
    except OSError:
      pass  # what was written stays; a line it could not keep is redone on resume
    finally:
      os.close(self._fd)

  def __enter__(self) -> "Journal":
    return self

  def __exit__(self, *exc) -> None:
    self.close()
