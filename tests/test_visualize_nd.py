"""Pictures of signals, volumes and clips (gradcam_jax/visualize.py), checked pixel by
pixel against the 2-D pieces they are made of."""

import numpy as np
import pytest
from PIL import Image

import gradcam_jax as gcj
from gradcam_jax import visualize as vis


def test_signal_overlay_draws_the_signal_over_its_heat_band():
  ramp = np.linspace(0.0, 1.0, 50)
  cam = np.zeros(50)
  cam[40:] = 1.0
  pic = vis.signal_overlay(np.stack([ramp, 1 - ramp], 1), cam, width=100, height=60, band=10)
  assert pic.shape == (70, 100, 3) and pic.dtype == np.uint8
  band = pic[60:]
  np.testing.assert_array_equal(band[0, -1], vis.heatmap(np.ones((1, 1)))[0, 0])  # hot end
  np.testing.assert_array_equal(band[0, 0], vis.heatmap(np.zeros((1, 1)))[0, 0])
  assert (band == band[:1]).all()  # one colour per column
  plot = pic[:60].min(-1)
  # the ramp runs from the bottom-left (row 56) to the top-right (row 4); 1 - ramp back
  assert plot[56, 0] < 200 and plot[4, 99] < 200 and plot[4, 0] < 200  # on white 255
  assert plot[30, 0] == 255  # nothing drawn between them at the left edge
  with pytest.raises(gcj.ImageError, match=r"signal \(L,\) or \(L, C\) and a map \(L,\)"):
    vis.signal_overlay(ramp, np.zeros((5, 5)))


def _volume():
  rng = np.random.default_rng(0)
  volume = rng.normal(size=(5, 6, 7)).astype(np.float32)
  cam = rng.uniform(size=(5, 6, 7)).astype(np.float32) * 0.5
  cam[2, 3, 4] = 1.0
  return volume, cam


def test_volume_view_slices_through_the_maps_maximum():
  volume, cam = _volume()
  pic = vis.volume_view(volume, cam, alpha=0.4)
  grey = vis._grey(volume, None)
  tiles = [vis.overlay(vis._rgb(grey[2]), cam[2], 0.4),
           vis.overlay(vis._rgb(grey[:, 3]), cam[:, 3], 0.4),
           vis.overlay(vis._rgb(grey[:, :, 4]), cam[:, :, 4], 0.4)]
  np.testing.assert_array_equal(pic, vis.panel(tiles, ["axial d=2", "coronal h=3",
                                                       "sagittal w=4"]))
  # channels last volumes are averaged for display; a CT window clips the grey levels
  two = vis.volume_view(np.stack([volume, volume], -1), cam, alpha=0.4)
  np.testing.assert_array_equal(two, pic)
  windowed = vis._grey(volume, (0.0, 1.0))
  assert windowed[volume <= 0].max() == 0 and windowed[volume >= 1].min() == 255
  with pytest.raises(gcj.ImageError, match=r"a map \(D, H, W\) of its size"):
    vis.volume_view(volume, cam[:4])


def test_volume_mosaic_shows_evenly_spaced_axial_slices():
  volume, cam = _volume()
  pic = vis.volume_mosaic(volume, cam, count=3, columns=2)
  grey = vis._grey(volume, None)
  tiles = [vis.overlay(vis._rgb(grey[i]), cam[i]) for i in (0, 2, 4)]
  want = vis.grid([vis.panel(tiles[:2], ["d=0", "d=2"]), vis.panel(tiles[2:], ["d=4"])])
  np.testing.assert_array_equal(pic, want)


def test_clip_frames_and_an_animation(tmp_path):
  rng = np.random.default_rng(1)
  clip = rng.integers(0, 255, (4, 8, 10, 3), dtype=np.uint8)
  cam = rng.uniform(size=(4, 8, 10))
  frames = vis.clip_frames(clip, cam, every=2)
  assert len(frames) == 2
  np.testing.assert_array_equal(frames[1], vis.overlay(clip[2], cam[2]))
  vis.save_animation(tmp_path / "clip.gif", vis.clip_frames(clip, cam), fps=5)
  with Image.open(tmp_path / "clip.gif") as im:
    assert im.n_frames == 4 and im.size == (10, 8)
  with pytest.raises(gcj.ImageError, match=r"maps \(T, H, W\) of as many frames"):
    vis.clip_frames(clip, cam[:3])
  with pytest.raises(gcj.ImageError, match="at least one frame"):
    vis.save_animation(tmp_path / "none.gif", [])
