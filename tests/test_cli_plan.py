"""Which inputs a job still has to explain (gradcam_jax/cli/plan.py)."""

import os

from gradcam_jax.cli.plan import input_identity, plan
from gradcam_jax.io import Source


def test_resume_rule(tmp_path):
  files = []
  for name in "abcd":
    (tmp_path / f"{name}.png").write_bytes(name.encode())
    files.append(Source(tmp_path / f"{name}.png", f"{name}.png"))
  (tmp_path / "out.png").write_bytes(b"")
  settings = {"method": "gradcam"}

  def done(s, **change):
    record = {"event": "done", "status": "ok", "settings": settings,
              "input": input_identity(s.path), "outputs": {"overlay": "out.png"}}
    return {**record, **change}

  latest = {str(files[0].path): done(files[0]),                           # finished
            str(files[1].path): done(files[1], settings={"method": "x"}),  # other settings
            str(files[2].path): done(files[2], outputs={"o": "gone.png"})}  # output lost
  os.utime(files[3].path, ns=(1, 1))
  latest[str(files[3].path)] = done(files[3], input={"size": 1, "mtime_ns": 5})
  assert plan(files, tmp_path, settings, latest) == (files[1:], 1)
  assert plan(files, tmp_path, settings, latest, overwrite=True) == (files, 0)
  assert plan(files, tmp_path, settings, latest, process=(1, 2)) == (
      [files[1], files[3]], 0)
