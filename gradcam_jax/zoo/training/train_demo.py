"""Train the shipped demo model: ``python -m gradcam_jax.zoo.training.train_demo``.

Reproducible from the seed on a 2-core CPU in a few minutes: fresh digit scenes
every epoch (train digits only), soft-label cross-entropy, Adam with a cosine
schedule. Evaluates on held-out scenes made from the test digits, then writes the
orbax checkpoint, ``meta.json`` (accuracies, settings) and the sample scenes into
the package's assets. Needs ``pip install "gradcam-jax[train]"``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import cv2
import jax
import jax.numpy as jnp
import numpy as np
import optax

from gradcam_jax.zoo import demo
from gradcam_jax.zoo.training.demo_eval import accuracy, pointing
from gradcam_jax.zoo.training.digit_scenes import make_scenes


def train(epochs: int, per_epoch: int, batch: int, seed: int, lr: float):
  model = demo.DemoNet()
  variables = model.init(jax.random.key(seed), jnp.zeros((1, 64, 64, 3)))
  steps = epochs * (per_epoch // batch)
  tx = optax.adamw(
    optax.warmup_cosine_decay_schedule(0.0, lr, steps // 20, steps), weight_decay=1e-4
  )
  params, stats = variables["params"], variables["batch_stats"]
  opt_state = tx.init(params)

  @jax.jit
  def step(params, stats, opt_state, images, labels):
    def loss_fn(p):
      logits, new = model.apply(
        {"params": p, "batch_stats": stats}, images, train=True, mutable=["batch_stats"]
      )
      return optax.softmax_cross_entropy(logits, labels).mean(), new["batch_stats"]

    (loss, stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), stats, opt_state, loss

  for epoch in range(epochs):
    start = time.perf_counter()
    scenes = make_scenes(per_epoch, "train", seed=seed * 1000 + epoch)
    order = np.random.default_rng(epoch).permutation(per_epoch)
    losses = []
    for i in range(0, per_epoch - batch + 1, batch):
      idx = order[i : i + batch]
      params, stats, opt_state, loss = step(
        params,
        stats,
        opt_state,
        demo.preprocess(scenes.images[idx]),
        jnp.asarray(scenes.labels[idx]),
      )
      losses.append(float(loss))
    print(
      f"epoch {epoch + 1}/{epochs}: loss {np.mean(losses):.4f} "
      f"({time.perf_counter() - start:.0f} s)",
      flush=True,
    )
  return model, {"params": params, "batch_stats": stats}


def write_samples(folder: Path, model, variables, n: int = 6, seed: int = 7) -> None:
  """Held-out sample scenes as PNGs plus their labels and boxes."""
  folder.mkdir(parents=True, exist_ok=True)
  for old in folder.glob("*.png"):
    old.unlink()
  scenes = make_scenes(n, "test", two_fraction=2 / 3, seed=seed)
  records = []
  for i in range(n):
    name = f"scene_{i}.png"
    cv2.imwrite(str(folder / name), scenes.images[i][..., ::-1])
    keep = scenes.classes[i] >= 0
    records.append(
      {
        "file": name,
        "classes": scenes.classes[i][keep].tolist(),
        "boxes": scenes.boxes[i][keep].tolist(),
      }
    )
  (folder / "samples.json").write_text(json.dumps(records, indent=1))


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--epochs", type=int, default=12)
  parser.add_argument("--per-epoch", type=int, default=12000)
  parser.add_argument("--batch", type=int, default=100)
  parser.add_argument("--lr", type=float, default=2e-3)
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--test-scenes", type=int, default=2000)
  parser.add_argument("--out", type=Path, default=demo.asset_dir())
  args = parser.parse_args(argv)
  start = time.perf_counter()
  model, variables = train(args.epochs, args.per_epoch, args.batch, args.seed, args.lr)
  train_s = time.perf_counter() - start
  test = make_scenes(args.test_scenes, "test", seed=12345)
  acc = accuracy(jax.jit(model.apply), variables, test)
  acc["two_digit_gradcam_pointing"] = pointing(
    model.apply, variables, test, demo.DEFAULT_LAYER
  )
  print(json.dumps(acc, indent=1))
  args.out.mkdir(parents=True, exist_ok=True)
  demo.save_variables(variables, args.out / "checkpoint")
  write_samples(args.out / "samples", model, variables)
  meta = {
    "accuracy": acc,
    "test_scenes": args.test_scenes,
    "test_seed": 12345,
    "train_seconds": round(train_s, 1),
    "jax": jax.__version__,
    "settings": {k: v for k, v in vars(args).items() if k != "out"},
    "default_layer": demo.DEFAULT_LAYER,
    "class_names": list(demo.CLASS_NAMES),
    "input": "uint8 RGB 64x64 -> float32 / 255",
  }
  (args.out / "meta.json").write_text(json.dumps(meta, indent=1))
  print(f"wrote {args.out} in {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
  main()
