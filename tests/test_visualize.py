"""Pictures of explanations (gradcam_jax/visualize.py), checked pixel by pixel."""

import numpy as np
import pytest

import gradcam_jax as gcj
from gradcam_jax import visualize as vis


def test_heatmap_runs_from_blue_to_red():
  colours = vis.heatmap(np.array([[0.0, 1.0, 2.0, -1.0]]))  # clipped to [0, 1]
  assert colours.dtype == np.uint8 and colours.shape == (1, 4, 3)
  low, high = colours[0, 0], colours[0, 1]
  assert low[2] > 100 and low[0] == 0          # blue (RGB)
  assert high[0] > 100 and high[2] == 0        # red
  np.testing.assert_array_equal(colours[0, 2], high)
  np.testing.assert_array_equal(colours[0, 3], low)


def test_overlay_blends_and_resizes_the_map():
  image = np.full((6, 8, 3), 200, np.uint8)
  cam = np.zeros((3, 4), np.float32)  # half size: resized to the image
  np.testing.assert_array_equal(vis.overlay(image, cam, alpha=0.0), image)
  mixed = vis.overlay(image, cam, alpha=0.5)
  want = np.round(0.5 * 200 + 0.5 * vis.heatmap(np.zeros((6, 8))).astype(np.float32))
  np.testing.assert_array_equal(mixed, want.astype(np.uint8))
  with pytest.raises(gcj.ImageError, match=r"uint8 RGB image \(H, W, 3\); got float64"):
    vis.overlay(np.zeros((6, 8, 3)), cam)


def test_deprocess_gradient_centres_zero_at_grey():
  assert (vis.deprocess_gradient(np.zeros((4, 4, 3))) == 128).all()
  g = np.zeros((4, 4, 1))
  g[0, 0, 0] = 1.0
  out = vis.deprocess_gradient(g)
  assert out.shape == (4, 4, 3) and out[0, 0, 0] > 128 > out[1, 1, 0]


def test_panel_and_grid_sizes():
  a, b = np.zeros((4, 5, 3), np.uint8), np.zeros((6, 2, 3), np.uint8)
  row = vis.panel([a, b], ["a", "b"], scale=2, gap=3)
  assert row.shape == (18 + 12, 10 + 3 + 4, 3)  # title bar 18 + tallest tile
  stacked = vis.grid([row, vis.panel([a], ["a"])], gap=6)
  assert stacked.shape == (row.shape[0] + 6 + 18 + 4, row.shape[1], 3)
  assert (stacked[row.shape[0]:row.shape[0] + 6] == 255).all()  # the white gap


def test_save_writes_rgb_as_rgb_and_refuses_what_is_not_a_picture(tmp_path):
  import cv2
  import gradcam_jax as gcj
  from gradcam_jax import visualize as vis
  rgb = np.zeros((4, 5, 3), np.uint8)
  rgb[..., 0] = 200  # red
  vis.save(tmp_path / "red.png", rgb)
  back = cv2.imread(str(tmp_path / "red.png"))[..., ::-1]
  np.testing.assert_array_equal(back, rgb)
  with pytest.raises(gcj.ImageError, match="expected a uint8 RGB"):
    vis.save(tmp_path / "x.png", rgb.astype(np.float32))
  with pytest.raises(gcj.ImageError, match="could not write it"):
    vis.save(tmp_path / "no" / "such" / "x.png", rgb)
