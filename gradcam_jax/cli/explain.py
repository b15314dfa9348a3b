"""``gradcam-jax explain``: the command's checks, then the folder job
(``job.py``), then the index, the report and the summary.

Exit status: 0 when every input was explained (or already done); 2 for a usage
error (one line on stderr, checked before any image is decoded; also when another job
holds ``--out``); 3 when some inputs
could not be explained or matched nothing (they are listed in the index and at the
end; everything else is written), or when there was no image to explain; 130 when
interrupted (run the same command again to resume); 1 for a crash.
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

from gradcam_jax.cli.atomic import MARKER, work_dir
from gradcam_jax.cli.lock import holding_out
from gradcam_jax.cli.model_options import input_spec, load_model
from gradcam_jax.cli.usage import EXIT_INPUTS, EXIT_INTERRUPTED, UsageError

__all__ = ["cmd_explain"]


def _parse_target(value: str | None, class_names) -> int | None:
  if value is None:
    return None
  names = list(class_names)
  if value in names:
    return names.index(value)
  if value.lstrip("-").isdigit():
    c = int(value)
    if 0 <= c < len(names):
      return c
  folded = [n for n in names if n.lower() == value.lower()]
  if len(folded) == 1:  # "Tabby" for "tabby"
    return names.index(folded[0])
  import difflib

  near = difflib.get_close_matches(value, names, n=3, cutoff=0.6)
  near += [n for n in names if value.lower() in n.lower() and n not in near][
    : 3 - len(near)
  ]
  hint = f" Did you mean {', '.join(map(repr, near))}?" if near else ""
  raise UsageError(
    f"--target: expected a class index 0..{len(names) - 1} or a class "
    f"name (e.g. {names[0]!r}); got {value!r}.{hint}"
  )


def _distributed() -> tuple[int, int]:
  """Initialise jax.distributed when the usual environment asks for it."""
  import jax

  if "JAX_COORDINATOR_ADDRESS" in os.environ or "JAX_NUM_PROCESSES" in os.environ:
    jax.distributed.initialize(
      coordinator_address=os.environ.get("JAX_COORDINATOR_ADDRESS"),
      num_processes=int(os.environ["JAX_NUM_PROCESSES"])
      if "JAX_NUM_PROCESSES" in os.environ
      else None,
      process_id=int(os.environ["JAX_PROCESS_ID"])
      if "JAX_PROCESS_ID" in os.environ
      else None,
    )
  return jax.process_index(), jax.process_count()


def _inside(path: Path, folder: Path) -> bool:
  return path == folder or folder in path.parents


def _check_out(out: Path, args_paths, sources, folders) -> None:
  """--out must be ours to write and outside the inputs, with the same decision on
  every run: not a file; not where the input search goes (any folder it entered:
  the folder arguments, and through symlinks too; or a path a glob argument matches), where
  the outputs would become inputs on the next run; not holding inputs; and either
  new, empty, or made by gradcam-jax."""
  from gradcam_jax.io import glob_reaches

  given, out = out, Path(os.path.realpath(out))
  if out.exists() and not out.is_dir():
    raise UsageError(f"--out {out}: expected a folder; it is a file.")
  for arg in args_paths:  # globs match lexical paths: the path as given, and its real one
    if not os.path.lexists(arg) and (glob_reaches(arg, given) or glob_reaches(arg, out)):
      raise UsageError(
        f"--out {out}: the glob {arg} reaches it; its outputs would be inputs of the "
        "next run. Choose a folder outside the inputs."
      )
  for folder in sorted({Path(f) for f in folders}):  # every folder argument among them
    if _inside(out, folder):
      raise UsageError(
        f"--out {out}: it is inside the input folder {folder} (the search for images "
        "enters it); outputs would mix with inputs. Choose a folder outside the inputs."
      )
  for s in sources:
    if _inside(Path(os.path.realpath(s.path)), out):
      raise UsageError(
        f"--out {out}: it holds the input {s.path}; choose a folder outside the inputs."
      )
  if out.is_dir() and any(out.iterdir()) and not (out / MARKER).is_dir():
    raise UsageError(
      f"--out {out}: the folder exists and holds files gradcam-jax did "
      "not write; choose a new or empty folder."
    )
  try:
    probe = work_dir(out) / f"write-test-{os.getpid()}"
    probe.write_bytes(b"")
    probe.unlink()
  except OSError as err:
    raise UsageError(f"--out {out}: cannot write there ({err.strerror or err}).")


def _terminate(signum, frame):
  raise KeyboardInterrupt  # SIGTERM stops like Ctrl-C: in-flight writes finish


def cmd_explain(args) -> int:
  import warnings

  from PIL import Image

  from gradcam_jax import io

  # the header check refuses such images with its own message (--max-pixels)
  warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)
  from gradcam_jax.cli.inputs import ALL_EXTENSIONS

  folders: list = []  # --out is checked against inputs of every kind the job reads
  sources, missing, notes = io.find_images(args.paths, folders, ALL_EXTENSIONS)
  _check_out(args.out, args.paths, sources, folders)
  process = _distributed()  # before JAX runs anything
  with holding_out(args.out, process):  # one job at a time on --out
    return _held(args, sources, missing, notes, process)


def _held(args, sources, missing, notes, process) -> int:
  """The job, with --out held: the model, the folder job, the index and report."""
  from gradcam_jax import io
  from gradcam_jax.cli.inputs import extensions

  model, job = _checked_job(args)
  sources, missing, notes = io.find_images(args.paths, None, extensions(model.media))
  for m in missing:
    print(f"warning: {m}: no such file, folder or glob match", file=sys.stderr)
  for n in notes:
    print(f"note: {n}", file=sys.stderr)
  if not sources:
    print(
      f"gradcam-jax explain: no {model.media} found in {' '.join(args.paths)} "
      f"({model.media} extensions: {' '.join(extensions(model.media))}); nothing "
      "explained.",
      file=sys.stderr,
    )
    return EXIT_INPUTS
  _print_start(args, model, job)
  try:
    summary = _run_job(args, model, sources, job, process)
  except KeyboardInterrupt:
    print(
      "\ninterrupted: every finished image is recorded; run the same command "
      "again to resume.",
      file=sys.stderr,
    )
    return EXIT_INTERRUPTED
  return _finish(args, sources, missing, summary, process)


def _checked_job(args):
  """The model and the job the arguments ask for; a bad layer or method is a usage
  error found here, traced on shapes only (nothing decoded)."""
  import jax
  import numpy as np

  import gradcam_jax as gcj
  from gradcam_jax.cli.job import Job, build_explainer

  model, identity = load_model(args.model, args.weights, args.random_weights, args.output)
  target = _parse_target(args.target, model.class_names)
  job = Job(
    layer=args.layer or model.layer or _automatic_layer(model),
    method=args.method,
    target=target,
    resize=args.resize or model.resize,
    save=args.save,
    arrays_dtype=args.arrays_dtype,
    weights=identity,
    max_pixels=args.max_pixels,
    exif_orientation=not args.no_exif_orientation,
    max_elements=args.max_elements,
  )
  try:
    jax.eval_shape(
      build_explainer(model, model.variables, job),
      input_spec(model),
      None if target is None else jax.ShapeDtypeStruct((1,), np.int32),
    )
  except gcj.GradCAMError as err:
    if isinstance(err, gcj.MethodError):
      raise UsageError(f"--method: {err}") from None
    text = str(err).replace(
      "print(gcj.list_layers(apply_fn, params, images))",
      f"gradcam-jax layers --model {args.model}",
    )
    raise UsageError(
      f"--layer: {text}\n(gradcam-jax layers --model {args.model} lists every layer)"
    ) from None
  return model, job


def _automatic_layer(model) -> str:
  """The layer ``layer=None`` picks for `model`, by name: what the start-up line,
  the records and the report show (traced on shapes only)."""
  import gradcam_jax as gcj
  from gradcam_jax._layers import _call_counts, select_layer

  try:
    infos = gcj.list_layers(model.apply_fn, model.variables, input_spec(model)).layers
    info = select_layer(infos, None, 1)
  except gcj.GradCAMError as err:
    raise UsageError(f"--layer: {err}") from None
  return str(info.ref(_call_counts(infos)[(info.path, info.method)]))


def _print_start(args, model, job) -> None:
  import gradcam_jax as gcj
  from gradcam_jax.cli.outputs import MEDIA_KINDS

  size = "x".join(map(str, model.input_size))
  saving = [k for k in job.save if k in MEDIA_KINDS[model.media]]
  target = "the predicted class" if job.target is None else model.class_names[job.target]
  print(
    f"gradcam-jax {gcj.__version__}: model {model.name}: {model.about or 'no description'}"
  )
  print(
    f"  {model.media} {size} ({job.resize}), layer {job.layer}, method {job.method}, "
    f"target {target}, saving {','.join(saving)} to {args.out}"
  )


def _run_job(args, model, sources, job, process):
  """The folder job, stopped cleanly by SIGTERM and SIGINT, also where SIGINT was
  inherited ignored (a command started in the background by a non-interactive
  shell): `kill -INT` still works."""
  from gradcam_jax.cli.job import explain_files

  def on_start(todo, skipped):
    print(
      f"  {todo + skipped} inputs for this process: {skipped} already done, "
      f"{todo} to explain",
      flush=True,
    )

  signal.signal(signal.SIGTERM, _terminate)
  signal.signal(signal.SIGINT, _terminate)
  return explain_files(
    model,
    sources,
    args.out,
    job,
    batch_size=args.batch_size,
    overwrite=args.overwrite,
    process=process,
    workers=args.workers,
    progress=not args.quiet,
    on_start=on_start,
  )


def _finish(args, sources, missing, summary, process) -> int:
  """The index and the report from the journal, read once after every process has
  finished; the summary line and the failures."""
  from gradcam_jax.cli.journal import failures, merge_index, read_state
  from gradcam_jax.cli.report import write_report

  if process[1] > 1:
    from jax.experimental import multihost_utils

    multihost_utils.sync_global_devices("gradcam-jax explain done")
  state = read_state(args.out)  # what resume needs per input; records read one by one
  problems = []  # files of the job's own that could not be written (a full disk)
  if process[0] == 0:
    for what, write in (
      ("index.jsonl", lambda: merge_index(args.out, state)),
      ("report.html", None if args.no_report else lambda: write_report(args.out, state)),
    ):
      try:
        if write is not None:
          write()
      except OSError as err:
        problems.append(f"could not write {what}: {err.strerror or err}")
  asked = {str(s.path) for s in sources}
  unrecorded = dict(summary.unrecorded)
  failed = [
    (path, error)
    for path, error in failures(args.out, state)
    if path in asked and path not in unrecorded
  ] + list(summary.unrecorded)
  rate = summary.ok / summary.seconds if summary.seconds else 0.0
  print(
    f"process {process[0]}/{process[1]}: explained {summary.ok}, skipped "
    f"{summary.skipped} already done, failed {summary.failed} "
    f"({rate:.1f} img/s incl. start-up); index {args.out / 'index.jsonl'}"
    + ("" if args.no_report else f", report {args.out / 'report.html'}")
  )
  for path, error in failed:
    print(f"failed: {path}: {error}", file=sys.stderr)
  for problem in problems:
    print(
      f"error: {problem}; run the same command again when there is room (it resumes)",
      file=sys.stderr,
    )
  return EXIT_INPUTS if (failed or missing or problems) else 0
