"""Keras 3 VGG16 through the Keras adapter vs the Flax zoo VGG16, one process.

The same weights in both (a random keras.applications.VGG16, written by Keras in its
legacy .h5 layout and loaded into the Flax zoo model), the same batch, both jitted
with gcj.jit (params as arguments). Interleaved rounds: each explainer in turn, so
drift on a shared machine hits both alike. Prints a table (medians, and the ratio
Keras / Flax of each pair) and writes JSON; the maps are checked equal first.

    python benchmarks/keras_vs_flax.py                         # batch 8, 5 rounds
    python benchmarks/keras_vs_flax.py --batch 8 --rounds 5 \\
        --json benchmarks/results/keras_vs_flax.json
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile

os.environ.setdefault("KERAS_BACKEND", "jax")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import interleaved, versions, write_json  # noqa: E402


def _models(tmp: str):
  import h5py
  import keras
  from keras.src.legacy.saving.legacy_h5_format import save_weights_to_hdf5_group

  from gradcam_jax import zoo
  keras.utils.set_random_seed(0)
  model = keras.applications.VGG16(weights=None)
  path = os.path.join(tmp, "vgg16_weights_tf_dim_ordering_tf_kernels.h5")
  with h5py.File(path, "w") as f:
    save_weights_to_hdf5_group(f, model)
  return model, zoo.load("vgg16", path)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--batch", type=int, default=8)
  parser.add_argument("--rounds", type=int, default=5)
  parser.add_argument("--json", default="benchmarks/results/keras_vs_flax.json")
  args = parser.parse_args()

  import jax
  import keras
  import numpy as np

  import gradcam_jax as gcj
  with tempfile.TemporaryDirectory() as tmp:
    model, zm = _models(tmp)
  x = jax.random.normal(jax.random.key(1), (args.batch, 224, 224, 3)) * 40
  from gradcam_jax._adapters import pick
  adapter, params = pick(model, None)
  forward_keras = jax.jit(adapter)
  forward_flax = jax.jit(zm.apply_fn)
  ggc_keras = gcj.jit(gcj.guided_gradcam(model, layer="block5_conv3"))
  ggc_flax = gcj.jit(gcj.guided_gradcam(zm.apply_fn, zm.variables, layer=zm.layer))
  gc_keras = gcj.jit(gcj.gradcam(model, layer="block5_conv3"))
  gc_flax = gcj.jit(gcj.gradcam(zm.apply_fn, zm.variables, layer=zm.layer))
  fns = {
      "forward/keras": lambda: forward_keras(params, x),
      "forward/flax": lambda: forward_flax(zm.variables, x),
      "gradcam/keras": lambda: gc_keras(x).cam,
      "gradcam/flax": lambda: gc_flax(x).cam,
      "guided_gradcam/keras": lambda: ggc_keras(x).guided_gradcam,
      "guided_gradcam/flax": lambda: ggc_flax(x).guided_gradcam,
  }
  a, b = ggc_keras(x), ggc_flax(x)
  gap = float(np.abs(np.asarray(a.guided_gradcam) - np.asarray(b.guided_gradcam)).max())
  scale = float(np.abs(np.asarray(b.guided_gradcam)).max())
  assert gap <= 1e-4 * scale, (gap, scale)
  timing = interleaved(fns, lambda fn: jax.block_until_ready(fn()), args.rounds)
  median = {name: statistics.median(t) for name, t in timing.times_s.items()}
  rows = []
  print(f"VGG16 224x224, batch {args.batch}, float32, {args.rounds} interleaved rounds; "
        f"keras {keras.__version__}, jax {jax.__version__}")
  print(f"{'':16s} {'keras ms':>9s} {'flax ms':>9s} {'keras/flax':>10s} "
        f"{'first call keras/flax s':>24s}")
  for what in ("forward", "gradcam", "guided_gradcam"):
    k, f = median[f"{what}/keras"], median[f"{what}/flax"]
    first = (timing.first_s[f"{what}/keras"], timing.first_s[f"{what}/flax"])
    rows.append({"what": what, "keras_s": k, "flax_s": f, "ratio": k / f,
                 "first_keras_s": first[0], "first_flax_s": first[1]})
    print(f"{what:16s} {k * 1e3:9.1f} {f * 1e3:9.1f} {k / f:10.3f} "
          f"{first[0]:11.2f} / {first[1]:.2f}")
  write_json(args.json, {"batch": args.batch, "rounds": args.rounds,
                         "keras": keras.__version__, "versions": versions(),
                         "max_abs_diff_guided_gradcam": gap, "rows": rows,
                         "times_s": timing.times_s})


if __name__ == "__main__":
  main()
