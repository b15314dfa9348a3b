"""report.html with 10,000 rows in headless Chromium: how long until the page is
usable, and how long a filter, a sort and a page flip take.

The records are copies of a real job's records (12 images explained with the demo
model, their thumbnails on disk) with other paths, classes and probabilities. Times
come from the page's own clock (``performance.now()``), medians over `--reps` loads.

    python benchmarks/report_browser.py               # 10,000 rows
    python benchmarks/report_browser.py --rows 1000 100000
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks._common import versions, write_json  # noqa: E402

from gradcam_jax import cli, io  # noqa: E402
from gradcam_jax.cli import report as _report  # noqa: E402
from tests import job_helpers as jh  # noqa: E402


def grown(real: list[dict], rows: int) -> list[dict]:
  out = list(real)
  ok = [r for r in real if r["status"] == "ok"]
  for k in range(rows - len(real)):
    r = dict(ok[k % len(ok)])
    c = k % 10
    r.update(path=f"/data/batch_{k // 1000}/img_{k:06d}.png", predicted_name=str(c),
             target_name=str(c), probability=((k * 37) % 1000) / 1000)
    out.append(r)
  return out


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--rows", type=int, nargs="+", default=[10_000])
  parser.add_argument("--reps", type=int, default=5)
  parser.add_argument("--json", default="benchmarks/results/report_browser.json")
  args = parser.parse_args()
  from playwright.sync_api import sync_playwright
  root = Path(tempfile.mkdtemp(prefix="report_bench_"))
  results = []
  try:
    for i, image in enumerate(jh.scenes(12)):
      jh.write_png(root / "in" / f"scene_{i:02d}.png", image)
    out = root / "out"
    assert cli.main(["explain", str(root / "in"), "--out", str(out), "--quiet"]) == 0
    real = io.read_index(out)
    with sync_playwright() as p:
      browser = p.chromium.launch(executable_path=shutil.which("chromium"),
                                  args=["--no-sandbox"])
      for rows in args.rows:
        page_file = _report.write_report(out, grown(real, rows))
        size = page_file.stat().st_size
        loads, filters, sorts, flips = [], [], [], []
        for _ in range(args.reps):
          page = browser.new_page()
          page.goto(page_file.as_uri())
          page.wait_for_selector("#rows tr")
          loads.append(page.evaluate("performance.now()"))
          for sink, action in ((filters, "document.getElementById('cls').value='3';"
                                "document.getElementById('cls').onchange()"),
                               (sorts, "document.getElementById('sort').value="
                                "'-probability';document.getElementById('sort').onchange()"),
                               (flips, "document.getElementById('next').onclick()")):
            sink.append(page.evaluate(f"() => {{ const t = performance.now(); {action}; "
                                      "return performance.now() - t; }"))
          page.close()
        row = {"rows": rows, "html_mb": size / 1e6,
               "load_ms": statistics.median(loads),
               "filter_ms": statistics.median(filters),
               "sort_ms": statistics.median(sorts), "page_flip_ms": statistics.median(flips)}
        results.append(row)
        print(f"{rows:7d} rows  {row['html_mb']:5.1f} MB  usable after {row['load_ms']:6.0f} ms"
              f"  filter {row['filter_ms']:5.1f} ms  sort {row['sort_ms']:5.1f} ms"
              f"  page flip {row['page_flip_ms']:5.1f} ms", flush=True)
      browser.close()
  finally:
    shutil.rmtree(root, ignore_errors=True)
  write_json(args.json, {"versions": versions(), "reps": args.reps, "rows": results})


if __name__ == "__main__":
  main()
