"""Differentiable explanations as a training signal: "right for the right reasons".

Fine-tunes the shipped demo model for a few steps with an extra loss on its own
Grad-CAM: the share of each digit's class map that falls outside that digit's box
(``jax.grad`` through the explanation, second-order). A control arm fine-tunes the
same model on the same batches with cross-entropy only (``--weight 0``), so a change
can be attributed to the explanation loss. Reports, on held-out scenes, accuracy, the
Grad-CAM pointing game and the Grad-CAM mass outside the boxes, before and after each
arm, and writes JSON.

    python benchmarks/attention_supervision.py             # 150 steps, batch 32
    python benchmarks/attention_supervision.py --steps 50 --weight 2.0
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import versions, write_json  # noqa: E402


def box_masks(boxes: np.ndarray, size: int = 64) -> np.ndarray:
  """(B, 2, 4) boxes -> (B, 2, size, size) 0/1 masks (a -1 box gives all zeros)."""
  masks = np.zeros((*boxes.shape[:2], size, size), np.float32)
  for b, k in np.ndindex(*boxes.shape[:2]):
    x0, y0, x1, y1 = boxes[b, k]
    if x1 > x0:
      masks[b, k, y0:y1, x0:x1] = 1.0
  return masks


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--steps", type=int, default=150)
  parser.add_argument("--batch", type=int, default=32)
  parser.add_argument("--lr", type=float, default=1e-4)
  parser.add_argument("--weight", type=float, default=1.0, help="attention loss weight")
  parser.add_argument("--eval-scenes", type=int, default=300)
  parser.add_argument("--json", default="benchmarks/results/attention_supervision.json")
  args = parser.parse_args()

  import jax
  import jax.numpy as jnp
  import optax
  import gradcam_jax as gcj
  from gradcam_jax import zoo
  from gradcam_jax.zoo import demo
  from gradcam_jax.zoo.training.digit_scenes import make_scenes
  from gradcam_jax.zoo.training.demo_eval import accuracy, pointing

  start = time.perf_counter()
  model = zoo.load("demo")
  held_out = make_scenes(args.eval_scenes, "test", two_fraction=0.5, seed=31)
  train = make_scenes(args.steps * args.batch, "train", two_fraction=1.0, seed=4321)
  masks = box_masks(train.boxes)

  two = np.flatnonzero(held_out.classes[:, 1] >= 0)
  held_masks = jnp.asarray(box_masks(held_out.boxes[two]))
  held_x = demo.preprocess(held_out.images[two])
  held_classes = jnp.asarray(held_out.classes[two])

  def outside_share(variables, images, classes, mask):
    cam = gcj.gradcam(model.apply_fn, variables, layer=model.layer)(images, classes).cam
    return jnp.sum(cam * (1 - mask), axis=(2, 3)) / (jnp.sum(cam, axis=(2, 3)) + 1e-6)

  def evaluate(variables):
    acc = accuracy(jax.jit(model.apply_fn), variables, held_out)
    acc["two_digit_gradcam_pointing"] = pointing(model.apply_fn, variables, held_out,
                                                 model.layer)
    acc["two_digit_gradcam_outside_share"] = float(jax.jit(outside_share)(
        variables, held_x, held_classes, held_masks).mean())
    return acc

  def fine_tune(weight):
    def loss_fn(params, stats, images, labels, classes, mask):
      variables = {"params": params, "batch_stats": stats}
      logits = model.apply_fn(variables, images)
      ce = optax.softmax_cross_entropy(logits, labels).mean()
      outside = outside_share(variables, images, classes, mask).mean()
      return ce + weight * outside, (ce, outside)

    tx = optax.adam(args.lr)
    params, stats = model.variables["params"], model.variables["batch_stats"]
    opt_state = tx.init(params)

    @jax.jit
    def step(params, opt_state, images, labels, classes, mask):
      (_, aux), grads = jax.value_and_grad(loss_fn, has_aux=True)(
          params, stats, images, labels, classes, mask)
      updates, opt_state = tx.update(grads, opt_state, params)
      return optax.apply_updates(params, updates), opt_state, aux

    log = []
    for i in range(args.steps):
      sl = slice(i * args.batch, (i + 1) * args.batch)
      params, opt_state, (ce, outside) = step(
          params, opt_state, demo.preprocess(train.images[sl]),
          jnp.asarray(train.labels[sl]), jnp.asarray(train.classes[sl]),
          jnp.asarray(masks[sl]))
      if i % 25 == 0 or i == args.steps - 1:
        log.append({"step": i, "ce": float(ce), "outside_share": float(outside)})
        print(f"weight {weight}: step {i:4d}: cross-entropy {float(ce):.4f}, Grad-CAM "
              f"mass outside the boxes (training batch) {float(outside):.3f}", flush=True)
    return evaluate({"params": params, "batch_stats": stats}), log

  before = evaluate(model.variables)
  print("before: ", json.dumps(before), flush=True)
  after, log = fine_tune(args.weight)
  print("after:  ", json.dumps(after), flush=True)
  control, control_log = fine_tune(0.0)
  print("control:", json.dumps(control), flush=True)
  print(f"{'held out':34s} {'before':>8s} {'explanation loss':>17s} {'control (CE)':>13s}")
  for key in ("one_digit_top1", "two_digit_both_in_top2", "two_digit_gradcam_pointing",
              "two_digit_gradcam_outside_share"):
    print(f"{key:34s} {before[key]:8.3f} {after[key]:17.3f} {control[key]:13.3f}")
  result = {"date": time.strftime("%Y-%m-%d"), "versions": versions(),
            "settings": vars(args), "before": before, "after": after, "log": log,
            "control": control, "control_log": control_log,
            "seconds": round(time.perf_counter() - start, 1)}
  write_json(args.json, result)


if __name__ == "__main__":
  main()
