"""gradcam_jax.io: decoding and its conversions, finding files (literal paths, globs,
symlinked folders), the pixel cap, the resize policies."""

import struct
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest

import gradcam_jax as gcj
from gradcam_jax import io
from gradcam_jax.zoo import demo as demo_model
from tests import job_helpers as jh
from tests.conftest import BAD, GOOD, explain


def test_read_image_conversions(folder):
  for name in ("gray.png", "rgba.png", "deep16.png", "a.png"):
    image, error = io.read_image(folder / name)
    assert error is None and image.dtype == np.uint8 and image.shape == (64, 64, 3)
  deep, _ = io.read_image(folder / "deep16.png")
  plain = demo_model.load_samples()[0][4]
  np.testing.assert_array_equal(deep, plain)
  for name, reason in (("truncated.jpg", "truncated"), ("text.png", "not a decodable"),
                       ("empty.png", "empty file")):
    image, error = io.read_image(folder / name)
    assert image is None and reason in error

def test_find_images(folder):
  sources, missing, _ = io.find_images([str(folder), str(folder / "nope*.png"),
                                        str(folder / "missing.png")])
  assert {s.path.name for s in sources} == GOOD | BAD
  assert {s.rel for s in sources} >= {"a.png", "sub/a.webp", "sub/c.bmp"}
  assert len(missing) == 2

# --- case 5: literal names with glob characters -------------------------------------

def test_existing_path_with_brackets_is_taken_literally(tmp_path):
  d = tmp_path / "scans"
  jh.write_png(d / "scan[1].png", jh.scenes(1)[0])
  jh.write_png(d / "scan1.png", jh.scenes(2)[1])
  sources, missing, _ = io.find_images([str(d / "scan[1].png")])
  assert [s.path.name for s in sources] == ["scan[1].png"] and not missing
  sources, _, _ = io.find_images([str(d / "scan*.png")])  # a real glob still globs
  assert {s.path.name for s in sources} == {"scan[1].png", "scan1.png"}
  out = tmp_path / "out"
  assert explain(d / "scan[1].png", "--out", out) == 0
  (record,) = io.read_index(out)
  assert Path(record["path"]).name == "scan[1].png"

# --- case 7: symlinked folders ---------------------------------------------------------

def test_symlinked_folders_are_followed_once(tmp_path, capsys):
  inputs, elsewhere = tmp_path / "in", tmp_path / "elsewhere"
  images = jh.scenes(3)
  jh.write_png(inputs / "a.png", images[0])
  jh.write_png(elsewhere / "b.png", images[1])
  jh.write_png(inputs / "sub" / "c.png", images[2])
  (inputs / "linked").symlink_to(elsewhere, target_is_directory=True)
  (inputs / "sub" / "loop").symlink_to(inputs, target_is_directory=True)
  (inputs / "sub_again").symlink_to(inputs / "sub", target_is_directory=True)
  sources, _, notes = io.find_images([str(inputs)])
  assert sorted(s.rel for s in sources) == ["a.png", "linked/b.png", "sub/c.png"]
  assert notes and all("symlink loop" in n for n in notes)
  out = tmp_path / "out"
  code, _, err = explain(inputs, "--out", out, capsys=capsys)
  assert code == 0 and "symlink loop" in err
  assert len(io.read_index(out)) == 3

# --- case 8: pixel bombs ----------------------------------------------------------------

def _png_header_only(width, height, bit_depth=16, colour_type=6) -> bytes:
  """A PNG whose header claims width x height (16-bit RGBA) and no pixel data."""
  def chunk(kind, data):
    return (struct.pack(">I", len(data)) + kind + data
            + struct.pack(">I", zlib.crc32(kind + data)))
  ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, colour_type, 0, 0, 0)
  return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b"")


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
def test_images_over_the_pixel_cap_are_refused_before_decoding(tmp_path, capsys):
  inputs = tmp_path / "in"
  inputs.mkdir()
  (inputs / "bomb.png").write_bytes(_png_header_only(10000, 10000))
  jh.write_png(inputs / "ok.png", jh.scenes(1)[0])
  image, error = io.read_image(inputs / "bomb.png")
  assert image is None and "100,000,000 pixels" in error and "--max-pixels" in error
  out = tmp_path / "out"
  code, _, err = explain(inputs, "--out", out, capsys=capsys)
  assert code == 3 and "image too large" in err
  status = {Path(r["path"]).name: r["status"] for r in io.read_index(out)}
  assert status == {"bomb.png": "error", "ok.png": "ok"}
  # the cap is the user's: 64x64 = 4096 pixels
  assert io.read_image(inputs / "ok.png", max_pixels=4095)[0] is None
  assert io.read_image(inputs / "ok.png", max_pixels=4096)[0] is not None

def test_resize_policies():
  image = np.zeros((300, 400, 3), np.uint8)
  image[:, 200:] = 255  # right half white
  crop = io.resize_to(image, (224, 224), "crop")
  # shorter side 300 -> 256, width 400 -> 341; centre 224 columns: 58..282 of 341,
  # white from column 170.5 on: 112 columns (+-1) of the crop are white
  assert crop.shape == (224, 224, 3)
  assert abs(int((crop[112, :, 0] > 127).sum()) - 112) <= 1
  pad = io.resize_to(image, (224, 224), "pad")
  # 400 wide -> 224, 300 high -> 168: 28 black rows above and below
  assert pad.shape == (224, 224, 3)
  assert (pad[:28] == 0).all() and (pad[-28:] == 0).all() and pad[28:196, 200].min() == 255
  squash = io.resize_to(image, (224, 224), "squash")
  assert (squash[:, :110] == 0).all() and (squash[:, 114:] == 255).all()
  with pytest.raises(gcj.GradCAMError, match="squash"):
    io.resize_to(image, (224, 224), "stretch")


def test_a_jpeg_with_bytes_after_its_end_is_read(tmp_path):
  """A phone's motion photo appends a video after the JPEG's end-of-image marker;
  it was refused as truncated (the check read the last two bytes)."""
  rgb = (np.random.default_rng(1).uniform(size=(24, 32, 3)) * 255).astype(np.uint8)
  jpeg = cv2.imencode(".jpg", rgb[..., ::-1])[1].tobytes()
  (tmp_path / "plain.jpg").write_bytes(jpeg)
  (tmp_path / "motion.jpg").write_bytes(jpeg + b"\x00\x00\x00\x18ftypmp42" + bytes(500))
  plain, error = io.read_image(tmp_path / "plain.jpg")
  motion, error = io.read_image(tmp_path / "motion.jpg")
  assert error is None and np.array_equal(motion, plain)
  for cut in (len(jpeg) // 2, len(jpeg) - 40):  # still refused when really cut short
    (tmp_path / "cut.jpg").write_bytes(jpeg[:cut])
    image, error = io.read_image(tmp_path / "cut.jpg")
    assert image is None and error.startswith("truncated JPEG"), (cut, error)


def test_no_resize_holds_more_pixels_than_the_cap(monkeypatch):
  """--resize crop scaled the shorter side up with no bound on the longer one: a
  1 x 80,000 strip became 256 x 20,480,000 (15 GB). Every policy now stays within
  --max-pixels after every resize."""
  held = []
  real = io.fit_size
  monkeypatch.setattr(io, "fit_size", lambda im, size: held.append(size) or real(im, size))
  strip = np.full((1, 80000, 3), 200, np.uint8)
  cap = 1_000_000
  for policy in io.RESIZE_POLICIES:
    out = io.resize_to(strip, (224, 224), policy, max_pixels=cap)
    assert out.shape == (224, 224, 3), policy
  assert max(h * w for h, w in held) <= cap, held
  # where the cap allows it, the result is the usual one; where it does not, the
  # crop's region alone gives the same picture (to a grey level, on a smooth image)
  y, x = np.mgrid[0:512, 0:400]
  smooth = np.stack([128 + 100 * np.sin(x / 23), 128 + 100 * np.cos(y / 31),
                     np.full_like(x, 90)], -1).astype(np.uint8)
  usual = io.resize_to(smooth, (224, 224), "crop")
  assert np.array_equal(io.resize_to(smooth, (224, 224), "crop", max_pixels=cap), usual)
  bounded = io.resize_to(smooth, (224, 224), "crop", max_pixels=1000)
  assert np.abs(bounded.astype(int) - usual.astype(int)).max() <= 1


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
def test_the_pixel_cap_is_the_one_cap(tmp_path):
  """A format whose size the header check cannot read was decoded anyway, past the
  cap; and Pillow's own bomb limit refused images --max-pixels allows, telling the
  user to raise --max-pixels, which could not help."""
  hdr = tmp_path / "scan.hdr"  # Radiance HDR: OpenCV decodes it, Pillow cannot size it
  cv2.imwrite(str(hdr), np.ones((4, 5, 3), np.float32))
  image, error = io.read_image(hdr)
  assert image is None and "size cannot be read from its header" in error
  assert io.read_image(hdr, max_pixels=None)[0].shape == (4, 5, 3)  # no cap: decoded
  (tmp_path / "text.png").write_text("not an image")
  assert io.read_image(tmp_path / "text.png")[1].startswith("not a decodable image")
  big = tmp_path / "big.png"  # 200 M pixels: past Pillow's limit (2 x 89.5 M)
  big.write_bytes(_png_header_only(20000, 10000, bit_depth=8, colour_type=0))
  error = io.read_image(big, max_pixels=100_000_000)[1]
  assert "200,000,000 pixels, the limit is 100,000,000" in error
  error = io.read_image(big, max_pixels=300_000_000)[1]  # allowed: decoding decides
  assert "too large" not in error and error == "not a decodable image (JPEG/PNG/BMP/TIFF/WebP expected)"


def _with_orientation(rgb, orientation, fmt):
  from io import BytesIO

  from PIL import Image
  im = Image.fromarray(rgb)
  exif = im.getexif()
  exif[0x0112] = orientation
  buffer = BytesIO()
  im.save(buffer, fmt, exif=exif.tobytes(), **({"quality": 95} if fmt == "JPEG" else {}))
  return buffer.getvalue()


def test_exif_orientation_is_applied_as_viewers_do(tmp_path):
  """A phone's portrait photo (stored on its side, EXIF orientation 6) was explained
  lying on its side: OpenCV's IMREAD_UNCHANGED ignores the tag."""
  from PIL import Image, ImageOps
  rgb = (np.random.default_rng(2).uniform(size=(6, 10, 3)) * 255).astype(np.uint8)
  for orientation in range(1, 9):  # every orientation, as Pillow's exif_transpose
    path = tmp_path / f"o{orientation}.png"
    path.write_bytes(_with_orientation(rgb, orientation, "PNG"))
    want = np.asarray(ImageOps.exif_transpose(Image.open(path)).convert("RGB"))
    image, error, applied = io.read_oriented(path)
    assert error is None and applied == orientation
    assert np.array_equal(image, want), orientation
    stored, _ = io.read_image(path, exif_orientation=False)
    assert np.array_equal(stored, rgb)
  photo = tmp_path / "portrait.jpg"  # a JPEG, as phones write them
  photo.write_bytes(_with_orientation(rgb, 6, "JPEG"))
  image, _ = io.read_image(photo)
  assert image.shape == (10, 6, 3)
  assert np.array_equal(image, np.rot90(io.read_image(photo, exif_orientation=False)[0], -1))


def test_the_job_applies_and_records_the_orientation(tmp_path):
  rgb = (np.random.default_rng(3).uniform(size=(6, 10, 3)) * 255).astype(np.uint8)
  (tmp_path / "in").mkdir()
  (tmp_path / "in" / "portrait.jpg").write_bytes(_with_orientation(rgb, 6, "JPEG"))
  assert explain(tmp_path / "in", "--out", tmp_path / "out", "--no-report") == 0
  (record,) = io.read_index(tmp_path / "out")
  assert record["exif_orientation"] == 6 and record["settings"]["exif_orientation"]
  stored = tmp_path / "stored"
  assert explain(tmp_path / "in", "--out", stored, "--no-report",
                 "--no-exif-orientation") == 0
  (record,) = io.read_index(stored)
  assert record["exif_orientation"] is None
  assert record["settings"]["exif_orientation"] is False
