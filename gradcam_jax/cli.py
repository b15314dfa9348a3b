"""The ``gradcam-jax`` command: ``demo``, ``explain`` and ``bench``.

Exit status of ``explain``: 0 when every input was explained (or already done);
2 for a usage error (one line on stderr, checked before any image is decoded);
3 when some inputs could not be explained or matched nothing (they are listed in
the index and at the end; everything else is written), or when there was no image
to explain; 130 when interrupted (run the same command again to resume); 1 for a
crash.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from pathlib import Path

from gradcam_jax._model_option import UsageError, load_model

EXIT_USAGE, EXIT_INPUTS, EXIT_INTERRUPTED = 2, 3, 130


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
  raise UsageError(f"--target: expected a class index 0..{len(names) - 1} or a class "
                   f"name (e.g. {names[0]!r}); got {value!r}.")


def _distributed() -> tuple[int, int]:
  """Initialise jax.distributed when the usual environment asks for it."""
  import jax
  if "JAX_COORDINATOR_ADDRESS" in os.environ or "JAX_NUM_PROCESSES" in os.environ:
    jax.distributed.initialize(
        coordinator_address=os.environ.get("JAX_COORDINATOR_ADDRESS"),
        num_processes=int(os.environ["JAX_NUM_PROCESSES"])
        if "JAX_NUM_PROCESSES" in os.environ else None,
        process_id=int(os.environ["JAX_PROCESS_ID"])
        if "JAX_PROCESS_ID" in os.environ else None)
  return jax.process_index(), jax.process_count()


def _inside(path: Path, folder: Path) -> bool:
  return path == folder or folder in path.parents


def _check_out(out: Path, args_paths, sources) -> None:
  """--out must be ours to write: not a file, not inside an input folder, not
  holding inputs, and either new, empty, or made by gradcam-jax."""
  from gradcam_jax._journal import MARKER
  out = Path(os.path.realpath(out))
  if out.exists() and not out.is_dir():
    raise UsageError(f"--out {out}: expected a folder; it is a file.")
  for arg in args_paths:
    p = Path(os.path.realpath(arg))
    if p.is_dir() and _inside(out, p):
      raise UsageError(f"--out {out}: it is inside the input folder {arg}; outputs "
                       "would mix with inputs. Choose a folder outside the inputs.")
  for s in sources:
    if _inside(Path(os.path.realpath(s.path)), out):
      raise UsageError(f"--out {out}: it holds the input {s.path}; choose a folder "
                       "outside the inputs.")
  if out.is_dir() and any(out.iterdir()) and not (out / MARKER).is_dir():
    raise UsageError(f"--out {out}: the folder exists and holds files gradcam-jax did "
                     "not write; choose a new or empty folder.")
  try:
    (out / MARKER).mkdir(parents=True, exist_ok=True)
    probe = out / MARKER / f"write-test-{os.getpid()}"
    probe.write_bytes(b"")
    probe.unlink()
  except OSError as err:
    raise UsageError(f"--out {out}: cannot write there ({err.strerror or err}).")


def _parse_save(value: str) -> tuple:
  from gradcam_jax._outputs import KINDS
  kinds = tuple(dict.fromkeys(k.strip() for k in value.split(",") if k.strip()))
  bad = [k for k in kinds if k not in KINDS]
  if bad or not kinds:
    raise argparse.ArgumentTypeError(
        f"expected a comma-separated list of {', '.join(KINDS)}; got {value!r}")
  return kinds


def _positive(value: str) -> int:
  try:
    n = int(value)
  except ValueError:
    n = 0
  if n < 1:
    raise argparse.ArgumentTypeError(f"expected a whole number >= 1; got {value!r}")
  return n


def _terminate(signum, frame):
  raise KeyboardInterrupt  # SIGTERM stops like Ctrl-C: in-flight writes finish


def cmd_explain(args) -> int:
  import jax
  import numpy as np
  import gradcam_jax as gcj
  from gradcam_jax import _folder_job, _report, io

  import warnings
  from PIL import Image
  # the header check refuses such images with its own message (--max-pixels)
  warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)
  sources, missing, notes = io.find_images(args.paths)
  _check_out(args.out, args.paths, sources)
  process = _distributed()  # before JAX runs anything
  model, identity = load_model(args.model, args.weights, args.random_weights)
  target = _parse_target(args.target, model.class_names)
  job = _folder_job.Job(layer=args.layer or model.layer, method=args.method,
                        target=target, resize=args.resize or model.resize,
                        save=args.save, arrays_dtype=args.arrays_dtype,
                        weights=identity, max_pixels=args.max_pixels)
  h, w = model.input_size
  try:  # a bad layer or method fails here, traced on shapes only: nothing decoded
    jax.eval_shape(_folder_job.build_explainer(model, model.variables, job),
                   jax.ShapeDtypeStruct((1, h, w, 3), _input_dtype(model, h, w)),
                   None if target is None else jax.ShapeDtypeStruct((1,), np.int32))
  except gcj.GradCAMError as err:
    option = "--method" if isinstance(err, gcj.MethodError) else "--layer"
    raise UsageError(f"{option}: {err}") from None
  for m in missing:
    print(f"warning: {m}: no such file, folder or glob match", file=sys.stderr)
  for n in notes:
    print(f"note: {n}", file=sys.stderr)
  if not sources:
    print("gradcam-jax explain: no image found in " + " ".join(args.paths)
          + f" (image extensions: {' '.join(io.IMAGE_EXTENSIONS)}); nothing explained.",
          file=sys.stderr)
    return EXIT_INPUTS
  print(f"gradcam-jax {gcj.__version__}: model {model.name}: {model.about or 'no description'}")
  print(f"  input {h}x{w} ({job.resize}), layer {job.layer}, method {job.method}, "
        f"target {'the predicted class' if target is None else model.class_names[target]}"
        f", saving {','.join(job.save)} to {args.out}")

  def on_start(todo, skipped):
    print(f"  {todo + skipped} inputs for this process: {skipped} already done, "
          f"{todo} to explain", flush=True)

  # both stop the job cleanly, also where SIGINT was inherited ignored (a command
  # started in the background by a non-interactive shell): `kill -INT` still works
  signal.signal(signal.SIGTERM, _terminate)
  signal.signal(signal.SIGINT, _terminate)
  try:
    summary = _folder_job.explain_files(
        model, sources, args.out, job, batch_size=args.batch_size,
        overwrite=args.overwrite, process=process, workers=args.workers,
        progress=not args.quiet, on_start=on_start)
  except KeyboardInterrupt:
    print("\ninterrupted: every finished image is recorded; run the same command "
          "again to resume.", file=sys.stderr)
    return EXIT_INTERRUPTED
  if process[1] > 1:
    from jax.experimental import multihost_utils
    multihost_utils.sync_global_devices("gradcam-jax explain done")
  if process[0] == 0:
    io.merge_index(args.out)
    if not args.no_report:
      _report.write_report(args.out)
  asked = {str(s.path) for s in sources}
  failed = [r for r in io.read_index(args.out)
            if r["status"] == "error" and r["path"] in asked]
  rate = summary.ok / summary.seconds if summary.seconds else 0.0
  print(f"process {process[0]}/{process[1]}: explained {summary.ok}, skipped "
        f"{summary.skipped} already done, failed {summary.failed} "
        f"({rate:.1f} img/s incl. start-up); index {args.out / 'index.jsonl'}"
        + ("" if args.no_report else f", report {args.out / 'report.html'}"))
  for r in failed:
    print(f"failed: {r['path']}: {r['error']}", file=sys.stderr)
  return EXIT_INPUTS if (failed or missing) else 0


def _input_dtype(model, h, w):
  """The dtype the model's preprocessing gives (run on one black image: a
  preprocess may be plain NumPy, which shapes alone cannot trace)."""
  import numpy as np
  return np.asarray(model.preprocess(np.zeros((1, h, w, 3), np.uint8))).dtype


def cmd_bench(args) -> int:
  from gradcam_jax import _bench
  return _bench.run(args)


def _xla_flags(value: str) -> str:
  from gradcam_jax._xla_setting import SETTINGS
  if value in SETTINGS or value.startswith("--"):
    return value
  raise argparse.ArgumentTypeError(
      f"expected a setting ({', '.join(SETTINGS)}) or XLA flags starting with --; "
      f"got {value!r}")


def _add_xla_flags(parser) -> None:
  from gradcam_jax._xla_setting import CHOSEN, SETTINGS
  parser.add_argument(
      "--xla-flags", type=_xla_flags, metavar="SETTING|FLAGS",
      help=f"XLA flags for this process, replacing XLA_FLAGS: a setting "
      f"({', '.join(SETTINGS)}; default = XLA's own) or raw flags. Unset: your "
      f"XLA_FLAGS if set, else {CHOSEN} ({SETTINGS[CHOSEN]}); gradcam-jax bench "
      "finds the fastest for your model")


def cmd_demo(args) -> int:
  from gradcam_jax._demo_command import run_demo
  return run_demo(args.out)


def build_parser() -> argparse.ArgumentParser:
  from gradcam_jax import __version__
  from gradcam_jax._outputs import KINDS
  from gradcam_jax.io import MAX_PIXELS, RESIZE_POLICIES
  from gradcam_jax._methods import ALL_METHODS
  fmt = argparse.ArgumentDefaultsHelpFormatter
  parser = argparse.ArgumentParser(
      prog="gradcam-jax", formatter_class=fmt,
      description="Grad-CAM, guided backprop and Guided Grad-CAM in JAX.")
  parser.add_argument("--version", action="version", version=f"gradcam-jax {__version__}")
  sub = parser.add_subparsers(dest="command", required=True)
  demo = sub.add_parser("demo", formatter_class=fmt, help="explain the shipped sample "
                        "scenes with the shipped model")
  demo.add_argument("--out", type=Path, default=Path("gradcam_demo"),
                    help="folder for the panels")
  _add_xla_flags(demo)
  demo.set_defaults(func=cmd_demo)
  ex = sub.add_parser("explain", formatter_class=fmt,
                      help="explain image files, folders and globs",
                      epilog="Exit status: 0 all done, 2 usage error, 3 some inputs "
                      "failed or none found, 130 interrupted (rerun to resume).")
  ex.add_argument("paths", nargs="+", help="files, folders (recursive) or globs; an "
                  "existing path is taken literally")
  ex.add_argument("--model", default="demo",
                  help="demo | vgg16 | resnet50 | keras.applications.NAME (e.g. "
                  "keras.applications.VGG16) | keras:FILE.keras | MODULE:FACTORY")
  ex.add_argument("--weights", help="weights file for vgg16/resnet50 (.safetensors, "
                  ".pth, or Keras .h5 for vgg16; needs pip install \"gradcam-jax[weights]\""
                  " for .safetensors/.h5), a checkpoint folder for demo, or the file "
                  "a keras.applications model loads (default: Keras downloads its "
                  "ImageNet weights)")
  ex.add_argument("--random-weights", action="store_true",
                  help="vgg16/resnet50/keras.applications with random weights "
                  "(timing runs)")
  ex.add_argument("--layer", help="target layer path, e.g. features_29 or layer4 "
                  "(default: the model's last conv block)")
  methods = list(ALL_METHODS)
  ex.add_argument("--method", default="gradcam", choices=methods, metavar="METHOD",
                  help="CAM method: " + ", ".join(methods))
  ex.add_argument("--target", help="class index or name to explain (default: the "
                  "predicted class)")
  ex.add_argument("--resize", choices=RESIZE_POLICIES,
                  help="fit images to the model's input: squash, crop (shorter side "
                  "then centre crop) or pad (default: the model's convention)")
  ex.add_argument("--batch-size", type=_positive, default=16,
                  help="images per device call (the last batch is padded)")
  ex.add_argument("--out", type=Path, default=Path("gradcam_out"),
                  help="output folder: new, empty, or made by an earlier run (resume)")
  ex.add_argument("--save", type=_parse_save, default=KINDS,
                  help=f"comma-separated outputs to write: {', '.join(KINDS)}")
  ex.add_argument("--arrays-dtype", choices=("float32", "float16"), default="float32",
                  help="dtype of the maps in the .npz (float16: half the size)")
  ex.add_argument("--max-pixels", type=_positive, default=MAX_PIXELS,
                  help="refuse images with more pixels (read from the header, before "
                  "decoding)")
  ex.add_argument("--workers", type=_positive, default=4, help="decoding threads")
  ex.add_argument("--overwrite", action="store_true",
                  help="redo every input (default: resume, redoing only inputs whose "
                  "file or settings changed)")
  ex.add_argument("--no-report", action="store_true", help="do not write report.html")
  ex.add_argument("--quiet", action="store_true", help="no progress bar")
  _add_xla_flags(ex)
  ex.set_defaults(func=cmd_explain)
  bench = sub.add_parser(
      "bench", formatter_class=fmt,
      help="time a model's forward and explainer under each XLA setting (one process "
      "each) and print the fastest", description=__import__(
          "gradcam_jax._bench", fromlist=["_"]).__doc__.splitlines()[0])
  bench.add_argument("--model", default="demo",
                     help="demo | vgg16 | resnet50 | MODULE:FACTORY")
  bench.add_argument("--weights", help="as for explain")
  bench.add_argument("--random-weights", action="store_true",
                     help="vgg16/resnet50 with random weights (speed does not depend "
                     "on the weights)")
  bench.add_argument("--layer", help="target layer path (default: the model's)")
  bench.add_argument("--method", default="gradcam", choices=methods, metavar="METHOD",
                     help="CAM method: " + ", ".join(methods))
  bench.add_argument("--batch-size", type=_positive, default=8, help="images per call")
  bench.add_argument("--calls", type=_positive, default=5,
                     help="timed calls per process, after one compiling call")
  bench.add_argument("--rounds", type=_positive, default=3,
                     help="processes per setting, alternating")
  bench.add_argument("--quick", action="store_true", help="one round")
  bench.set_defaults(func=cmd_bench)
  return parser


def main(argv=None) -> int:
  args = build_parser().parse_args(argv)
  if args.command in ("demo", "explain"):
    # before anything starts JAX's backend: XLA reads its flags once per process
    from gradcam_jax import _xla_setting
    print(_xla_setting.describe(_xla_setting.apply(args.xla_flags)).strip(), flush=True)
  try:
    return args.func(args)
  except UsageError as err:
    print(f"gradcam-jax {args.command}: error: {err}", file=sys.stderr)
    return EXIT_USAGE


if __name__ == "__main__":
  # run the importable module's main, so that its exception classes are the ones
  # other modules import (python -m would otherwise make a second copy, __main__)
  from gradcam_jax.cli import main as _main
  sys.exit(_main())
