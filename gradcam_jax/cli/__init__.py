"""The ``gradcam-jax`` command (``main``): what runs from a shell, apart from the
library it uses.

* ``main.py``: the parser and the entry point; ``usage.py``: usage errors, exit codes;
* ``model_options.py``: ``--model``/``--weights``/``--layer``/``--method``, shared by
  the subcommands, and loading the model;
* ``explain.py``: ``gradcam-jax explain``, the folder job run by
  ``job.py`` (what to compute, ``explain_files``) in three stages: ``plan.py`` (which
  inputs still need work), ``pipeline.py`` (read ahead, explain on the device; each
  input read by ``inputs.py``: images, signals, volumes or clips, by the model) and
  ``records.py`` (claim names, write, record); its files: ``journal.py`` (the
  append-only index), ``lock.py`` (one job at a time on ``--out``), ``outputs.py``
  (output names, encodings), ``atomic.py`` (the
  job's folder, whole-file writes), ``report.py`` (``report.html``);
* ``demo.py``: ``gradcam-jax demo``; ``bench.py``: ``gradcam-jax bench``;
  ``xla_setting.py``: the XLA flags the command's own process runs under.
"""

from gradcam_jax.cli.main import main

__all__ = ("main",)
