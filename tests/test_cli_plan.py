"""Which inputs a job still has to explain (gradcam_jax/cli/plan.py)."""

import os

from gradcam_jax.cli.journal import entry
from gradcam_jax.cli.plan import input_identity, plan
from gradcam_jax.io import Source


def test_resume_rule(tmp_path):
  files = []
  for name in "abcd":
    (tmp_path / f"{name}.png").write_bytes(name.encode())
    files.append(Source(tmp_path / f"{name}.png", f"{name}.png"))
  (tmp_path / "out.png").write_bytes(b"")
  settings = {"method": "gradcam", "save": ["overlay"]}

  def done(s, **change):
    record = {"event": "done", "status": "ok", "settings": settings,
              "input": input_identity(s.path), "outputs": {"overlay": "out.png"}}
    return entry({**record, **change})

  latest = {str(files[0].path): done(files[0]),                           # finished
            str(files[1].path): done(files[1], settings={"method": "x", "save": ["overlay"]}),
            str(files[2].path): done(files[2], outputs={"o": "gone.png"})}  # output lost
  os.utime(files[3].path, ns=(1, 1))
  latest[str(files[3].path)] = done(files[3], input={"size": 1, "mtime_ns": 5})
  assert plan(files, tmp_path, settings, latest) == (files[1:], 1)
  assert plan(files, tmp_path, settings, latest, overwrite=True) == (files, 0)
  assert plan(files, tmp_path, settings, latest, process=(1, 2)) == (
      [files[1], files[3]], 0)


def test_fewer_kinds_are_done_and_more_are_not(tmp_path):
  (tmp_path / "a.png").write_bytes(b"a")
  for f in ("a.overlay.png", "a.npz"):
    (tmp_path / f).write_bytes(b"")
  s = Source(tmp_path / "a.png", "a.png")
  record = {"event": "done", "status": "ok", "input": input_identity(s.path),
            "settings": {"method": "gradcam", "save": ["arrays", "overlay"]},
            "outputs": {"overlay": "a.overlay.png", "arrays": "a.npz"}}
  latest = {str(s.path): entry(record)}
  for save, skipped in ((["overlay"], 1), (["arrays", "overlay"], 1),
                        (["input", "overlay"], 0)):
    assert plan([s], tmp_path, {"method": "gradcam", "save": save}, latest).skipped == skipped
  assert plan([s], tmp_path, {"method": "x", "save": ["overlay"]}, latest).skipped == 0
