"""``report.html``: one self-contained page over a batch job's results.

No server, no network: the records are embedded as compact JSON (about 55 bytes
a row: 200,000 inputs make an 11 MB page), the pictures are the
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
import time
import urllib.parse
from pathlib import Path

from gradcam_jax.cli.atomic import work_dir, write_atomically
from gradcam_jax.cli.journal import State, iter_index
from gradcam_jax.cli.outputs import KINDS, SUFFIXES, readable

__all__ = ["write_report"]


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
#failures li.fail{color:#a00}
td.path{overflow-wrap:anywhere;max-width:28em}
#made{margin:.3em 0 .8em;color:#333} #made p{margin:.2em 0}
.warn{background:#fff3cd;border:1px solid #e0b000;padding:.3em .6em;display:inline-block}
figure{display:inline-block;margin:.2em;text-align:center} figcaption{font-size:13px;color:#444}
</style></head><body>
<h1>gradcam-jax report</h1>
<div id="made"></div>
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
// the records in compact form (see report.py): rebuilt here, one object a row
const D = JSON.parse(document.getElementById("data").textContent);
const quote = s => encodeURIComponent(s).replace(/%2F/g, "/")
  .replace(/[!'()*]/g, c => "%" + c.charCodeAt(0).toString(16).toUpperCase());
function record(row) {
  const [rest, ok, p, pp, t, tp, mask, u, error] = row;
  const path = D.root + rest;
  let outputs = {};
  if (u !== null && typeof u === "object") outputs = u;
  else if (u !== null) {
    const base = typeof u === "number" ? quote(path.slice(path.length - u)) : u;
    D.kinds.forEach((k, i) => { if (mask & (1 << i)) outputs[k] = base + D.suffixes[i]; });
  }
  return {path, shown: rest, status: ok ? "ok" : "error", error, outputs,
          predicted_name: p < 0 ? null : D.classes[p], probability: p < 0 ? null : pp,
          target_name: t < 0 ? null : D.classes[t], target_probability: t < 0 ? null : tp};
}
const records = D.rows.map(record);
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
              el("td", r.shown, "path"), el("td", r.predicted_name), el("td", fmt(r.probability), "num"),
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
  const captions = {input: "input", overlay: "Grad-CAM over the input",
                    guided_gradcam: "Guided Grad-CAM"};
  for (const kind of ["input", "overlay", "guided_gradcam"]) {
    if (r.outputs && r.outputs[kind]) {
      const f = el("figure"), i = el("img"); i.alt = kind; i.src = url(r.outputs[kind]);
      f.append(i, el("figcaption", captions[kind])); b.appendChild(f);
    }
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
for (const r of failed) $("failures").appendChild(el("li", r.path + ": " + r.error, "fail"));
if (!failed.length) $("failures").appendChild(el("li", "none"));
// what made the results: one line per distinct setting (a folder rerun with another
// layer holds two), random weights flagged
for (const run of D.runs) {
  const s = run.settings;
  const target = s.target === null || s.target === undefined ? "the predicted class"
      : "class " + s.target + (run.target_name ? " (" + run.target_name + ")" : "");
  const p = el("p", run.count + " image(s): model " + s.model + " · weights " + s.weights +
      " · layer " + s.layer + " · method " + s.method + " · target " + target +
      " · resize " + s.resize + " · EXIF orientation " + (s.exif_orientation === false ? "ignored" : "applied") +
      " · gradcam-jax " + s.version);
  $("made").appendChild(p);
  if (String(s.weights).startsWith("random"))
    $("made").appendChild(el("p", "random weights: the class names and probabilities mean nothing (a timing run)", "warn"));
}
$("made").appendChild(el("p", "inputs under " + (D.root || "(various folders)") + " · written " + D.written));
$("summary").textContent = (records.length - failed.length) + " explained, " + failed.length + " failed.";
render();
</script></body></html>
"""


class _Compact:
  """The records as the page embeds them: one short list a row, class names once
  in a table, the inputs' common folder once, each output's URL rebuilt by the page
  from the path and a bit mask of kinds (or given whole where it cannot be). About
  55 bytes a row instead of about 400."""

  def __init__(self):
    self.classes: dict = {}
    self.rows: list = []
    self.runs: dict = {}  # settings as JSON -> {"settings", "count", "target_name"}

  def _class(self, name) -> int:
    return -1 if name is None else self.classes.setdefault(name, len(self.classes))

  def add(self, record: dict) -> None:
    path = readable(record.get("path") or "")
    outputs = record.get("outputs") or {}
    name = record.get("name")
    mask = sum(1 << i for i, k in enumerate(KINDS) if k in outputs)
    if not outputs:
      where = None
    elif name is None or any(outputs.get(k) != name + SUFFIXES[k] for k in outputs):
      where = {k: urllib.parse.quote(os.fsencode(rel)) for k, rel in outputs.items()}
    else:
      encoded = urllib.parse.quote(os.fsencode(name))
      plain = path.endswith(name) and encoded == urllib.parse.quote(name)
      where = len(name) if plain else encoded
    settings = record.get("settings")
    if settings is not None:
      run = self.runs.setdefault(
        json.dumps(settings, sort_keys=True),
        {"settings": settings, "count": 0, "target_name": None},
      )
      run["count"] += 1
      if settings.get("target") is not None and record.get("target_name"):
        run["target_name"] = record["target_name"]
    prob = record.get("probability")
    tprob = record.get("target_probability")
    self.rows.append(
      [
        path,
        int(record.get("status") == "ok"),
        self._class(record.get("predicted_name")),
        None if prob is None else round(prob, 4),
        self._class(record.get("target_name")),
        None if tprob is None else round(tprob, 4),
        mask,
        where,
        record.get("error"),
      ]
    )

  def json(self) -> str:
    paths = [r[0] for r in self.rows]
    root = os.path.commonprefix([min(paths), max(paths)]) if paths else ""
    root = root[: root.rfind("/") + 1]
    for r in self.rows:
      r[0] = r[0][len(root) :]
    data = {
      "root": root,
      "classes": list(self.classes),
      "kinds": list(KINDS),
      "suffixes": [SUFFIXES[k] for k in KINDS],
      "rows": self.rows,
      "runs": sorted(self.runs.values(), key=lambda r: -r["count"]),
      "written": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }
    # no "</script>" inside the data
    return json.dumps(data, separators=(",", ":")).replace("<", "\\u003c")


def write_report(out_dir: Path, records=None) -> Path:
  """Write ``out_dir/report.html`` (atomically) from the job's finished records:
  the journal's State (read one record at a time), or the records as
  :func:`read_index` gives them; the journal is read when None."""
  out_dir = Path(out_dir)
  if records is None or isinstance(records, State):
    records = iter_index(out_dir, records)
  compact = _Compact()
  for r in records:
    compact.add(r)
  title = html.escape(readable(str(out_dir)))
  page = _PAGE.replace("__TITLE__", title).replace("__DATA__", compact.json())
  target = out_dir / "report.html"
  write_atomically({target: page.encode("utf-8")}, work_dir(out_dir))
  return target
