"""``fleet.html``: one self-contained page for a vetted fleet — every model with its verdict, probability, target,
index and suspect trigger, flagged first, sortable by any column, each linked to its own report."""

from __future__ import annotations

import html
import time
from pathlib import Path
from typing import Any

from inspector.report import data_uri


def _thumbnail(folder: Path, line: dict[str, Any]) -> str:
    """The suspect class's reconstructed trigger (amplified) from the model's report folder, inline."""
    if line.get("verdict") == "error":
        return ""
    relative = line.get("trigger_png")
    picture = (folder / relative).resolve() if isinstance(relative, str) else None
    try:
        if picture is None or folder.resolve() not in picture.parents:  # only the fleet's own report folders
            raise FileNotFoundError(relative)
        png = picture.read_bytes()
    except OSError:
        return "<span class='meta'>(no picture)</span>"
    return f"<img src='{data_uri(png)}' width='64' height='64' alt='trigger of {html.escape(str(line['suspect']))}'>"


def _rank(line: dict[str, Any]) -> tuple[int, float]:
    """Flagged first, then not flagged, then errors; within each, the most probably backdoored first."""
    group = {"flagged": 0, "not flagged": 1}.get(str(line.get("verdict")), 2)
    score = line.get("probability")
    score = score if isinstance(score, int | float) else line.get("max_anomaly", 0.0) or 0.0
    return group, -float(score)


def _percent(p: float) -> str:
    """A share as a person reads it: never a rounded 100% or 0% for a fit that is not certain."""
    return ">99%" if p >= 0.995 else "<1%" if p < 0.005 else f"{p:.0%}"


def _row(folder: Path, line: dict[str, Any]) -> str:
    e = html.escape
    name = e(str(line["model"]))
    host, _, node = str(line.get("worker", "")).partition(" node ")
    worker = e(host) + (f"<div>node {e(node)}</div>" if node else "")
    tail = (f"<td data-v='{line.get('seconds', 0)}'>{line.get('seconds', 0):.0f}</td>"
            f"<td data-v='{e(str(line.get('worker', '')))}' class='meta worker'>{worker}</td></tr>")
    if line.get("verdict") == "error":
        reason = e(str(line.get("error", "")))
        hint = e(str(line.get("hint") or ""))
        return (f"<tr class='error'><td data-v='{name}'>{name}<div class='meta'>{e(str(line.get('path')))}"
                f"</div></td><td data-v='2'><span class='badge error'>could not scan</span></td>"
                f"<td colspan='6'>{reason}<div class='meta'>what to do: {hint}</div></td>{tail}")
    flagged = bool(line.get("flagged"))
    probability = line.get("probability")
    shown_p = _percent(probability) if isinstance(probability, int | float) else "—"
    bar = (f"<div class='bar'><div style='width:{probability * 100:.0f}%'></div></div>"
           if isinstance(probability, int | float) else "")
    family = str(line.get("family") or "additive")
    cls = e(str(line.get("target") if flagged else line.get("suspect")))
    badge = "<span class='badge flagged'>FLAGGED</span>" if flagged else "<span class='badge clean'>not flagged</span>"
    recovered = " <span class='meta'>(from an earlier run)</span>" if line.get("recovered") else ""
    report_link = e(f"{line['model']}/report.html")
    return (f"<tr class='{'flagged' if flagged else 'clean'}'><td data-v='{name}'><a href='{report_link}'>{name}</a>"
            f"{recovered}</td><td data-v='{0 if flagged else 1}'>{badge}</td>"
            f"<td data-v='{probability if isinstance(probability, int | float) else -1}'>{shown_p}{bar}</td>"
            f"<td data-v='{cls}'>{cls}<div class='meta'>{'target' if flagged else 'most anomalous'}</div></td>"
            f"<td data-v='{line.get('max_anomaly', 0)}'>{line.get('max_anomaly', 0):.2f}</td>"
            f"<td data-v='{line.get('suspect_flip_rate', 0)}'>{line.get('suspect_flip_rate', 0):.0%}</td>"
            f"<td data-v='{e(family)}'>{e(family)}</td><td data-v=''>{_thumbnail(folder, line)}</td>{tail}")


SORT_SCRIPT = """
document.querySelectorAll('th[data-col]').forEach(th => th.addEventListener('click', () => {
  const table = th.closest('table'), col = +th.dataset.col, body = table.tBodies[0];
  const asc = th.dataset.dir !== 'asc'; th.dataset.dir = asc ? 'asc' : 'desc';
  table.querySelectorAll('th').forEach(h => h.classList.remove('asc', 'desc'));
  th.classList.add(asc ? 'asc' : 'desc');
  const key = r => { const v = r.cells[col].dataset.v; const n = parseFloat(v); return isNaN(n) ? v : n; };
  const rows = [...body.rows], scanned = rows.filter(r => !r.classList.contains('error'));
  scanned.sort((a, b) => { const x = key(a), y = key(b); return (x < y ? -1 : x > y ? 1 : 0) * (asc ? 1 : -1); });
  [...scanned, ...rows.filter(r => r.classList.contains('error'))].forEach(r => body.appendChild(r));
}));
"""


def render_fleet_page(folder: Path, lines: list[dict[str, Any]], runtime: str) -> str:
    e = html.escape
    ordered = sorted(lines, key=_rank)
    flagged = sum(bool(x.get("flagged")) for x in lines)
    errors = sum(x.get("verdict") == "error" for x in lines)
    clean = len(lines) - flagged - errors
    headers = ["model", "verdict", "probability of a backdoor", "class", "top anomaly index", "flip rate",
               "found by", "suspect trigger", "seconds", "worker"]
    head = "".join(f"<th data-col='{i}' title='sort by {h}'>{e(h)}</th>" if h != "suspect trigger"
                   else f"<th>{e(h)}</th>" for i, h in enumerate(headers))
    error_note = (f"<p class='errors'>{errors} model(s) could not be scanned: their rows, at the bottom, say why and "
                  "what to do. Run the fleet scan again once they are fixed; finished models are kept.</p>"
                  if errors else "")
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>inspector fleet — {e(folder.name)}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1200px; color: #222; }}
table {{ border-collapse: collapse; width: 100%; }} td, th {{ padding: 4px 8px; border-bottom: 1px solid #ddd;
  text-align: left; vertical-align: middle; }}
th[data-col] {{ cursor: pointer; user-select: none; }} th.asc::after {{ content: ' ▲'; }}
th.desc::after {{ content: ' ▼'; }}
tr.flagged {{ background: #fff0f0; }} tr.error {{ background: #fff8e1; }}
.badge {{ padding: 2px 8px; border-radius: 10px; font-size: .85em; white-space: nowrap; }}
.badge.flagged {{ background: #d62728; color: white; font-weight: 600; }}
.badge.clean {{ background: #e3f4e4; color: #1b5e20; }} .badge.error {{ background: #ffb300; color: #222; }}
.bar {{ background: #eee; height: 6px; width: 90px; border-radius: 3px; }}
.bar div {{ background: #d62728; height: 6px; border-radius: 3px; }}
.meta {{ color: #555; font-size: .85em; }} .worker {{ white-space: nowrap; }} img {{ image-rendering: pixelated; }}
.counts {{ font-size: 1.2em; margin: .5em 0 1em; }} .counts b.f {{ color: #d62728; }}
.errors {{ background: #fff8e1; border: 1px solid #ffb300; padding: .6em 1em; border-radius: 6px; }}
</style></head><body>
<h1>inspector fleet report</h1>
<p class="counts">{len(lines)} model(s): <b class="f">{flagged} flagged</b> · {clean} not flagged · {errors} could
not be scanned</p>
{error_note}
<p class="meta">Flagged first, then the most probably backdoored; click a column to sort by it. The probability is a
logistic fit of the top anomaly index on the dev zoo's default scans (benchmarks/calibration.md); it is given only
for inspector scans of every class with a clean reference. Each model's name opens its own report.
Written {e(time.strftime('%Y-%m-%d %H:%M:%S'))}; this run: {e(runtime)}.</p>
<table><thead><tr>{head}</tr></thead><tbody>
{''.join(_row(folder, line) for line in ordered)}
</tbody></table>
<script>{SORT_SCRIPT}</script>
</body></html>"""
