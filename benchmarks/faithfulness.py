"""Faithfulness and localisation of every method on the demo model's held-out
two-digit scenes (both digits explained), plus the cascading-randomisation sanity
table for Grad-CAM, guided backprop and Guided Grad-CAM.

Maps are compared at input resolution (64x64). Gradient-type maps (plain input
gradient, guided backprop) become 2-D by summing absolute values over channels and
are min-max normalised like the CAMs. Baselines: a random map, a centred Gaussian.
Deletion/insertion replace pixels by 0 (black); ROAD uses noisy linear imputation.

    python benchmarks/faithfulness.py                  # 200 scenes, 400 explanations
    python benchmarks/faithfulness.py --scenes 100 --json out.json
    python benchmarks/faithfulness.py --only iscam randomcam --json out.json  # rows only

Random-CAM (random channel weights) is drawn with key 0; SS-CAM's and Smooth
Grad-CAM++'s noise likewise. FullGrad has no layer (every conv and batch norm).
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import versions, write_json  # noqa: E402

METHODS = ["gradcam", "finercam", "shapleycam", "hirescam", "gradcam_elementwise", "xgradcam", "gradcam++",
           "layercam", "eigencam", "eigengradcam", "fem", "kpcacam", "scorecam",
           "ablationcam", "iscam", "sscam", "smoothgradcam++", "randomcam", "fullgrad"]
OTHERS = ["guided_backprop", "input_gradient", "random", "centre_gaussian"]


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--scenes", type=int, default=200)
  parser.add_argument("--seed", type=int, default=777)
  parser.add_argument("--steps", type=int, default=16)
  parser.add_argument("--sanity-scenes", type=int, default=32)
  parser.add_argument("--chunk", type=int, default=40, help="images per explainer call")
  parser.add_argument("--json", default="benchmarks/results/faithfulness.json")
  parser.add_argument("--only", nargs="+", choices=METHODS + OTHERS,
                      help="these rows only (and no sanity table)")
  args = parser.parse_args()
  wanted = args.only or METHODS + OTHERS

  import jax
  import jax.numpy as jnp
  import gradcam_jax as gcj
  from gradcam_jax import metrics, sanity, zoo
  from gradcam_jax.zoo.training.digit_scenes import make_scenes

  start = time.perf_counter()
  model = zoo.load("demo")
  scenes = make_scenes(args.scenes, "test", two_fraction=1.0, seed=args.seed)
  # every (scene, digit) pair is one explanation of the class present
  images = np.repeat(scenes.images, 2, axis=0)
  x = model.preprocess(images)
  targets = jnp.asarray(scenes.classes.reshape(-1))
  boxes = scenes.boxes.reshape(-1, 4)
  score = metrics.probabilities(model.apply_fn, model.variables)
  n = x.shape[0]

  def chunked(fn):  # explain `chunk` images at a time: Score-CAM's masked batches
    parts = [fn(x[i:i + args.chunk], targets[i:i + args.chunk])  # stay in memory
             for i in range(0, n, args.chunk)]
    return jnp.concatenate(parts)

  def gradient_map(explain):
    return chunked(lambda x, t: gcj.normalize(jnp.abs(explain(x, t).guided).sum(-1)))

  maps = {}
  for m in [m for m in METHODS if m in wanted]:
    layer = None if m == "fullgrad" else model.layer  # FullGrad: every conv layer
    explain = gcj.jit(gcj.cam(model.apply_fn, model.variables, method=m,
                              layer=layer, batch_size=16))
    key = {"key": jax.random.key(0)} if gcj.ALL_METHODS[m].keyed else {}
    maps[m] = chunked(lambda x, t: explain(x, t, **key).cam)
  maps["guided_backprop"] = gradient_map(
      jax.jit(gcj.guided_backprop(model.apply_fn, model.variables)))

  @jax.jit
  def input_gradient(x, t):
    g = jax.grad(lambda x: jnp.sum(gcj.class_logit(model.apply_fn(model.variables, x), t)))(x)
    return gcj.normalize(jnp.abs(g).sum(-1))

  maps["input_gradient"] = chunked(input_gradient)
  maps["random"] = jax.random.uniform(jax.random.key(0), (n, 64, 64))
  yy, xx = jnp.mgrid[0:64, 0:64]
  maps["centre_gaussian"] = jnp.broadcast_to(
      jnp.exp(-((yy - 31.5) ** 2 + (xx - 31.5) ** 2) / (2 * 16.0 ** 2)), (n, 64, 64))

  maps = {name: cam for name, cam in maps.items() if name in wanted}
  rows = []
  for name, cam in maps.items():
    parts = {k: [] for k in ("del", "ins", "drop", "inc", "morf", "lerf")}
    for i in range(0, n, args.chunk):  # bounded memory: `chunk` images at a time
      xc, mc, tc = x[i:i + args.chunk], cam[i:i + args.chunk], targets[i:i + args.chunk]
      w = xc.shape[0] / n
      parts["del"].append(metrics.deletion(score, xc, mc, tc, steps=args.steps,
                                           batch_size=4).auc)
      parts["ins"].append(metrics.insertion(score, xc, mc, tc, steps=args.steps,
                                            batch_size=4).auc)
      drop, inc = metrics.average_drop_increase(score, xc, mc, tc)
      parts["drop"].append(drop * w)
      parts["inc"].append(inc * w)
      parts["morf"].append(metrics.road(score, xc, mc, tc, key=jax.random.key(1),
                                        order="morf").mean(1))
      parts["lerf"].append(metrics.road(score, xc, mc, tc, key=jax.random.key(1),
                                        order="lerf").mean(1))
    mean = lambda k: float(jnp.mean(jnp.concatenate(parts[k])))
    rows.append({
        "method": name,
        "pointing": float(metrics.pointing_game(cam, boxes).mean()),
        "localisation_iou50": float(metrics.localisation(cam, boxes).mean()),
        "deletion_auc": mean("del"), "insertion_auc": mean("ins"),
        "average_drop": float(sum(parts["drop"])),
        "increase_in_confidence": float(sum(parts["inc"])),
        "road_morf": mean("morf"), "road_lerf": mean("lerf")})
    r = rows[-1]
    print(f"{name:22s} point {r['pointing']:.3f}  loc {r['localisation_iou50']:.3f}  "
          f"del {r['deletion_auc']:.3f}  ins {r['insertion_auc']:.3f}  "
          f"AD {r['average_drop']:5.1f}  IC {r['increase_in_confidence']:5.1f}  "
          f"MoRF {r['road_morf']:.3f}  LeRF {r['road_lerf']:.3f}", flush=True)

  k = 0 if args.only else args.sanity_scenes
  sx, st = x[:k], targets[:k]
  table = {}
  for field, make in () if args.only else (("cam", lambda v: gcj.gradcam(model.apply_fn, v, layer=model.layer)),
                      ("guided", lambda v: gcj.guided_backprop(model.apply_fn, v)),
                      ("guided_gradcam",
                       lambda v: gcj.guided_gradcam(model.apply_fn, v, layer=model.layer))):
    table[field] = [r._asdict() for r in sanity.randomisation_table(
        make, model.apply_fn, model.variables, sx, st, key=jax.random.key(2),
        field=field, cell=8)]
    print(f"\ncascading randomisation, {field} (Spearman, Spearman |.|, SSIM, HOG):")
    for r in table[field]:
      print(f"  {r['randomised']:26s} {r['spearman']:6.3f} {r['spearman_abs']:6.3f} "
            f"{r['ssim']:6.3f} {r['hog']:6.3f}")

  result = {"date": time.strftime("%Y-%m-%d"), "versions": versions(),
            "scenes": args.scenes, "explanations": n, "seed": args.seed,
            "steps": args.steps, "baseline": "zeros (black)", "rows": rows,
            "sanity_scenes": k, "sanity": table,
            "seconds": round(time.perf_counter() - start, 1)}
  write_json(args.json, result)


if __name__ == "__main__":
  main()
