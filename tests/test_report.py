"""report.html in a real browser (Debian's chromium driven by Playwright): rows,
paging, filters, sorting, the full-size panel and the failure list, over 1,000 rows.

Skipped, with the reason, only where no browser is installed; under CI (``CI`` set)
a missing browser is a failure. ``GRADCAM_JAX_SCREENSHOT=PATH`` saves the screenshot
there (the README's ``docs/report.png`` is made so).
"""

import os
import shutil
from pathlib import Path

import pytest

from gradcam_jax import cli, io
from gradcam_jax.cli import report as _report
from tests import job_helpers as jh

pytestmark = pytest.mark.slow  # the fast loop is pytest -m "not slow"

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="module")
def browser():
  reason = None
  try:
    from playwright.sync_api import sync_playwright
  except ImportError:
    reason = "playwright is not installed (pip install playwright)"
  if CHROMIUM is None:
    reason = "no chromium on PATH (apt-get install chromium)"
  if reason:
    if os.environ.get("CI"):
      pytest.fail(f"the report test must run in CI: {reason}")
    pytest.skip(reason)
  with sync_playwright() as p:
    b = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
    yield b
    b.close()


@pytest.fixture(scope="module")
def job(tmp_path_factory):
  """A real job over 12 images and 2 bad files, then its index grown to 1,000 rows
  (copies of the real records with other paths, classes and probabilities)."""
  root = tmp_path_factory.mktemp("report")
  for i, image in enumerate(jh.scenes(12)):
    jh.write_png(root / "in" / f"scene_{i:02d}.png", image)
  (root / "in" / "broken.png").write_text("not an image")
  (root / "in" / "empty.jpg").write_bytes(b"")
  out = root / "out"
  assert cli.main(["explain", str(root / "in"), "--out", str(out), "--quiet"]) == 3
  real = io.read_index(out)
  ok = [r for r in real if r["status"] == "ok"]
  failed = [r for r in real if r["status"] == "error"]
  assert (len(ok), len(failed)) == (12, 2)
  records = list(real)
  for k in range(1000 - len(real)):
    r = dict(ok[k % len(ok)])
    c = k % 10
    r.update(path=f"/data/batch_{k // 100}/img_{k:04d}.png", predicted=c,
             predicted_name=str(c), target=c, target_name=str(c),
             probability=round(0.1 + 0.9 * ((k * 37) % 1000) / 1000, 4))
    r["target_probability"] = r["probability"]
    records.append(r)
  _report.write_report(out, records)
  return out, records


def test_report_rows_filters_panel_and_failures(browser, job, tmp_path):
  out, records = job
  page = browser.new_page(viewport={"width": 1300, "height": 900})
  errors = []
  page.on("pageerror", lambda e: errors.append(str(e)))
  page.goto((out / "report.html").as_uri())
  assert page.inner_text("#count") == "1000 of 1000 images"
  assert page.locator("#rows tr").count() == 100  # paged
  assert page.inner_text("#summary") == "998 explained, 2 failed."

  # the failure list names each bad file with its reason
  failures = page.locator("#failures li").all_inner_texts()
  assert len(failures) == 2
  assert any("broken.png: not a decodable image" in f for f in failures)
  assert any("empty.jpg: empty file" in f for f in failures)

  # filter by class, then by status
  page.select_option("#cls", "3")
  want = sum(r.get("predicted_name") == "3" or r.get("target_name") == "3"
             for r in records)
  assert page.inner_text("#count") == f"{want} of 1000 images"
  names = page.locator("#rows tr td:nth-child(5)").all_inner_texts()
  assert names and set(names) == {"3"}
  page.select_option("#cls", "")
  page.select_option("#status", "error")
  assert page.inner_text("#count") == "2 of 1000 images"
  page.select_option("#status", "")

  # sort by probability, high first
  page.select_option("#sort", "-probability")
  first = float(page.inner_text("#rows tr:first-child td:nth-child(6)"))
  assert first == pytest.approx(max(r.get("probability") or 0 for r in records), abs=1e-3)

  # paging
  page.click("#next")
  assert page.inner_text("#page").strip() == "page 2/10"
  page.click("#prev")

  # the full-size panel, with the pictures loaded from the output folder
  page.select_option("#sort", "path")
  page.fill("#q", "scene_03")
  assert page.locator("#rows tr").count() == 1
  page.click("#rows tr:first-child")
  assert page.locator("#panel").get_attribute("class") == "open"
  page.wait_for_function(
      "[...document.querySelectorAll('#panel img')].every(i => i.complete)")
  widths = page.eval_on_selector_all("#panel img", "els => els.map(e => e.naturalWidth)")
  assert widths == [64, 64, 64]
  page.click("#panel")
  page.fill("#q", "")
  thumbs = page.eval_on_selector_all(
      "#rows img", "els => els.filter(e => e.complete && e.naturalWidth > 0).length")
  assert thumbs > 0 and not errors, errors

  shot = Path(os.environ.get("GRADCAM_JAX_SCREENSHOT", tmp_path / "report.png"))
  page.screenshot(path=str(shot))
  assert shot.stat().st_size > 10_000
  page.close()


def test_report_escapes_file_names(browser, tmp_path):
  """A file name with markup stays text: nothing in it runs."""
  name = "</script><img src=x onerror=window.pwned=1>.png"
  out = tmp_path / "out"
  out.mkdir()
  _report.write_report(out, [{"path": "/d/" + name, "status": "error",
                              "error": "<b>bad</b>"}])
  page = browser.new_page()
  page.goto((out / "report.html").as_uri())
  assert page.inner_text("#count") == "1 of 1 images"
  # "/" in the name makes "</" a folder: the row shows the path below the common one
  assert name.split("/", 1)[1] in page.inner_text("#rows")
  assert "inputs under /d/</ " in page.inner_text("#made")
  assert page.evaluate("window.pwned") is None
  page.close()


def test_the_report_says_what_made_it(browser, job, tmp_path):
  """Issue 24 item 4: a header with the model, weights, layer, method, target rule,
  resize and version (random weights flagged); paths relative to the inputs'
  common folder; captions on the full-size panel; "none" failures not in red."""
  out, records = job
  page = browser.new_page()
  page.goto((out / "report.html").as_uri())
  made = page.inner_text("#made")
  s = records[0]["settings"]
  for words in (f"model {s['model']}", f"weights {s['weights']}", f"layer {s['layer']}",
                f"method {s['method']}", "target the predicted class",
                f"resize {s['resize']}", f"gradcam-jax {s['version']}", "written 20"):
    assert words in made, (words, made)
  assert "random weights" not in made
  page.fill("#q", "img_0000")  # /data/... and the real job's /tmp/...: the root is /
  assert page.inner_text("#rows tr:first-child td:nth-child(4)") == "data/batch_0/img_0000.png"
  assert "inputs under / ·" in made
  page.fill("#q", "scene_03")
  page.click("#rows tr:first-child")
  assert page.locator("#panel figcaption").all_inner_texts() == [
      "input", "Grad-CAM over the input", "Guided Grad-CAM"]
  page.close()
  # random weights, one root, no failure
  ok = dict(records[-1], settings={**s, "weights": "random (seed 0) sha256:0123"})
  rows = [dict(ok, path=f"/photos/trip/{'long_' * 30}{i}.png") for i in range(3)]
  small = tmp_path / "small"
  small.mkdir()
  _report.write_report(small, rows)
  page = browser.new_page(viewport={"width": 900, "height": 700})
  page.goto((small / "report.html").as_uri())
  assert "random weights: the class names and probabilities mean nothing" in \
      page.inner_text("#made")
  assert "inputs under /photos/trip/" in page.inner_text("#made")
  none = page.locator("#failures li")
  assert none.all_inner_texts() == ["none"]
  assert none.evaluate("e => getComputedStyle(e).color") == "rgb(34, 34, 34)"
  width = page.evaluate("document.documentElement.scrollWidth")
  assert width <= 900, f"a long name widened the page to {width} px"  # wrapped
  page.close()
