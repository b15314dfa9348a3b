"""Which inputs a job still has to explain: the resume rule.

An input is skipped when its latest record is a finished result of the same
computation (every setting but ``save``) for the same file (size and modification
time), with every kind now asked for among its outputs and all its outputs present;
anything else is redone. Asking for fewer kinds than a folder holds is "already
done": ``--save`` says what to write, never what to delete.
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

from gradcam_jax.cli.outputs import kinds_for
from gradcam_jax.io import Source

__all__ = ["Plan", "done_alike", "input_identity", "plan", "same_computation"]


class Plan(NamedTuple):
  todo: list[Source]  # to explain, in order
  skipped: int  # already done


def input_identity(path: Path) -> dict | None:
  """What identifies an input file's content cheaply: its size and mtime."""
  try:
    st = path.stat()
  except OSError:
    return None
  return {"size": st.st_size, "mtime_ns": st.st_mtime_ns}


def same_computation(a: dict | None, b: dict) -> bool:
  """Two results' settings describe one computation: they differ at most in the
  kinds of files saved."""
  return a is not None and {**a, "save": None} == {**b, "save": None}


def done_alike(entry, settings: dict) -> bool:
  """`entry` (the journal's Entry of an input's latest line) is a finished result
  of the computation `settings` describe (whatever kinds of files it saved)."""
  return (
    entry is not None
    and entry.event == "done"
    and entry.status == "ok"
    and same_computation(entry.settings, settings)
  )


def _finished(entry, settings: dict, kinds, identity, out_dir: Path) -> bool:
  """`entry` is a finished result of `settings` for the file `identity` describes,
  with every kind asked for (of those it gets: `kinds`) among its outputs and every
  output in place."""
  return (
    done_alike(entry, settings)
    and set(kinds) <= set(entry.kinds)
    and identity is not None
    and entry.input == (identity["size"], identity["mtime_ns"])
    and all((out_dir / rel).exists() for rel in entry.outputs.values())
  )


def plan(
  sources: list[Source],
  out_dir: Path,
  settings: dict,
  latest: dict,
  *,
  overwrite: bool = False,
  process: tuple[int, int] = (0, 1),
  media: str = "image",
) -> Plan:
  """This process's share of `sources` (every count-th), less those finished with
  `settings` according to `latest` (the journal's Entry of each input's latest
  line); `media` is what the model explains (the kinds of files each input gets)."""
  index, count = process
  todo, skipped = [], 0
  for s in sources[index::count]:
    if not overwrite and _finished(
      latest.get(str(s.path)),
      settings,
      kinds_for(settings["save"], media, s.path),
      input_identity(s.path),
      out_dir,
    ):
      skipped += 1
    else:
      todo.append(s)
  return Plan(todo, skipped)
