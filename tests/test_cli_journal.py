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
  assert state.latest["a"]["event"] == "claim"
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
