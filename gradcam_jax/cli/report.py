"""``report.html``: one self-contained page over a batch job's results.

No server, no network: the records are embedded as JSON, the pictures are the
job's own output files, referenced by relative paths (open the page from the file
system, or serve the folder). The page shows one row per image (input, overlay and
Guided Grad-CAM thumbnails, predicted and explained class with probabilities),
filters by class, status and path, sorts by probability, pages 100 rows at a time
(thumbnails load lazily), opens the full-size panel on a click, and lists the
failures with their reasons.
"""

from __future__ import annotations

import html
import json
import os
import urllib.parse
from pathlib import Path

from gradcam_jax.cli.atomic import work_dir, write_atomically
from gradcam_jax.cli.journal import read_index
from gradcam_jax.cli.outputs import readable

__all__ = ["write_report"]

_FIELDS = (
  "path",
  "status",
  "error",
  "predicted_name",
  "probability",
  "target_name",
  "target_probability",
  "outputs",
)

_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<title>gradcam-jax report: __TITLE__</title>
<style>
body{font:14px system-ui,sans-serif;margin:1em;color:#222}
header{display:flex;gap:1em;align-items:center;flex-wrap:wrap;margin-bottom:.6em}
table{border-collapse:collapse;width:100%}
td,th{border-bottom:1px solid #ddd;padding:3px 6px;text-align:left;vertical-align:middle}
th{background:#f4f4f4;position:sticky;top:0}
tr.row{cursor:pointer} tr.row:hover{background:#f0f6ff}
tr.error td{background:#fff0f0}
img.thumb{width:72px;height:72px;object-fit:contain;image-rendering:pixelated;background:#eee}
#panel{position:fixed;inset:0;background:rgba(0,0,0,.75);display:none;align-items:center;justify-content:center}
#panel.open{display:flex}
#panel div{background:#fff;padding:1em;max-width:95vw;max-height:95vh;overflow:auto}
#panel img{height:min(40vw,60vh);image-rendering:pixelated;margin:.2em}
.num{text-align:right;font-variant-numeric:tabular-nums}
#failures li{color:#a00}
</style></head><body>
<h1>gradcam-jax report</h1>
<p id="summary"></p>
<header>
<label>class <select id="cls"><option value="">all</option></select></label>
<label>status <select id="status"><option value="">all</option><option>ok</option><option>error</option></select></label>
<label>sort <select id="sort"><option value="path">path</option><option value="-probability">probability, high first</option><option value="probability">probability, low first</option></select></label>
<label>path contains <input id="q" size="24"></label>
<span id="count"></span>
<button id="prev">&larr;</button><span id="page"></span><button id="next">&rarr;</button>
</header>
<table><thead><tr><th>input</th><th>overlay</th><th>Guided Grad-CAM</th><th>path</th>
<th>predicted</th><th class="num">p</th><th>explained</th><th class="num">p</th><th>status</th></tr></thead>
<tbody id="rows"></tbody></table>
<h2>Failures</h2><ul id="failures"></ul>
<div id="panel"><div id="panelbody"></div></div>
<script type="application/json" id="data">__DATA__</script>
<script>
"use strict";
const PER_PAGE = 100;
const records = JSON.parse(document.getElementById("data").textContent);
const $ = id => document.getElementById(id);
const url = rel => rel;  // percent-encoded by the writer, from the file name's bytes
let page = 0;
function el(tag, text, cls) {
  const e = document.createElement(tag);
  if (text !== undefined && text !== null) e.textContent = text;
  if (cls) e.className = cls;
  return e;
}
function thumb(r, kind) {
  const td = el("td");
  const rel = r.outputs && r.outputs[kind];
  if (rel) { const i = el("img", null, "thumb"); i.loading = "lazy"; i.alt = kind; i.src = url(rel); td.appendChild(i); }
  return td;
}
function fmt(p) { return p === undefined || p === null ? "" : p.toFixed(3); }
function visible() {
  const cls = $("cls").value, st = $("status").value, q = $("q").value, key = $("sort").value;
  let out = records.filter(r => (!cls || r.predicted_name === cls || r.target_name === cls)
                               && (!st || r.status === st) && (!q || r.path.includes(q)));
  if (key !== "path") {
    const sign = key[0] === "-" ? -1 : 1, k = key.replace("-", "");
    out = out.slice().sort((a, b) => sign * ((a[k] ?? -1) - (b[k] ?? -1)));
  }
  return out;
}
function render() {
  const rows = visible();
  const pages = Math.max(1, Math.ceil(rows.length / PER_PAGE));
  page = Math.min(page, pages - 1);
  $("count").textContent = rows.length + " of " + records.length + " images";
  $("page").textContent = " page " + (page + 1) + "/" + pages + " ";
  const body = $("rows");
  body.replaceChildren();
  for (const r of rows.slice(page * PER_PAGE, (page + 1) * PER_PAGE)) {
    const tr = el("tr", null, "row " + r.status);
    tr.dataset.path = r.path;
    tr.append(thumb(r, "input"), thumb(r, "overlay"), thumb(r, "guided_gradcam"),
              el("td", r.path), el("td", r.predicted_name), el("td", fmt(r.probability), "num"),
              el("td", r.target_name), el("td", fmt(r.target_probability), "num"),
              el("td", r.status === "ok" ? "ok" : "error: " + r.error));
    tr.onclick = () => open_(r);
    body.appendChild(tr);
  }
}
function open_(r) {
  const b = $("panelbody");
  b.replaceChildren(el("h3", r.path));
  if (r.status !== "ok") b.appendChild(el("p", "error: " + r.error));
  else b.appendChild(el("p", "predicted " + r.predicted_name + " (" + fmt(r.probability) +
      "), explained " + r.target_name + " (" + fmt(r.target_probability) + ")"));
  for (const kind of ["input", "overlay", "guided_gradcam"]) {
    if (r.outputs && r.outputs[kind]) { const i = el("img"); i.alt = kind; i.src = url(r.outputs[kind]); b.appendChild(i); }
  }
  $("panel").classList.add("open");
}
$("panel").onclick = () => $("panel").classList.remove("open");
for (const id of ["cls", "status", "sort"]) $(id).onchange = () => { page = 0; render(); };
$("q").oninput = () => { page = 0; render(); };
$("prev").onclick = () => { page = Math.max(0, page - 1); render(); };
$("next").onclick = () => { page += 1; render(); };
const classes = [...new Set(records.flatMap(r => [r.predicted_name, r.target_name]).filter(Boolean))].sort();
for (const c of classes) $("cls").appendChild(el("option", c));
const failed = records.filter(r => r.status !== "ok");
for (const r of failed) $("failures").appendChild(el("li", r.path + ": " + r.error));
if (!failed.length) $("failures").appendChild(el("li", "none"));
$("summary").textContent = (records.length - failed.length) + " explained, " + failed.length + " failed.";
render();
</script></body></html>
"""


def _row(record: dict) -> dict:
  """What the page shows of a record: paths readable whatever bytes name the file,
  and each output as a URL relative to the page, percent-encoded from the name's
  bytes (a name that is not UTF-8 has no characters to encode)."""
  row = {k: record.get(k) for k in _FIELDS}
  row["path"] = readable(row["path"] or "")
  row["outputs"] = {
    kind: urllib.parse.quote(os.fsencode(rel))
    for kind, rel in (row["outputs"] or {}).items()
  }
  return row


def write_report(out_dir: Path, records=None) -> Path:
  """Write ``out_dir/report.html`` (atomically) from the job's finished records
  (`records`, as :func:`read_index` gives them; read from the index when None)."""
  out_dir = Path(out_dir)
  records = read_index(out_dir) if records is None else records
  rows = [_row(r) for r in records]
  data = json.dumps(rows).replace("<", "\\u003c")  # no "</script>" inside the data
  title = html.escape(readable(str(out_dir)))
  page = _PAGE.replace("__TITLE__", title).replace("__DATA__", data)
  target = out_dir / "report.html"
  write_atomically({target: page.encode("utf-8")}, work_dir(out_dir))
  return target
