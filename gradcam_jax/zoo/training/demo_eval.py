"""How the demo model is evaluated on held-out digit scenes: classification accuracy
and the Grad-CAM pointing game (used by ``train_demo``, the tests and the
attention-supervision benchmark)."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from gradcam_jax.zoo import demo

__all__ = ["accuracy", "pointing"]


def accuracy(apply_fn, variables, scenes, batch: int = 500) -> dict:
  """Top-1 on one-digit scenes; both digits in the top 2 on two-digit scenes."""
  logits = np.concatenate(
    [
      np.asarray(apply_fn(variables, demo.preprocess(scenes.images[i : i + batch])))
      for i in range(0, len(scenes.images), batch)
    ]
  )
  top2 = np.argsort(-logits, axis=1)[:, :2]
  two = scenes.classes[:, 1] >= 0
  one_ok = top2[~two, 0] == scenes.classes[~two, 0]
  two_ok = np.array([set(t) == set(c) for t, c in zip(top2[two], scenes.classes[two])])
  return {
    "one_digit_top1": float(one_ok.mean()),
    "one_digit_n": int((~two).sum()),
    "two_digit_both_in_top2": float(two_ok.mean()) if two.any() else float("nan"),
    "two_digit_n": int(two.sum()),
  }


def pointing(apply_fn, variables, scenes, layer: str, batch: int = 500) -> float:
  """Grad-CAM pointing game on two-digit scenes: the map of each digit's class
  peaks inside that digit's box."""
  import gradcam_jax as gcj

  explain = gcj.jit(gcj.gradcam(apply_fn, variables, layer=layer))
  two = np.flatnonzero(scenes.classes[:, 1] >= 0)
  hits = []
  for i in range(0, len(two), batch):
    idx = two[i : i + batch]
    cam = np.asarray(
      explain(demo.preprocess(scenes.images[idx]), jnp.asarray(scenes.classes[idx])).cam
    )  # (b, 2, H, W)
    for j, b in enumerate(idx):
      for k in range(2):
        y, x = np.unravel_index(np.argmax(cam[j, k]), cam.shape[-2:])
        x0, y0, x1, y1 = scenes.boxes[b, k]
        hits.append(x0 <= x < x1 and y0 <= y < y1)
  return float(np.mean(hits))
