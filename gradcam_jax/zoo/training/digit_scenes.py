"""Digit scenes: the demo model's data set, made offline from scikit-learn's digits.

Each 64x64 RGB scene holds one or two different handwritten digits (scikit-learn's
8x8 digits, upscaled and coloured) on a cluttered, noisy background, with one
ground-truth box per digit. Two-digit scenes carry a soft label that splits the
probability between their digits, so a softmax classifier ranks both on top: our
"cat and dog" picture, where Grad-CAM for class 3 must land on the 3 and for
class 7 on the 7.

The source digits are split into train and test sets before any scene is made
(no digit image appears in both), and everything is deterministic from a seed.
Needs scikit-learn (``pip install "gradcam-jax[train]"``).
"""

from __future__ import annotations

from typing import NamedTuple

import cv2
import numpy as np

from gradcam_jax._errors import ArgumentError

__all__ = ["Scenes", "load_digits", "make_scenes", "SIZE", "NUM_CLASSES"]

SIZE = 64
NUM_CLASSES = 10
TEST_FRACTION = 0.3


class Scenes(NamedTuple):
  """A batch of scenes.

  Attributes:
    images: (N, 64, 64, 3) uint8 RGB.
    labels: (N, 10) float32 soft labels (1 for one digit, 0.5/0.5 for two).
    classes: (N, 2) int32 digit classes, -1 where a scene has one digit.
    boxes: (N, 2, 4) int32 boxes (x0, y0, x1, y1), exclusive ends, -1 if absent.
  """

  images: np.ndarray
  labels: np.ndarray
  classes: np.ndarray
  boxes: np.ndarray


def load_digits(split: str) -> tuple[np.ndarray, np.ndarray]:
  """scikit-learn's digits (8x8, 0..16) of one split: "train" or "test" (30%)."""
  if split not in ("train", "test"):
    raise ArgumentError(f"split: expected 'train' or 'test'; got {split!r}.")
  from sklearn.datasets import load_digits as sk_load_digits

  data = sk_load_digits()
  order = np.random.default_rng(1234).permutation(len(data.target))
  n_test = int(round(TEST_FRACTION * len(order)))
  idx = order[:n_test] if split == "test" else order[n_test:]
  return data.images[idx].astype(np.float32) / 16.0, data.target[idx].astype(np.int32)


def _background(rng: np.random.Generator) -> np.ndarray:
  base = rng.uniform(0.05, 0.45, size=3)
  smooth = rng.normal(0, 0.12, size=(6, 6, 3)).astype(np.float32)
  img = base + cv2.resize(smooth, (SIZE, SIZE), interpolation=cv2.INTER_CUBIC)
  for _ in range(rng.integers(3, 8)):  # clutter: faint strokes and blobs
    layer = np.zeros((SIZE, SIZE), np.float32)
    if rng.random() < 0.6:
      p0, p1 = rng.integers(0, SIZE, 2), rng.integers(0, SIZE, 2)
      cv2.line(
        layer,
        tuple(int(v) for v in p0),
        tuple(int(v) for v in p1),
        1.0,
        int(rng.integers(1, 3)),
      )
    else:
      centre = tuple(int(v) for v in rng.integers(0, SIZE, 2))
      cv2.circle(layer, centre, int(rng.integers(2, 6)), 1.0, -1)
    alpha = rng.uniform(0.15, 0.4)
    colour = rng.uniform(0, 1, size=3)
    img = img * (1 - alpha * layer[..., None]) + colour * alpha * layer[..., None]
  return img


def _place(rng: np.random.Generator, sizes: list[int]) -> list[tuple[int, int]]:
  """Top-left corners for squares of the given sizes, not overlapping (2 px gap)."""
  for _ in range(1000):
    corners = [
      (int(rng.integers(0, SIZE - s + 1)), int(rng.integers(0, SIZE - s + 1)))
      for s in sizes
    ]
    if len(sizes) == 1:
      return corners
    (x0, y0), (x1, y1) = corners
    s0, s1 = sizes
    if x0 + s0 + 2 <= x1 or x1 + s1 + 2 <= x0 or y0 + s0 + 2 <= y1 or y1 + s1 + 2 <= y0:
      return corners
  raise ArgumentError(
    f"digit sizes {sizes}: found no place for them in a {SIZE}x{SIZE} "
    "scene without overlap in 1000 tries."
  )


def _scene(rng, digits, targets, two: bool):
  img = _background(rng)
  n = 2 if two else 1
  while True:
    picks = rng.integers(0, len(targets), n)
    if n == 1 or targets[picks[0]] != targets[picks[1]]:
      break
  sizes = [int(rng.integers(22, 31)) for _ in range(n)]
  classes, boxes = np.full(2, -1, np.int32), np.full((2, 4), -1, np.int32)
  label = np.zeros(NUM_CLASSES, np.float32)
  for k, ((x, y), s, pick) in enumerate(zip(_place(rng, sizes), sizes, picks)):
    ink = cv2.resize(digits[pick], (s, s), interpolation=cv2.INTER_CUBIC).clip(0, 1)
    brightness = img[y : y + s, x : x + s].mean()
    colour = rng.uniform(0.75, 1.0, 3) if brightness < 0.5 else rng.uniform(0, 0.2, 3)
    patch = img[y : y + s, x : x + s]
    img[y : y + s, x : x + s] = patch * (1 - ink[..., None]) + colour * ink[..., None]
    ys, xs = np.nonzero(ink > 0.25)
    boxes[k] = (x + xs.min(), y + ys.min(), x + xs.max() + 1, y + ys.max() + 1)
    classes[k] = targets[pick]
    label[targets[pick]] += 1.0 / n
  img = img + rng.normal(0, 0.03, img.shape)
  return (np.clip(img, 0, 1) * 255).round().astype(np.uint8), label, classes, boxes


def make_scenes(
  n: int, split: str = "train", two_fraction: float = 0.5, seed: int = 0
) -> Scenes:
  """`n` scenes from one split; a fraction `two_fraction` holds two digits.

  Deterministic in (`n`, `split`, `two_fraction`, `seed`).

  Example:
    >>> s = make_scenes(4, "test", two_fraction=1.0, seed=0)  # doctest: +SKIP
    >>> s.images.shape, s.labels.sum(1)                        # doctest: +SKIP
    ((4, 64, 64, 3), array([1., 1., 1., 1.], dtype=float32))
  """
  digits, targets = load_digits(split)
  rng = np.random.default_rng([seed, 0 if split == "train" else 1])
  n_two = int(round(two_fraction * n))
  out = [_scene(rng, digits, targets, i < n_two) for i in range(n)]
  order = rng.permutation(n)
  images, labels, classes, boxes = (np.stack([o[j] for o in out])[order] for j in range(4))
  return Scenes(images, labels, classes, boxes)
