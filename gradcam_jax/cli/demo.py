"""``gradcam-jax demo``: the seed's picture, made by this library, with no arguments.

Explains the shipped sample scenes with the shipped model: per image, the panels
input | Grad-CAM overlay | guided backprop | Guided Grad-CAM for the top class (and
for the second class on two-digit scenes), and one summary figure.
"""

from __future__ import annotations

import time
from pathlib import Path

import cv2
import jax
import numpy as np

import gradcam_jax as gcj
from gradcam_jax import visualize as vis
from gradcam_jax import zoo
from gradcam_jax.zoo import demo as demo_model


def class_panels(model, images, out, probs, targets, scale: int):
  """One panel per image: input | Grad-CAM overlay | guided backprop | Guided
  Grad-CAM, for the class `targets[i]` of `out`."""
  rows = []
  for i, image in enumerate(images):
    c = int(targets[i])
    rows.append(
      vis.panel(
        [
          image,
          vis.overlay(image, out.cam[i]),
          vis.deprocess_gradient(out.guided[i]),
          vis.deprocess_gradient(out.guided_gradcam[i]),
        ],
        [
          "input",
          f"Grad-CAM {model.class_names[c]} ({probs[i, c]:.2f})",
          "guided backprop",
          "Guided Grad-CAM",
        ],
        scale=scale,
      )
    )
  return rows


def run_demo(out_dir: Path, scale: int = 3) -> int:
  start = time.perf_counter()
  model = zoo.load("demo")
  images, records = demo_model.load_samples()
  explain = gcj.jit(gcj.guided_gradcam(model.apply_fn, model.variables, layer=model.layer))
  x = model.preprocess(images)
  top = explain(x)  # argmax targets
  probs = np.asarray(jax.nn.softmax(top.logits))
  second = np.argsort(-probs, axis=1)[:, 1]
  runner_up = explain(x, second.astype(np.int32))  # same shapes: no recompilation
  out_dir.mkdir(parents=True, exist_ok=True)
  rows_top = class_panels(model, images, top, probs, np.asarray(top.targets), scale)
  rows_2nd = class_panels(model, images, runner_up, probs, second, scale)
  summary = []
  for i, record in enumerate(records):
    c = int(top.targets[i])
    name = Path(record["file"]).stem
    print(
      f"{record['file']} (digits {record['classes']}): Predicted class: "
      f"{model.class_names[c]} with probability {probs[i, c]:.2f}"
    )
    rows = [rows_top[i]]
    if len(record["classes"]) == 2:
      rows.append(rows_2nd[i])
      print(
        f"{'':{len(record['file'])}s}  second class: {model.class_names[second[i]]} "
        f"with probability {probs[i, second[i]]:.2f}"
      )
    figure = vis.grid(rows)
    cv2.imwrite(str(out_dir / f"{name}.png"), figure[..., ::-1])
    summary.extend(rows)
  cv2.imwrite(str(out_dir / "summary.png"), vis.grid(summary)[..., ::-1])
  print(
    f"wrote {len(records)} panels and summary.png to {out_dir} "
    f"in {time.perf_counter() - start:.1f} s"
  )
  return 0
