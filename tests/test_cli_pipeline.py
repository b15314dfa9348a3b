"""The job's device pipeline (gradcam_jax/cli/pipeline.py): batch sizes, decoding
ahead."""

from functools import partial

import numpy as np

from gradcam_jax import io
from gradcam_jax.cli import job as folder_job
from gradcam_jax.cli import inputs, pipeline
from gradcam_jax.cli.pipeline import decoded, job_batch


def test_a_job_smaller_than_a_batch_is_padded_to_a_small_size():
  """5 images at --batch-size 1024 ran at 1024 (1.8 GB instead of ~0.45 GB)."""
  assert [job_batch(n, 1024) for n in (1, 2, 3, 5, 8, 9, 1000, 1024, 5000)] == [
    1, 2, 4, 8, 8, 16, 1024, 1024, 1024]
  assert [job_batch(n, 16) for n in (0, 5, 16, 40)] == [1, 8, 16, 16]
  assert len({job_batch(n, 1024) for n in range(1, 1025)}) == 11  # few compiles


def test_the_job_runs_at_that_size(tmp_path, monkeypatch):
  from gradcam_jax import zoo
  from tests import job_helpers as jh

  seen = []
  real = pipeline.explained_batches

  def spy(*args, **kwargs):
    seen.append(kwargs["batch"])
    return real(*args, **kwargs)

  monkeypatch.setattr(folder_job, "explained_batches", spy)
  rng = np.random.default_rng(0)
  for i in range(3):
    jh.write_png(tmp_path / "in" / f"{i}.png", rng.integers(0, 256, (9, 9, 3), np.uint8))
  sources, _, _ = io.find_images([str(tmp_path / "in")])
  model = zoo.load("demo")
  job = folder_job.Job(layer=model.layer, save=("arrays",))
  summary = folder_job.explain_files(model, sources, tmp_path / "out", job, batch_size=64,
                                     progress=False)
  assert summary.ok == 3 and seen == [4]  # 4 fake CPU devices: a multiple of 4


def test_decoding_runs_a_bounded_distance_ahead(tmp_path, monkeypatch):
  """The decoder never holds more than `ahead` images beyond what was consumed."""
  sources = [io.Source(tmp_path / f"{i}.png", f"{i}.png") for i in range(50)]
  started = []
  real = io.read_oriented

  def counting(path, max_pixels=None, **kwargs):
    started.append(path)
    return real(path, max_pixels, **kwargs)

  monkeypatch.setattr(io, "read_oriented", counting)
  model = type("M", (), {"media": "image", "input_size": (8, 8)})
  read = partial(inputs.read_input, model=model, resize="squash", max_pixels=None)
  stream = decoded(sources, read, workers=2, ahead=4)
  consumed = 0
  for _ in range(10):
    next(stream)
    consumed += 1
    assert consumed <= len(started) <= consumed + 4
