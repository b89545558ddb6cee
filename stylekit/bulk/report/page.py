"""The report's HTML: one self-contained page (inline CSS, SVG and data: images; one small
inline script that marks the page once every image has loaded, for tests and monitors)."""

from __future__ import annotations

import datetime as dt
import html

from stylekit import __version__
from stylekit.bulk.report.charts import throughput_svg
from stylekit.bulk.report.runs import STATUSES, RunSummary
from stylekit.bulk.report.thumbs import Pair
from stylekit.redact import redact

CSS = """
body{font:14px/1.45 system-ui,sans-serif;margin:24px auto;max-width:1100px;color:#222;padding:0 16px}
h1{font-size:22px;margin:0 0 4px}h2{font-size:17px;margin:28px 0 8px;border-bottom:1px solid #ddd}
.muted{color:#777}table{border-collapse:collapse;margin:6px 0}
td,th{padding:3px 10px;border-bottom:1px solid #eee;text-align:right;vertical-align:top}
th{background:#f3f3f3}td.l,th.l{text-align:left}tr.this td{font-weight:600;background:#fffbe6}
.ok{color:#1b7f3b}.failed{color:#b3261e}.skipped{color:#666}
.up{color:#b3261e}.down{color:#1b7f3b}code{font-size:12px;word-break:break-all}
.grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(460px,1fr));gap:14px}
.pair{border:1px solid #ddd;padding:6px;border-radius:4px}.pair div{display:flex;gap:6px}
.pair img{max-width:220px;max-height:220px;display:block}.pair p{margin:4px 0 0;font-size:12px}
.tiles{display:flex;gap:16px;flex-wrap:wrap}.tile{border:1px solid #ddd;border-radius:4px;padding:8px 14px}
.tile b{font-size:22px;display:block}
"""

# Sets <body data-images="loaded N/M"> (or "broken ...") once every image has finished.
MARKER = """
window.addEventListener("load", function () {
  var imgs = Array.prototype.slice.call(document.images);
  var good = imgs.filter(function (i) { return i.complete && i.naturalWidth > 0; }).length;
  document.body.setAttribute("data-images", (good === imgs.length ? "loaded " : "broken ") + good + "/" + imgs.length);
});
"""


def _when(ms: int | None) -> str:
    if ms is None:
        return "?"
    return dt.datetime.fromtimestamp(ms / 1000, dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def _size(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if n < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return ""


def _delta(now: int, before: int | None, worse_when_up: bool) -> str:
    """The change from the night before: red when failures rose, green when they fell."""
    if before is None or now == before:
        return ""
    cls = ("up" if now > before else "down") if worse_when_up else "muted"
    return f' <span class="{cls}">({now - before:+d})</span>'


def history_table(run: RunSummary, history: list[tuple[str, dict[str, int]]]) -> str:
    """Counts by status for this run and the runs before it (newest first), each with its
    change from the run before."""
    rows = []
    for i, (run_id, counts) in enumerate(history):
        before = history[i + 1][1] if i + 1 < len(history) else None
        cells = "".join(
            f'<td class="{s}">{counts[s]}{_delta(counts[s], before and before[s], s == "failed")}</td>'
            for s in STATUSES
        )
        mark = ' class="this"' if run_id == run.run_id else ""
        rows.append(
            f'<tr{mark}><td class="l"><code>{html.escape(run_id)}</code></td>{cells}<td>{sum(counts.values())}</td></tr>'
        )
    head = '<tr><th class="l">run</th><th>ok</th><th>failed</th><th>skipped</th><th>total</th></tr>'
    return f"<table>{head}{''.join(rows)}</table>"


def failures_table(run: RunSummary) -> str:
    if not run.failures:
        return '<p class="ok">No input failed.</p>'
    rows = []
    for group in run.failures:
        keys = "<br>".join(f"<code>{html.escape(redact(k))}</code>" for k in group.keys)
        more = group.count - len(group.keys)
        if more > 0:
            keys += f"<br><span class=\"muted\">and {more} more (status = 'failed' in the manifest)</span>"
        rows.append(
            f'<tr><td class="failed">{group.count}</td><td class="l">{html.escape(redact(group.error))}</td>'
            f'<td class="l">{keys}</td></tr>'
        )
    head = '<tr><th>inputs</th><th class="l">error</th><th class="l">keys</th></tr>'
    return f"<table>{head}{''.join(rows)}</table>"


def samples_grid(pairs: list[Pair], sampled_from: int) -> str:
    if not pairs:
        return '<p class="muted">No photo was stylized in this run.</p>'
    cells = []
    for p in pairs:
        if p.input_uri is None:
            body = f'<p class="failed">{html.escape(p.problem)}</p>'
        else:
            body = (
                f'<div><img src="{p.input_uri}" alt="input {html.escape(p.key)}">'
                f'<img src="{p.output_uri}" alt="output {html.escape(p.key)}"></div>'
            )
        cells.append(f'<figure class="pair">{body}<p><code>{html.escape(p.key)}</code></p></figure>')
    note = f'<p class="muted">{len(pairs)} of the {sampled_from} photos stylized in this run, input beside output.</p>'
    return note + f'<div class="grid">{"".join(cells)}</div>'


def styles_table(run: RunSummary) -> str:
    """Each --style selection's outputs by status (nothing for a run of one selection)."""
    if not run.per_style:
        return ""
    rows = "".join(
        f'<tr><td class="l"><code>{html.escape(name)}</code></td>'
        + "".join(f'<td class="{s}">{counts[s]}</td>' for s in ("ok", "failed", "skipped"))
        + "</tr>"
        for name, counts in sorted(run.per_style.items())
    )
    head = '<tr><th class="l">style</th><th>ok</th><th>failed</th><th>skipped</th></tr>'
    return f"<h2>Outputs by style</h2><table>{head}{rows}</table>"


def render(run: RunSummary, history: list[tuple[str, dict[str, int]]], pairs: list[Pair]) -> str:
    c = run.counts
    seconds = ((run.ended_ms or 0) - (run.started_ms or 0)) / 1000
    done = c["ok"] + c["failed"]
    rate = c["ok"] / seconds if seconds > 0 else 0.0
    tiles = "".join(
        f'<div class="tile"><b class="{cls}">{value}</b>{label}</div>'
        for value, label, cls in (
            (c["ok"], "ok", "ok"),
            (c["failed"], "failed", "failed" if c["failed"] else "muted"),
            (c["skipped"], "skipped (done before)", "skipped"),
            (f"{rate:.2f}", "images/s", ""),
            (_size(run.input_bytes), "read", ""),
            (_size(run.output_bytes), "written", ""),
        )
    )
    title = f"stylekit night {run.run_id}"
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>{CSS}</style></head>
<body data-images="pending">
<h1>{html.escape(title)}</h1>
<p class="muted"><code>{html.escape(redact(run.input_root))}</code> &rarr; <code>{html.escape(redact(run.output_root))}</code>,
model digest <code>{html.escape(run.model_digest)}</code><br>
{_when(run.started_ms)} to {_when(run.ended_ms)} ({seconds:.0f} s), {done} inputs tried{f", {run.videos} of them videos" if run.videos else ""}</p>
<div class="tiles">{tiles}</div>
<h2>Inputs by status, against the nights before</h2>
{history_table(run, history)}
{styles_table(run)}
<h2>Failures by error</h2>
{failures_table(run)}
<h2>Throughput over the run</h2>
{throughput_svg(run.done_per_second)}
<h2>A sample of the night</h2>
{samples_grid(pairs, c["ok"] - run.videos)}
<p class="muted">Made by stylekit {html.escape(__version__)} from the run's manifest
(<code>_manifest/run={html.escape(run.run_id)}/</code>); rebuild with
<code>python -m stylekit report OUT --run {html.escape(run.run_id)}</code>.</p>
<script>{MARKER}</script>
</body></html>
"""
