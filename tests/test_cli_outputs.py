"""Output names and encodings (gradcam_jax/cli/outputs.py)."""

import cv2
import numpy as np

from gradcam_jax.cli import outputs


def test_names_mirror_the_inputs_and_step_aside_for_others(tmp_path):
  owners = {}
  assert outputs.assign_name("sub/cat.jpg", "/in/sub/cat.jpg", tmp_path, owners) == \
      "sub/cat.jpg"
  owners["sub/cat.jpg"] = "/in/sub/cat.jpg"
  # the owner gets its name back; another input gets the hashed one
  assert outputs.assign_name("sub/cat.jpg", "/in/sub/cat.jpg", tmp_path, owners) == \
      "sub/cat.jpg"
  other = outputs.assign_name("sub/cat.jpg", "/elsewhere/cat.jpg", tmp_path, owners)
  assert other.startswith("sub/cat~") and other.endswith(".jpg")
  # a file gradcam-jax did not write keeps its name
  (tmp_path / "dog.png.overlay.png").write_bytes(b"theirs")
  assert outputs.assign_name("dog.png", "/in/dog.png", tmp_path, {}) != "dog.png"


def test_over_long_names_are_shortened_to_fit(tmp_path):
  name = outputs.assign_name("d/" + "x" * 300 + ".png", "/in/long", tmp_path, {})
  assert all(len(p.encode()) + 24 <= outputs.NAME_MAX for p in name.split("/"))
  assert name.endswith(".png")


def test_png_round_trips_rgb():
  rgb = np.zeros((2, 3, 3), np.uint8)
  rgb[0, 0] = (255, 0, 0)
  back = cv2.imdecode(np.frombuffer(outputs.encode_png(rgb), np.uint8),
                      cv2.IMREAD_COLOR)[..., ::-1]
  np.testing.assert_array_equal(back, rgb)
