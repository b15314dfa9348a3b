"""The documentation site (docs/): built with Sphinx in strict mode (a warning, a
broken cross-reference or a missing page fails), every public name documented, and
the built site opened in headless Chromium, where the search box finds
``guided_gradcam``."""

import functools
import http.server
import os
import shutil
import threading
import subprocess
import sys
from pathlib import Path

import pytest

import gradcam_jax as gcj

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="module")
def site(tmp_path_factory):
  pytest.importorskip("sphinx")
  pytest.importorskip("myst_nb")
  out = tmp_path_factory.mktemp("docs")
  said = subprocess.run(
      [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-b", "html",
       "-d", str(out / "doctrees"), str(ROOT / "docs"), str(out / "html")],
      capture_output=True, text=True, timeout=600, env=dict(os.environ, KERAS_BACKEND="jax"))
  assert said.returncode == 0, said.stdout[-3000:] + said.stderr[-5000:]
  return out / "html"


def test_every_public_name_has_a_page(site):
  for name in gcj.__all__:
    page = site / "generated" / f"gradcam_jax.{name}.html"
    documented = page.exists() or f'id="gradcam_jax.{name}"' in (site / "api.html").read_text()
    assert documented, f"gcj.{name} is not in the API reference (docs/api.md)"
  for guide in ("explainers", "methods", "cli", "adapters", "errors", "performance"):
    assert (site / "guide" / f"{guide}.html").exists(), guide
  for nb in sorted((ROOT / "notebooks").glob("*.ipynb")):
    assert (site / "notebooks" / f"{nb.stem}.html").exists(), nb.name


def test_the_site_opens_and_its_search_finds_guided_gradcam(site):
  try:
    from playwright.sync_api import sync_playwright
  except ImportError:
    pytest.skip("playwright is not installed")
  if CHROMIUM is None:
    if os.environ.get("CI"):
      pytest.fail("the docs test must run in CI: no chromium on PATH")
    pytest.skip("no chromium on PATH (apt-get install chromium)")
  # served as a docs host serves it (the search fetches result summaries, which
  # file:// pages may not)
  handler = functools.partial(_Quiet, directory=str(site))
  server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
  threading.Thread(target=server.serve_forever, daemon=True).start()
  base = f"http://127.0.0.1:{server.server_address[1]}"
  with sync_playwright() as p:
    browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
    page = browser.new_page()
    errors = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(f"{base}/index.html")
    assert "gradcam-jax" in page.title()
    assert page.locator("a:has-text('The explainers')").count() > 0
    page.goto(f"{base}/generated/gradcam_jax.guided_gradcam.html")
    assert "guided_gradcam" in page.inner_text("main")
    page.locator("button.search-button, .search-button__button").first.click()  # the box
    box = page.locator("input[name='q']:visible").first
    box.fill("guided_gradcam")
    box.press("Enter")
    page.wait_for_selector("#search-results li", timeout=30_000)
    hits = page.locator("#search-results li").all_inner_texts()
    assert any("guided_gradcam" in h for h in hits), hits
    assert not errors, errors
    browser.close()
  server.shutdown()
  server.server_close()


class _Quiet(http.server.SimpleHTTPRequestHandler):
  def log_message(self, *args):
    pass
