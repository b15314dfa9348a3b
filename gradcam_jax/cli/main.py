"""The ``gradcam-jax`` command line: the parser of its four subcommands and the
entry point (``gradcam_jax.cli:main``, ``python -m gradcam_jax.cli``)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from gradcam_jax.cli.usage import EXIT_USAGE, UsageError

__all__ = ["build_parser", "main"]


def _parse_save(value: str) -> tuple:
  from gradcam_jax.cli.outputs import KINDS

  kinds = tuple(dict.fromkeys(k.strip() for k in value.split(",") if k.strip()))
  bad = [k for k in kinds if k not in KINDS]
  if bad or not kinds:
    raise argparse.ArgumentTypeError(
      f"expected a comma-separated list of {', '.join(KINDS)}; got {value!r}"
    )
  return kinds


def _positive(value: str) -> int:
  try:
    n = int(value)
  except ValueError:
    n = 0
  if n < 1:
    raise argparse.ArgumentTypeError(f"expected a whole number >= 1; got {value!r}")
  return n


class _Help(argparse.HelpFormatter):
  """Each option's default once, readably: not when its help already says it, nor
  None/False (the option is simply off), and a tuple as the comma-separated list
  the option takes."""

  def _get_help_string(self, action) -> str:
    text = action.help or ""
    default = action.default
    if (
      not action.option_strings
      or "default" in text
      or default is None
      or default is False
      or default is argparse.SUPPRESS
    ):
      return text
    if isinstance(default, (tuple, list)):
      default = ",".join(map(str, default))
    return f"{text} (default: {default})"


def cmd_layers(args) -> int:
  """Print the layers of the model that --model names (what --layer takes)."""

  import gradcam_jax as gcj
  from gradcam_jax.cli.model_options import input_spec, load_model

  model, _ = load_model(args.model, args.weights, args.random_weights, args.output)
  print(
    f"layers of {model.name}, in the order they finish (the last are nearest the output):"
  )
  print(gcj.list_layers(model.apply_fn, model.variables, input_spec(model)))
  return 0


def cmd_explain(args) -> int:
  from gradcam_jax.cli.explain import cmd_explain as run

  return run(args)


def cmd_bench(args) -> int:
  from gradcam_jax.cli import bench

  return bench.run(args)


def _xla_flags(value: str) -> str:
  from gradcam_jax.cli.xla_setting import SETTINGS

  if value in SETTINGS or value.startswith("--"):
    return value
  raise argparse.ArgumentTypeError(
    f"expected a setting ({', '.join(SETTINGS)}) or XLA flags starting with --; "
    f"got {value!r}"
  )


def _add_xla_flags(parser) -> None:
  from gradcam_jax.cli.xla_setting import CHOSEN, SETTINGS

  parser.add_argument(
    "--xla-flags",
    type=_xla_flags,
    metavar="SETTING|FLAGS",
    help=f"XLA flags for this process, replacing XLA_FLAGS: a setting "
    f"({', '.join(SETTINGS)}; default = XLA's own) or raw flags. Unset: your "
    f"XLA_FLAGS if set, else {CHOSEN} ({SETTINGS[CHOSEN]}); gradcam-jax bench "
    "finds the fastest for your model",
  )


def cmd_demo(args) -> int:
  from gradcam_jax.cli.demo import run_demo

  return run_demo(args.out)


def build_parser() -> argparse.ArgumentParser:
  from gradcam_jax import __version__
  from gradcam_jax.cli.outputs import KINDS
  from gradcam_jax.io import MAX_PIXELS, RESIZE_POLICIES
  from gradcam_jax.media import MAX_ELEMENTS
  from gradcam_jax.cli.model_options import add_model_options

  fmt = _Help
  parser = argparse.ArgumentParser(
    prog="gradcam-jax",
    formatter_class=fmt,
    description="Grad-CAM, guided backprop and Guided Grad-CAM in JAX.",
  )
  parser.add_argument("--version", action="version", version=f"gradcam-jax {__version__}")
  sub = parser.add_subparsers(dest="command", required=True)
  demo = sub.add_parser(
    "demo",
    formatter_class=fmt,
    help="explain the shipped sample scenes with the shipped model",
  )
  demo.add_argument(
    "--out", type=Path, default=Path("gradcam_demo"), help="folder for the panels"
  )
  _add_xla_flags(demo)
  demo.set_defaults(func=cmd_demo)
  ex = sub.add_parser(
    "explain",
    formatter_class=fmt,
    help="explain image files, folders and globs",
    epilog="Exit status: 0 all done, 2 usage error, 3 some inputs "
    "failed or none found, 130 interrupted (rerun to resume).",
  )
  ex.add_argument(
    "paths",
    nargs="+",
    help="files, folders (recursive) or globs; an existing path is taken literally",
  )
  add_model_options(ex)
  ex.add_argument(
    "--target", help="class index or name to explain (default: the predicted class)"
  )
  ex.add_argument(
    "--resize",
    choices=RESIZE_POLICIES,
    help="fit images to the model's input: squash, crop (shorter side "
    "then centre crop) or pad (default: the model's convention)",
  )
  ex.add_argument(
    "--batch-size",
    type=_positive,
    default=16,
    help="images per device call (the last batch is padded to it; a job of fewer "
    "images runs at the next power of two that holds them)",
  )
  ex.add_argument(
    "--out",
    type=Path,
    default=Path("gradcam_out"),
    help="output folder: new, empty, or made by an earlier run (resume)",
  )
  ex.add_argument(
    "--save",
    type=_parse_save,
    default=KINDS,
    help=f"comma-separated outputs to write: {', '.join(KINDS)} (signals and clips "
    "get overlay and arrays; volumes also nifti, the map over a NIfTI input's scan)",
  )
  ex.add_argument(
    "--arrays-dtype",
    choices=("float32", "float16"),
    default="float32",
    help="dtype of the maps in the .npz (float16: half the size)",
  )
  ex.add_argument(
    "--max-pixels",
    type=_positive,
    default=MAX_PIXELS,
    help="refuse images and video frames with more pixels (read from the header, "
    "before decoding)",
  )
  ex.add_argument(
    "--max-elements",
    type=_positive,
    default=MAX_ELEMENTS,
    help="refuse .npy arrays and NIfTI volumes with more values (read from the "
    "header, before reading)",
  )
  ex.add_argument(
    "--no-exif-orientation",
    action="store_true",
    help="explain photos as stored, ignoring their EXIF orientation (by default it is "
    "applied, as photo viewers do, and recorded)",
  )
  ex.add_argument("--workers", type=_positive, default=4, help="decoding threads")
  ex.add_argument(
    "--overwrite",
    action="store_true",
    help="redo every input (default: resume, redoing only inputs whose "
    "file or settings changed)",
  )
  ex.add_argument("--no-report", action="store_true", help="do not write report.html")
  ex.add_argument("--quiet", action="store_true", help="no progress bar")
  _add_xla_flags(ex)
  ex.set_defaults(func=cmd_explain)
  layers = sub.add_parser(
    "layers",
    formatter_class=fmt,
    help="print the layers of a model: the names --layer takes",
    description="Print every activation of the model --model names, with its module "
    "and shape, in the order they finish: the names --layer takes.",
  )
  add_model_options(layers)
  layers.set_defaults(func=cmd_layers)
  bench = sub.add_parser(
    "bench",
    formatter_class=fmt,
    help="time a model's forward and explainer under each XLA setting (one process "
    "each) and print the fastest",
    description=__import__("gradcam_jax.cli.bench", fromlist=["_"]).__doc__.splitlines()[0],
  )
  add_model_options(bench)
  bench.add_argument("--batch-size", type=_positive, default=8, help="images per call")
  bench.add_argument(
    "--calls",
    type=_positive,
    default=5,
    help="timed calls per process, after one compiling call",
  )
  bench.add_argument(
    "--rounds", type=_positive, default=3, help="processes per setting, alternating"
  )
  bench.add_argument("--quick", action="store_true", help="one round")
  bench.set_defaults(func=cmd_bench)
  return parser


def main(argv=None) -> int:
  args = build_parser().parse_args(argv)
  if args.command in ("demo", "explain"):
    # before anything starts JAX's backend: XLA reads its flags once per process
    from gradcam_jax.cli import xla_setting

    print(xla_setting.describe(xla_setting.apply(args.xla_flags)).strip(), flush=True)
  try:
    return args.func(args)
  except UsageError as err:
    print(f"gradcam-jax {args.command}: error: {err}", file=sys.stderr)
    return EXIT_USAGE
