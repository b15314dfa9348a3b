"""The job's append-only index (gradcam_jax/cli/journal.py): latest line wins, a line
cut by a kill is ignored and the next writer starts on a fresh line, claims without
a result are left out of the index."""

import json

from gradcam_jax.cli.journal import Journal, merge_index, read_index, read_state


def test_latest_line_wins_and_claims_are_not_results(tmp_path):
  with Journal(tmp_path, 0) as j:
    j.write("done", {"path": "a", "status": "error", "error": "x"})
    j.write("claim", {"path": "a", "id": "1", "name": "a.png", "outputs": {}})
    j.write("done", {"path": "b", "status": "ok", "name": "b.png"})
  with Journal(tmp_path, 1) as j:  # another process's part
    j.write("done", {"path": "c", "status": "ok", "name": "c.png"})
  state = read_state(tmp_path)
  assert state.latest["a"].event == "claim"
  assert state.owners == {"a.png": "a", "b.png": "b", "c.png": "c"}
  assert [r["path"] for r in read_index(tmp_path)] == ["b", "c"]  # a was interrupted


def test_a_torn_line_is_skipped_and_the_next_writer_starts_fresh(tmp_path):
  with Journal(tmp_path) as j:
    j.write("done", {"path": "a", "status": "ok"})
  part = tmp_path / "index.part-0000.jsonl"
  with part.open("a") as f:
    f.write('{"event": "done", "path": "b", "sta')  # a kill mid-line
  with Journal(tmp_path) as j:
    j.write("done", {"path": "c", "status": "ok"})
  assert [r["path"] for r in read_index(tmp_path)] == ["a", "c"]
  assert part.read_text().splitlines()[-1].startswith('{"event": "done", "path": "c"')


def test_merge_index_writes_the_records_it_is_given(tmp_path):
  with Journal(tmp_path) as j:
    j.write("done", {"path": "a", "status": "ok"})
  records = read_index(tmp_path)
  target = merge_index(tmp_path, records[:0])  # what it is given, not re-read
  assert target.read_text() == ""
  merge_index(tmp_path)
  assert [json.loads(l)["path"] for l in target.read_text().splitlines()] == ["a"]


def test_the_state_keeps_entries_and_the_index_reads_records_from_their_lines(tmp_path):
  """Issue 23 case 18: the state held every input's whole record (1 GB at 200,000
  inputs). It now keeps an Entry (what resume needs and where the line is), with
  one settings object for equal settings; the records are read back line by line."""
  settings = {"model": "demo", "save": ["overlay"]}
  with Journal(tmp_path) as j:
    for name in "ab":
      j.write("claim", {"path": name, "id": name, "name": f"{name}.png",
                        "outputs": {"overlay": f"{name}.png.overlay.png"}})
      j.write("done", {"path": name, "status": "ok", "id": name, "name": f"{name}.png",
                       "outputs": {"overlay": f"{name}.png.overlay.png"},
                       "settings": dict(settings), "input": {"size": 3, "mtime_ns": 4}})
    j.write("done", {"path": "c", "status": "error", "error": "bad", "settings": settings})
  state = read_state(tmp_path)
  a, b = state.latest["a"], state.latest["b"]
  assert not isinstance(a, dict) and a.settings is b.settings  # shared, not copied
  assert a.outputs == {"overlay": "a.png.overlay.png"} and a.input == (3, 4)
  assert a.listed is None  # derived from the name, not stored
  records = read_index(tmp_path)
  assert [r["path"] for r in records] == ["a", "b", "c"]
  assert records[0]["settings"] == settings and "event" not in records[0]
  from gradcam_jax.cli.journal import failures
  assert failures(tmp_path, state) == [("c", "bad")]


def test_a_resume_holds_under_a_kilobyte_per_input(tmp_path):
  """Issue 23 case 18, at 20,000 inputs (benchmarks/journal_scale.py measures
  200,000): the journal's state and the report's data per input. Before: 4.6 kB of
  state (traced) and 400 bytes of report per input."""
  import tracemalloc
  from benchmarks.journal_scale import make_journal
  from gradcam_jax.cli.report import write_report
  n = 20_000
  make_journal(tmp_path, n)
  tracemalloc.start()
  state = read_state(tmp_path)
  held = tracemalloc.get_traced_memory()[0]
  tracemalloc.stop()
  assert len(state.latest) == n
  assert held / n < 1024, f"{held / n:.0f} bytes per input"
  write_report(tmp_path, state)
  per_row = (tmp_path / "report.html").stat().st_size / n
  assert per_row < 80, f"{per_row:.0f} bytes of report per input"
