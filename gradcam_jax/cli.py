"""The ``gradcam-jax`` command: ``demo`` and ``explain``.

Exit status of ``explain``: 0 when every input was explained (or already done),
3 when some inputs could not be read or matched nothing (they are listed in the
index and at the end; everything else is written), 2 for usage errors, 1 for a
crash.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from pathlib import Path


def _load_model(spec: str, weights: str | None):
  from gradcam_jax import zoo
  if ":" in spec:
    module, _, factory = spec.partition(":")
    model = getattr(importlib.import_module(module), factory)(
        **({"weights": weights} if weights else {}))
    missing = [f for f in zoo.ZooModel._fields if not hasattr(model, f)]
    if missing:
      raise SystemExit(f"--model {spec}: expected the factory to return a "
                       f"gradcam_jax.zoo.ZooModel (fields {zoo.ZooModel._fields}); "
                       f"it lacks {missing}.")
    return model
  return zoo.load(spec, weights)


def _parse_target(value: str | None, class_names) -> int | None:
  if value is None:
    return None
  if value.lstrip("-").isdigit():
    c = int(value)
  elif value in class_names:
    c = list(class_names).index(value)
  else:
    raise SystemExit(f"--target: expected a class index 0..{len(class_names) - 1} or a "
                     f"class name; got {value!r}.")
  if not 0 <= c < len(class_names):
    raise SystemExit(f"--target: expected 0..{len(class_names) - 1}; got {c}.")
  return c


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


def cmd_explain(args) -> int:
  from gradcam_jax import _batch, io
  process = _distributed()
  model = _load_model(args.model, args.weights)
  sources, missing = io.find_images(args.paths)
  for m in missing:
    print(f"warning: {m}: no such file, folder or glob match", file=sys.stderr)
  target = _parse_target(args.target, model.class_names)
  summary = _batch.explain_files(
      model, sources, args.out, layer=args.layer, target=target,
      batch_size=args.batch_size, overwrite=args.overwrite, process=process,
      progress=not args.quiet)
  if process[1] > 1:
    from jax.experimental import multihost_utils
    multihost_utils.sync_global_devices("gradcam-jax explain done")
  if process[0] == 0:
    io.merge_index(args.out)
  rate = summary.ok / summary.seconds if summary.seconds else 0.0
  print(f"process {process[0]}/{process[1]}: explained {summary.ok}, skipped "
        f"{summary.skipped} already done, failed {summary.failed} "
        f"({rate:.1f} img/s incl. start-up); index in {args.out / 'index.jsonl'}")
  failed = [r for r in summary.records if r["status"] == "error"]
  for r in failed:
    print(f"failed: {r['path']}: {r['error']}", file=sys.stderr)
  return 3 if (failed or missing) else 0


def cmd_demo(args) -> int:
  from gradcam_jax._demo import run_demo
  return run_demo(args.out)


def build_parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(
      prog="gradcam-jax", description="Grad-CAM, guided backprop and Guided Grad-CAM "
      "in JAX.")
  sub = parser.add_subparsers(dest="command", required=True)
  demo = sub.add_parser("demo", help="explain the shipped sample scenes with the "
                        "shipped model")
  demo.add_argument("--out", type=Path, default=Path("gradcam_demo"))
  demo.set_defaults(func=cmd_demo)
  ex = sub.add_parser("explain", help="explain image files, folders and globs")
  ex.add_argument("paths", nargs="+", help="files, folders (recursive) or globs")
  ex.add_argument("--model", default="demo",
                  help="demo | vgg16 | resnet50 | module:factory (default demo)")
  ex.add_argument("--weights", help="weights file for vgg16/resnet50 (.safetensors, "
                  ".pth, or Keras .h5 for vgg16)")
  ex.add_argument("--layer", help="target layer path, e.g. features_29 or layer4")
  ex.add_argument("--target", help="class index or name to explain (default: the "
                  "predicted class)")
  ex.add_argument("--batch-size", type=int, default=16)
  ex.add_argument("--out", type=Path, default=Path("gradcam_out"))
  ex.add_argument("--overwrite", action="store_true",
                  help="redo inputs whose outputs exist (default: resume)")
  ex.add_argument("--quiet", action="store_true", help="no progress bar")
  ex.set_defaults(func=cmd_explain)
  return parser


def main(argv=None) -> int:
  args = build_parser().parse_args(argv)
  return args.func(args)


if __name__ == "__main__":
  sys.exit(main())
