"""Scan reports: report.json (settings, versions, per-class stats, verdict, timings), trigger PNGs,
the trigger tensors (for repair) and a single-file HTML page with the triggers and the bar chart.

Everything is written into one output folder; report.json is written last and atomically, so a
folder with a report.json holds a finished report.
"""

from __future__ import annotations

import base64
import html
import io
import json
import platform
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from safetensors.torch import load_file, save_file

from inspector.calibration import backdoor_probability
from inspector.candidates import METHODS
from inspector.checks import number, require, whole
from inspector.data import SHIPPED
from inspector.detect import (
    CORROBORATED_GATE,
    QUICK_FAMILIES,
    QUICK_FAMILY_WORDS,
    TRANSFER_MIN_FLIP_RATE,
    TRANSFER_THRESHOLD_SCALE,
    Verdict,
)
from inspector.errors import InputError, shown
from inspector.examples import Example
from inspector.figures import class_bars
from inspector.invert import ScanConfig, ScanResult
from inspector.safetensors_file import describe_problem

REPORT = "report.json"
TRIGGERS = "triggers.safetensors"
HTML = "report.html"
FORMAT = "inspector.scan_report"
VERSION = 1
PNG_SCALE = 4  # 64 px triggers become 256 px pictures


def versions() -> dict[str, str]:
    import importlib.metadata as md

    from inspector import __version__

    out = {"inspector": __version__, "python": platform.python_version(), "torch": torch.__version__}
    for package in ("open_clip_torch", "numpy", "plotly"):
        try:
            out[package] = md.version(package)
        except md.PackageNotFoundError:
            out[package] = "not installed"
    return out


def to_png_bytes(picture: torch.Tensor, scale: int = PNG_SCALE) -> bytes:
    """(3, S, S) in [0, 1] -> PNG bytes, enlarged without smoothing so single pixels stay visible."""
    array = (picture.clamp(0, 1) * 255).round().byte().permute(1, 2, 0).cpu().numpy()
    image = Image.fromarray(array)
    if scale > 1:
        image = image.resize((image.width * scale, image.height * scale), Image.NEAREST)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def build_report(result: ScanResult, model_info: dict[str, Any], pool_info: dict[str, Any]) -> dict[str, Any]:
    """The report as a JSON-ready dict (PNG paths filled in by ``write_report``)."""
    verdict = result.verdict
    families = verdict.families or ["additive"] * len(result.classes)
    classes = [{**record, "anomaly": verdict.anomalies[i], "family": families[i]}
               for i, record in enumerate(result.classes)]
    report = {
        "format": FORMAT, "version": VERSION,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "flagged": verdict.flagged,
        "target": verdict.target_name,
        "target_index": verdict.target,
        "max_anomaly": verdict.max_anomaly,
        "suspect": verdict.suspect_name,
        "suspect_index": verdict.suspect,
        "suspect_flip_rate": verdict.suspect_flip_rate,
        "suspect_family": verdict.suspect_family,
        "corroborated_by": list(verdict.corroborated_by),
        "corroborated_gate": verdict.corroborated_gate,
        "confirmed_by": verdict.confirmed_by,
        "transfer": [dict(c) for c in verdict.transfer],
        "highest_family_index": verdict.highest_family_index,
        "seconds": result.seconds,
        "method": result.settings.method,
        "statistic": verdict.statistic,
        "threshold": verdict.threshold,
        "min_flip_rate": verdict.min_flip_rate,
        "model": model_info,
        "pool": {**pool_info, "fit_images": result.fit_images, "held_out_images": result.held_out_images},
        "settings": result.settings.as_dict(),
        "class_names": list(result.class_names),
        "classes": classes,
        "triggers_file": TRIGGERS,
        "timings": {"seconds": result.seconds, "image_passes": result.image_passes,
                    "seconds_per_class": round(result.seconds / max(len(classes), 1), 2)},
        "versions": versions(),
    }
    report["probability"] = backdoor_probability(report)
    return report


def write_report(result: ScanResult, out_dir: Path, model_info: dict[str, Any], pool_info: dict[str, Any],
                 examples: list[Example] | None = None) -> dict[str, Any]:
    """Write PNGs, triggers.safetensors, report.html and report.json into ``out_dir``; returns the report."""
    out_dir = Path(out_dir)
    (out_dir / "triggers").mkdir(parents=True, exist_ok=True)
    report = build_report(result, model_info, pool_info)
    pictures: dict[int, tuple[bytes, bytes]] = {}
    for record in report["classes"]:
        k = int(record["index"])
        trigger = result.trigger(k)
        amplified, true_scale = to_png_bytes(trigger.picture()), to_png_bytes(trigger.true_scale())
        pictures[k] = (amplified, true_scale)
        stem = f"triggers/{k:03d}_{_slug(record['name'])}"
        (out_dir / f"{stem}.png").write_bytes(amplified)
        (out_dir / f"{stem}_true_scale.png").write_bytes(true_scale)
        record["trigger_png"], record["true_scale_png"] = f"{stem}.png", f"{stem}_true_scale.png"
    save_file({f"{name}.{k}": tensor.contiguous() for k, tensors in result.triggers.items()
               for name, tensor in tensors.items()}, str(out_dir / TRIGGERS),
              metadata={"method": report["method"], "epsilon": str(result.settings.epsilon)})
    (out_dir / HTML).write_text(render_html(report, pictures, examples or []), encoding="utf-8")
    partial = out_dir / (REPORT + ".partial")
    partial.write_text(json.dumps(report, indent=2))
    partial.replace(out_dir / REPORT)
    return report


@dataclass
class SavedScan:
    """A report.json read back: the scan result it records and what it says about the model and the pool."""

    path: Path
    result: ScanResult
    model: dict[str, Any]  # name, path, sha256, kind, arch, ... of the scanned model
    pool: dict[str, Any]  # source, fingerprint, images, ... of the OOD pool it read


def read_report(path: Path, class_names: list[str] | tuple[str, ...] | None = None) -> SavedScan:
    """A written report with its reconstructed triggers, checked enough to give a clear message.

    ``class_names``: the scanned model's classes, for reports written before they were recorded.
    """
    path = Path(path)
    if path.is_dir():
        path = path / REPORT
    if not path.is_file():
        raise InputError(f"report {path} does not exist", hint="pass the report.json written by `scan --out DIR`")
    try:
        report = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as exc:
        raise InputError(f"report {path} is not valid JSON ({str(exc)[:80]})",
                         hint="pass the report.json written by `scan --out DIR`") from exc
    if not isinstance(report, dict) or report.get("format") != FORMAT:
        raise InputError(f"{path} is not an inspector scan report", hint="pass the report.json written by `scan`")
    if report.get("method") not in METHODS:
        raise InputError(f"report {path} names an unknown method {shown(report.get('method'))}")
    try:
        check_report(report, class_names)
    except ValueError as exc:
        raise InputError(f"report {path} cannot be used: {exc}",
                         hint="scan the model again to get a fresh report") from exc
    tensors_path = path.parent / report.get("triggers_file", TRIGGERS)
    if not tensors_path.is_file():
        raise InputError(f"the triggers file {tensors_path} of report {path} is missing",
                         hint="keep the scan's output folder together, or scan again")
    try:
        flat = load_file(str(tensors_path))
    except Exception as exc:  # noqa: BLE001 - any reader failure is a damaged triggers file for the user
        raise InputError(f"the triggers file {tensors_path} of report {path} cannot be read: "
                         f"{describe_problem(tensors_path)}",
                         hint="scan the model again to get a fresh report") from exc
    try:
        grouped: dict[int, dict[str, torch.Tensor]] = {}
        for key, tensor in flat.items():
            name, _, index = key.partition(".")
            grouped.setdefault(int(index), {})[name] = tensor
        settings = ScanConfig.from_dict(report["settings"])
        classes = [{key: value for key, value in c.items()
                    if key not in ("anomaly", "family", "trigger_png", "true_scale_png")} for c in report["classes"]]
        verdict = Verdict(flagged=bool(report["flagged"]), target=report["target_index"], target_name=report["target"],
                          suspect=int(report["suspect_index"]), suspect_name=str(report["suspect"]),
                          max_anomaly=float(report["max_anomaly"]),
                          suspect_flip_rate=float(report["suspect_flip_rate"]), statistic=str(report["statistic"]),
                          threshold=float(report["threshold"]), min_flip_rate=float(report["min_flip_rate"]),
                          anomalies=[float(c["anomaly"]) for c in report["classes"]],
                          families=[str(c.get("family", "additive")) for c in report["classes"]],
                          suspect_family=str(report.get("suspect_family", "additive")),
                          corroborated_by=[str(f) for f in report.get("corroborated_by", [])],
                          corroborated_gate=float(report.get("corroborated_gate", CORROBORATED_GATE)),
                          confirmed_by=str(report.get("confirmed_by", "")),
                          highest_family_index=float(report.get("highest_family_index", report["max_anomaly"])),
                          transfer=[dict(c) for c in report.get("transfer", [])])
        names = list(report.get("class_names") or class_names or [])
        result = ScanResult(settings, names, classes, grouped, verdict, float(report["seconds"]),
                            int(report["pool"]["fit_images"]), int(report["pool"]["held_out_images"]),
                            int(report.get("timings", {}).get("image_passes", 0)))
    except (KeyError, TypeError, ValueError) as exc:
        raise InputError(f"report {path} is incomplete or damaged ({type(exc).__name__}: {str(exc)[:80]})",
                         hint="scan the model again to get a fresh report") from exc
    return SavedScan(path, result, dict(report.get("model", {})), dict(report["pool"]))


def check_report(report: dict[str, Any], class_names: list[str] | tuple[str, ...] | None = None) -> None:
    """The fields a repair and the app read from a report, each for its type and range (ValueError naming it):
    a report may have been edited or come from elsewhere."""
    names = report.get("class_names", class_names)
    require(isinstance(names, (list, tuple)) and bool(names) and all(isinstance(n, str) for n in names),
            "class_names", names, "a list of class names")
    n = len(names)
    triggers = report.get("triggers_file", TRIGGERS)
    require(isinstance(triggers, str) and 0 < len(triggers) <= 200 and Path(triggers).name == triggers
            and triggers not in (".", ".."), "triggers_file", triggers, "a file name beside the report")
    settings = report.get("settings")
    require(isinstance(settings, dict), "settings", settings, "a record")
    require(settings.get("method") == report["method"], "settings.method", settings.get("method"),
            f"the report's method {report['method']!r}")
    require(number(settings.get("epsilon")) and 0 < settings["epsilon"] <= 1, "settings.epsilon",
            settings.get("epsilon"), "a bound in (0, 1]")
    require(whole(settings.get("pool_size")) and settings["pool_size"] > 1, "settings.pool_size",
            settings.get("pool_size"), "a whole number of images")
    require(number(settings.get("holdout")) and 0 < settings["holdout"] < 1, "settings.holdout",
            settings.get("holdout"), "a share in (0, 1)")
    require(whole(settings.get("seed")) and 0 <= settings["seed"] < 2 ** 63, "settings.seed", settings.get("seed"),
            "a whole number")
    for key, low, high, wanted in (("classes", 0, n - 1, "a list of class indexes"),
                                   ("fast_rounds", 1, 10_000, "a list of step counts")):
        value = settings.get(key)
        require(value is None or (isinstance(value, list) and all(whole(v) and low <= v <= high for v in value)),
                f"settings.{key}", value, wanted)
    for key in ("threshold", "lr", "fast_lr", "fast_keep", "min_flip_rate"):
        require(settings.get(key) is None or number(settings[key]), f"settings.{key}", settings.get(key), "a number")
    for key in ("batch_size", "epochs", "fast_batch_size", "fast_window", "snapshot_every"):
        require(settings.get(key) is None or (whole(settings[key]) and settings[key] > 0), f"settings.{key}",
                settings.get(key), "a positive whole number")
    for key in ("schedule", "statistic", "spread", "evidence"):
        require(settings.get(key) is None or isinstance(settings[key], str), f"settings.{key}", settings.get(key),
                "text")
    classes = report.get("classes")
    require(isinstance(classes, list) and bool(classes), "classes", classes, "a non-empty list of class records")
    for i, record in enumerate(classes):
        require(isinstance(record, dict) and whole(record.get("index")) and 0 <= record["index"] < n
                and isinstance(record.get("name"), str) and number(record.get("anomaly"))
                and number(record.get("flip_rate")) and isinstance(record.get("family", "additive"), str),
                f"classes[{i}]", record, "a class record (index, name, flip rate, anomaly index)")
    together = report.get("corroborated_by", [])
    require(isinstance(together, list) and all(f in FAMILY_WORDS for f in together), "corroborated_by", together,
            "a list of inversion families")
    gate = report.get("corroborated_gate", CORROBORATED_GATE)
    require(number(gate) and 0 < gate <= 1, "corroborated_gate", gate, "a share of the flip gate, above 0, at most 1")
    indexes = [record["index"] for record in classes]
    require(len(set(indexes)) == len(indexes), "classes", indexes, "a list of distinct classes")
    require(report.get("confirmed_by", "") in ("", "transfer"), "confirmed_by", report.get("confirmed_by"),
            "empty or transfer")
    require(number(report.get("highest_family_index", 0.0)), "highest_family_index",
            report.get("highest_family_index"), "a number")
    checked = report.get("transfer", [])
    require(isinstance(checked, list), "transfer", checked, "a list of checked classes")
    for i, row in enumerate(checked):
        require(isinstance(row, dict) and whole(row.get("position")) and 0 <= row["position"] < len(classes)
                and whole(row.get("index")) and row["index"] in indexes and isinstance(row.get("name"), str)
                and all(number(row.get(k)) for k in ("delivered", "clean", "gap", "reference_gap", "transfer_index")),
                f"transfer[{i}]", row, "a checked class (position, index, name, flip rates, gaps, index)")
    for key in ("suspect_index", "target_index"):
        value = report.get(key)
        require((value is None and key == "target_index") or (whole(value) and value in indexes), key, value,
                "one of the scanned classes")
    for key in ("max_anomaly", "suspect_flip_rate", "threshold", "min_flip_rate", "seconds"):
        require(number(report.get(key)), key, report.get(key), "a number")
    require(isinstance(report.get("flagged"), bool), "flagged", report.get("flagged"), "true or false")
    for key in ("suspect", "statistic"):
        require(isinstance(report.get(key), str), key, report.get(key), "text")
    require(report.get("target") is None or isinstance(report["target"], str), "target", report.get("target"), "text")
    for key in ("model", "timings"):
        require(isinstance(report.get(key, {}), dict), key, report.get(key), "a record")
    pool = report.get("pool")
    require(isinstance(pool, dict) and isinstance(pool.get("source", SHIPPED), str)
            and all(whole(pool.get(k)) and pool[k] >= 0 for k in ("fit_images", "held_out_images")),
            "pool", pool, "a record of the pool's source and images")


def _slug(name: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in name.lower()).strip("_") or "class"


def data_uri(png: bytes) -> str:
    """PNG bytes inline in a page (the report is one file; the app's small pictures need no file either)."""
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


FAMILY_WORDS = {"additive": "the additive trigger, a small noise on every pixel",
                "colour": "the colour transform, one filter for every pixel",
                "blend": "the blended pattern, a picture mixed into the whole image",
                "patch": "the pasted patch, an opaque square that works wherever it lands"}


def _reference_note(settings: dict[str, Any]) -> str:
    """What the flip rates were compared with, as the scan's reference line says it (also the page's footer)."""
    line = str(settings.get("reference_from") or "")
    return f"<p class='meta'>Clean reference: {html.escape(line)}</p>" if line else ""


def _transfer_section(checked: list[dict[str, Any]], threshold: float, min_flip_rate: float) -> str:
    """The transfer check's classes, when the scan ran it (inspector.transfer)."""
    if not checked:
        return ""
    e = html.escape
    rows = "".join(f"<tr><td>{e(str(c['name']))}</td><td>{c['delivered']:.0%}</td><td>{c['clean']:.0%}</td>"
                   f"<td>{c['gap']:+.0%}</td><td>{c['reference_gap']:+.0%}</td><td>{c['transfer_index']:.2f}</td></tr>"
                   for c in checked)
    return (f"<h2>Transfer check</h2><p class='meta'>No index passed the rule, but some family's did, so the "
            f"scan's top classes got a blended-pattern trigger stepped longer, measured on the held-out images by "
            f"this model and by clean learners of the same CLIP. A backdoor's pattern moves this model far more "
            f"than clean learners; a natural attractor's moves both. The gap's index compares it with the same "
            f"class's gap in other clean learners. Flagged when that index exceeds {threshold:g} and the pattern "
            f"flips at least {min_flip_rate:.0%} of this model's images.</p>"
            "<table><tr><th>class</th><th>this model</th><th>clean learners</th><th>gap</th>"
            f"<th>clean learners' own gap</th><th>index</th></tr>{rows}</table>")


def render_html(report: dict[str, Any], pictures: dict[int, tuple[bytes, bytes]], examples: list[Example]) -> str:
    """One self-contained page (plotly.js inlined, images as data URIs): works offline, can be mailed."""
    names = [c["name"] for c in report["classes"]]
    anomalies = [c["anomaly"] for c in report["classes"]]
    suspect_slot = [c["index"] for c in report["classes"]].index(report["suspect_index"])
    common = {"anomalies": anomalies, "suspect": suspect_slot, "threshold": report["threshold"],
              "min_flip_rate": report["min_flip_rate"], "flagged": bool(report["flagged"]),
              "suspect_family": str(report.get("suspect_family", "additive"))}
    flip_chart = class_bars(names, _reindexed(report["classes"]), "flip_rate", title="flip rate per class", **common)
    anomaly_chart = class_bars(names, _reindexed(report["classes"]), "anomaly", title="anomaly index per class",
                               **common)
    flip_html = flip_chart.to_html(full_html=False, include_plotlyjs=True)
    anomaly_html = anomaly_chart.to_html(full_html=False, include_plotlyjs=False)
    e = html.escape
    found_by = FAMILY_WORDS.get(str(report.get("suspect_family", "additive")), "")
    if report.get("corroborated_by"):
        found_by = "two or more families together: " + "; ".join(FAMILY_WORDS[f] for f in report["corroborated_by"])
    if report.get("confirmed_by") == "transfer":
        found_by = "the transfer check: a blended pattern that moves this model far more than clean learners"
    if report["flagged"]:
        headline = (f"<div class='verdict flagged'>BACKDOOR SUSPECTED — target class <b>{e(report['target'])}</b>"
                    f" (anomaly index {report['max_anomaly']:.2f}, flip rate {report['suspect_flip_rate']:.0%}; "
                    f"found by {found_by})</div>")
    else:
        headline = (f"<div class='verdict clean'>Not flagged — most anomalous class {e(report['suspect'])} "
                    f"(anomaly index {report['max_anomaly']:.2f}, flip rate {report['suspect_flip_rate']:.0%}; "
                    f"{found_by})</div>")
    if report.get("probability") is not None:
        headline += (f"<p class='probability'>Probability of a backdoor: <b>{report['probability']:.0%}</b> "
                     "(a logistic fit of the anomaly index on the dev zoo's scans, benchmarks/calibration.md)</p>")
    has_mask = all("mask_norm" in c for c in report["classes"])
    has_size = all("trigger_size" in c for c in report["classes"])
    quick = [family for family in QUICK_FAMILIES if all(f"{family}_flip_rate" in c for c in report["classes"])]
    has_margin = all("reference_loss" in c for c in report["classes"])
    rows = []
    ranked = sorted(report["classes"], key=lambda c: -float(c["anomaly"]))  # the most anomalous first
    for position, c in enumerate(ranked):
        amplified, true_scale = pictures.get(int(c["index"]), (b"", b""))
        mark = " class='suspect'" if c["index"] == report["suspect_index"] else ""
        extra = f"<td>{c['mask_norm']:.1f}</td>" if has_mask else ""
        extra += f"<td>{c['trigger_size']:.0f}</td>" if has_size else ""
        extra += "".join(f"<td>{c[f'{family}_flip_rate']:.1%}</td>" for family in quick)
        extra += f"<td>{e(str(c.get('family', 'additive')))}</td>" if quick else ""
        rows.append(f"<tr{mark}><td>{position + 1}</td><td>{e(c['name'])}</td><td>{c['flip_rate']:.1%}</td>"
                    f"<td>{c['anomaly']:.2f}</td><td>{c['loss']:.3f}</td>"
                    + (f"<td>{c['reference_loss']:.3f}</td>" if has_margin else "") + f"{extra}"
                    f"<td><img src='{data_uri(amplified)}' width=96></td>"
                    f"<td><img src='{data_uri(true_scale)}' width=96></td></tr>")
    example_cells = "".join(
        f"<figure><img src='{data_uri(to_png_bytes(x.clean, 2))}'><figcaption>{e(x.clean_prediction)}</figcaption>"
        f"</figure><figure><img src='{data_uri(to_png_bytes(x.triggered, 2))}'>"
        f"<figcaption>&rarr; {e(x.triggered_prediction)}</figcaption></figure>" for x in examples)
    model, pool = report["model"], report["pool"]
    settings = report["settings"]
    margin_header = "<th>clean learners' loss</th>" if has_margin else ""
    mask_header = "<th>mask norm</th>" if has_mask else ""
    mask_header += "<th>trigger size (pixels)</th>" if has_size else ""
    mask_header += "".join(f"<th>{QUICK_FAMILY_WORDS[family]} flip rate</th>" for family in quick)
    mask_header += "<th>index from</th>" if quick else ""
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>inspector scan — {e(str(model.get('name', '')))}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1100px; color: #222; }}
.verdict {{ font-size: 1.3em; padding: .8em 1em; border-radius: 6px; margin: 1em 0; }}
.flagged {{ background: #fde2e1; border: 2px solid #d62728; }}
.clean {{ background: #e3f4e4; border: 2px solid #2ca02c; }}
table {{ border-collapse: collapse; width: 100%; }} td, th {{ padding: 4px 8px; border-bottom: 1px solid #ddd; }}
tr.suspect {{ background: #fff0f0; font-weight: 600; }} img {{ image-rendering: pixelated; }}
.examples {{ display: flex; flex-wrap: wrap; gap: 6px; }} figure {{ margin: 0; text-align: center; }}
.meta {{ color: #555; font-size: .9em; }}
.legend {{ display: grid; grid-template-columns: max-content 1fr; gap: 2px 12px; color: #444; font-size: .9em; }}
.legend dt {{ font-weight: 600; }} .legend dd {{ margin: 0; }}
</style></head><body>
<h1>inspector scan report</h1>
<p class="meta">model <b>{e(str(model.get('name', '')))}</b> ({e(str(model.get('kind', '')))} on
{e(str(model.get('arch', '')))}, {model.get('n_classes', '')} classes) · method {e(report['method'])} ·
ε = {settings['epsilon'] * 255:.1f}/255 · {pool.get('fit_images')} + {pool.get('held_out_images')} OOD images
({e(str(pool.get('source', '')))}) · {report['seconds']:.1f} s · {e(report['created'])}</p>
{headline}
<p class="meta">Rule: flagged when the top anomaly index ({e(report['statistic'])}) exceeds {report['threshold']:g}
and that class's trigger flips at least {report['min_flip_rate']:.0%} of the held-out OOD images
(at least {report['min_flip_rate'] * report['corroborated_gate']:.0%} for a class two
families name together).
{_evidence_note(settings) if has_margin else ""}{_schedule_note(settings)}</p>
{_reference_note(settings)}
{_transfer_section(report.get("transfer", []), report["threshold"] * TRANSFER_THRESHOLD_SCALE,
                   max(report["min_flip_rate"], TRANSFER_MIN_FLIP_RATE))}
{flip_html}
{anomaly_html}
<h2>Before / after: OOD images with the {e(str(report.get('suspect_family', 'additive')))} trigger of class
{e(report['suspect'])}</h2>
<div class="examples">{example_cells}</div>
<h2>Per class, the most anomalous first</h2>
<table><tr><th>rank</th><th>class</th><th>flip rate</th><th>anomaly</th><th>loss</th>{margin_header}{mask_header}
<th>trigger (amplified)</th><th>true scale</th></tr>
{''.join(rows)}</table>
{_column_legend(report, has_margin, has_mask, has_size, quick)}
<p class="meta">versions: {e(json.dumps(report['versions']))}</p>
</body></html>"""


def _column_legend(report: dict[str, Any], has_margin: bool, has_mask: bool, has_size: bool,
                   quick: list[str]) -> str:
    """What each column of the class table means, for the columns this report has."""
    terms = [("flip rate", "share of the held-out OOD images (never used to fit a trigger) that the class's "
                           "reconstructed trigger sends to that class"),
             ("anomaly", f"how far the class stands out from the others, from its {report['statistic']} "
                         f"(a robust z-score; flagged above {report['threshold']:g})"),
             ("loss", "the trigger's mean margin loss on the held-out images (for a class the fast schedule stopped "
                      "early, on its last batches): how far triggered images still are from the class (lower: the "
                      "class is easier to reach)")]
    if has_margin:
        terms.append(("clean learners' loss", "the same loss measured on the clean reference's learners"))
    if has_mask:
        terms.append(("mask norm", "Neural Cleanse: the L1 norm of the trigger's mask (smaller: a smaller trigger)"))
    if has_size:
        terms.append(("trigger size", "Pixel Backdoor: pixels the trigger changes"))
    terms += [(f"{QUICK_FAMILY_WORDS[family]} flip rate", f"the flip rate of the class's {QUICK_FAMILY_WORDS[family]} "
                                                          "trigger (another trigger family)") for family in quick]
    if quick:
        terms.append(("index from", "the trigger family whose evidence gave the class its anomaly"))
    terms.append(("trigger", "the reconstructed trigger, amplified to be seen, and at the scale it is added"))
    items = "".join(f"<dt>{html.escape(term)}</dt><dd>{html.escape(meaning)}</dd>" for term, meaning in terms)
    return f"<dl class='legend'>{items}</dl>"


def _evidence_note(settings: dict[str, Any]) -> str:
    """How a class's evidence was formed when the clean reference kept margin losses (detect.Evidence)."""
    evidence = settings.get("evidence", "flip")
    if evidence == "flip":
        return "Evidence: the flip-rate excess over clean learners alone. "
    how = "averaged with" if evidence == "mean" else "or, where larger,"
    return (f"Evidence: each class's flip-rate excess over clean learners {how} how far its margin loss lies below "
            "theirs (the loss column against the clean learners' loss), both in units of the clean learners' spread. ")


def _schedule_note(settings: dict[str, Any]) -> str:
    if settings.get("schedule") != "fast":
        return "Schedule: faithful (one full epoch per class, every class measured on the held-out images)."
    return (f"Schedule: fast (successive halving over rounds of {settings.get('fast_rounds')} steps of "
            f"{settings.get('fast_batch_size')} images); hatched bars are estimates from the OOD images each trigger "
            f"had not yet learnt from, the {settings.get('fast_measured')} leading classes were measured on the "
            "held-out images.")


def _reindexed(classes: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Bars are drawn in scan order, so each record's slot is its position."""
    return [{**c, "index": i} for i, c in enumerate(classes)]
