"""The gallery: every CAM method on the same shipped scenes, with the demo model.

    python docs/make_gallery.py            # writes docs/gallery.png

One row per scene: the input, then each method's map over it (the explained class is
the predicted one), then Guided Grad-CAM with Grad-CAM. Runs offline in about a
minute on two CPU cores.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import jax  # noqa: E402
import numpy as np  # noqa: E402

import gradcam_jax as gcj  # noqa: E402
from gradcam_jax import visualize as vis, zoo  # noqa: E402
from gradcam_jax.zoo.demo import load_samples  # noqa: E402

SCENES = (0, 2, 4)


def gallery() -> np.ndarray:
  model = zoo.load("demo")
  pixels = load_samples()[0][list(SCENES)]
  x = model.preprocess(pixels)
  maps = {}
  for method, record in gcj.ALL_METHODS.items():
    if method == "cam":  # the original CAM needs a pool and one dense layer after the
      continue  # layer; the demo model flattens into two dense layers
    layer = None if record.kind == "model" else model.layer  # FullGrad: every layer
    cam = gcj.jit(gcj.cam(model.apply_fn, model.variables, layer=layer, method=method))
    key = {"key": jax.random.key(0)} if record.keyed else {}
    maps[method] = np.asarray(cam(x, **key).cam)
  ggc = gcj.jit(gcj.guided_gradcam(model.apply_fn, model.variables, layer=model.layer))(x)
  rows = []
  for i, image in enumerate(pixels):
    tiles = [image] + [vis.overlay(image, m[i]) for m in maps.values()]
    tiles.append(vis.deprocess_gradient(np.asarray(ggc.guided_gradcam[i])))
    titles = ["input", *maps, "guided grad-cam"]
    rows.append(vis.panel(tiles, titles, scale=2))
  return vis.grid(rows)


if __name__ == "__main__":
  out = Path(__file__).resolve().parent / "gallery.png"
  vis.save(out, gallery())
  print(f"wrote {out}")
