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
import sys
import time
from pathlib import Path
from typing import Iterator, NamedTuple

from gradcam_jax.cli.atomic import work_dir, write_stream
from gradcam_jax.cli.outputs import SUFFIXES

__all__ = [
  "Entry",
  "Journal",
  "State",
  "entry",
  "failures",
  "iter_index",
  "merge_index",
  "read_index",
  "read_state",
]


def _parts(out_dir: Path) -> tuple[Path, ...]:
  parts = sorted(Path(out_dir).glob("index.part-*.jsonl"))
  if not parts and (Path(out_dir) / "index.jsonl").exists():
    parts = [Path(out_dir) / "index.jsonl"]
  return tuple(parts)


_PLACE = 1 << 48  # a line's place: part number * _PLACE + byte offset (one int)


def _lines(parts) -> Iterator[tuple[dict, int]]:
  """Every parsable line with its place (part number * _PLACE + byte offset)."""
  for number, part in enumerate(parts):
    with part.open("rb") as f:
      offset = 0
      for line in f:
        where, offset = offset, offset + len(line)
        try:
          record = json.loads(line)
        except ValueError:
          continue  # a line cut by a kill; its image is redone on resume
        if isinstance(record, dict) and "path" in record:
          yield record, number * _PLACE + where


class Entry(NamedTuple):
  """What a resume needs of an input's latest line, and where the whole line is.

  Attributes:
    event: ``"claim"`` or ``"done"``.
    status: ``"ok"`` or ``"error"`` for a done line.
    settings: the settings of a done line (one shared object for equal settings).
    input: (size, mtime_ns) of the input file the result is of.
    name: the output name (files ``name + outputs.SUFFIXES[kind]``).
    kinds: the output kinds the line lists.
    t: nanoseconds, to order lines.
    where: the line's place: part number (in ``State.parts``) times 2**48 plus
      its byte offset.
    listed: the outputs as written when they do not follow ``name + suffix``.
  """

  event: str
  status: str | None
  settings: dict | None
  input: tuple | None
  name: str | None
  kinds: tuple
  t: int
  where: int
  listed: dict | None = None

  @property
  def outputs(self) -> dict:
    """{kind: file relative to the output folder}."""
    if self.listed is not None:
      return self.listed
    return {k: f"{self.name}{SUFFIXES[k]}" for k in self.kinds}


class _Shared:
  """One object for each distinct settings and kinds seen: 200,000 records of one
  job share one settings dict instead of holding 200,000 copies."""

  def __init__(self):
    self.settings: dict = {}
    self.kinds: dict = {}

  def entry(self, record: dict, where: int = 0) -> Entry:
    settings = record.get("settings")
    if settings is not None:
      settings = self.settings.setdefault(json.dumps(settings), settings)
    outputs = record.get("outputs") or {}
    kinds = tuple(outputs)
    kinds = self.kinds.setdefault(kinds, kinds)
    name = record.get("name")
    derived = name is not None and all(
      k in SUFFIXES and rel == f"{name}{SUFFIXES[k]}" for k, rel in outputs.items()
    )
    identity = record.get("input")
    return Entry(
      sys.intern(record.get("event", "done")),
      record.get("status"),
      settings,
      (identity.get("size"), identity.get("mtime_ns"))
      if isinstance(identity, dict)
      else None,
      name,
      kinds,
      record.get("t", 0),
      where,
      None if derived else outputs,
    )


def entry(record: dict, where: int = 0) -> Entry:
  """The Entry of one journal line (`record` as parsed)."""
  return _Shared().entry(record, where)


class State(NamedTuple):
  """What the journal says, read in one pass, holding only what a resume needs
  (750 bytes per input at 200,000 inputs, ``benchmarks/journal_scale.py``: the path,
  the output name, an Entry; no record is kept whole).

  Attributes:
    latest: input path -> the Entry of its latest line (a claim or a done record).
    owners: output name (the common stem of an input's outputs, relative to the
      folder) -> the input that claimed it last.
    parts: the journal files read, in the order ``Entry.where`` numbers them.
  """

  latest: dict
  owners: dict
  parts: tuple = ()


def read_state(out_dir: Path) -> State:
  latest: dict = {}
  owners: dict = {}
  shared = _Shared()
  parts = _parts(out_dir)
  for record, where in _lines(parts):
    if record.get("name"):  # one string for the owners' key and the Entry's name
      record["name"] = sys.intern(record["name"])
      owners[record["name"]] = sys.intern(record["path"])
    path = sys.intern(record["path"])
    previous = latest.get(path)
    if previous is None or record.get("t", 0) >= previous.t:
      latest[path] = shared.entry(record, where)
  return State(latest, owners, parts)


def _public(record: dict) -> dict:
  return {k: v for k, v in record.items() if k != "event"}


def iter_index(out_dir: Path, state: State | None = None) -> Iterator[dict]:
  """The finished record of every input (all processes' parts), sorted by path,
  one at a time: each is read from its line when it is needed, so a folder of any
  size is gone through in the memory of its State. Inputs whose latest computation
  was interrupted are left out."""
  state = read_state(out_dir) if state is None else state
  files: dict = {}
  try:
    for path in sorted(state.latest):
      e = state.latest[path]
      if e.event != "done":
        continue
      number, offset = divmod(e.where, _PLACE)
      if number not in files:
        files[number] = state.parts[number].open("rb")
      files[number].seek(offset)
      yield _public(json.loads(files[number].readline()))
  finally:
    for f in files.values():
      f.close()


def read_index(out_dir: Path) -> list[dict]:
  """The finished record of every input under `out_dir` (all processes' parts),
  sorted by path. Inputs whose latest computation was interrupted are left out."""
  return list(iter_index(out_dir))


def failures(out_dir: Path, state: State) -> list[tuple[str, str]]:
  """(path, reason) of every input whose latest record is a failure."""
  failed = State(
    {p: e for p, e in state.latest.items() if e.status == "error"}, {}, state.parts
  )
  return [(r["path"], r.get("error", "")) for r in iter_index(out_dir, failed)]


def merge_index(out_dir: Path, records=None) -> Path:
  """Write every finished record into one ``index.jsonl`` (sorted by path),
  atomically and streamed. `records`: the journal's State, or the records as
  :func:`read_index` gives them; the journal is read when None."""
  if records is None or isinstance(records, State):
    records = iter_index(out_dir, records)
  target = Path(out_dir) / "index.jsonl"
  write_stream(target, (json.dumps(r).encode() + b"\n" for r in records), work_dir(out_dir))
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
