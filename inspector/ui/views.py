"""Engine results -> what the app shows: pictures, progress lines, the verdict panel, charts.

Pure functions of engine objects (no Gradio, no numerics beyond formatting), so each one can be
checked on its own.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from typing import Any

import plotly.graph_objects as go
import torch
from PIL import Image

from inspector.data import SHIPPED, ImagePool, Task
from inspector.detect import (
    QUICK_FAMILIES,
    QUICK_FAMILY_WORDS,
    TRANSFER_THRESHOLD_SCALE,
    Verdict,
    anomaly_index,
    statistic_values,
    transfer_gate,
)
from inspector.effects import FeatureMap, Probe, Transitions
from inspector.examples import Example
from inspector.figures import (
    LOOK,
    View,
    class_bars,
    compare_bars,
    feature_map_figure,
    probe_figure,
    transition_heatmap,
)
from inspector.invert import ClassEstimate, ScanConfig, ScanResult, ScanStarted, TriggerSnapshot
from inspector.lab.implant import working_bar
from inspector.lab.truth import GroundTruth
from inspector.pipeline import Delivered, ReferenceWritten
from inspector.reference import ReferenceProgress
from inspector.repair import RepairMeasured, RepairStep
from inspector.report import data_uri, to_png_bytes
from inspector.ui.workspace import ATTACKERS, RECONSTRUCTED

PICTURE_SIZE = 256  # on-screen size of a trigger picture (nearest-neighbour, so pixels stay crisp)
THUMB_SIZE = 128
Gallery = list[tuple[Image.Image, str]]
CHART_HEIGHT = 350  # px: with the verdict above it, the chart stays above the fold of a 1400 x 900 screen


def to_image(picture: torch.Tensor, size: int = PICTURE_SIZE) -> Image.Image:
    """(3, S, S) pixels in [0, 1] -> a PIL image enlarged without smoothing."""
    array = (picture.detach().clamp(0, 1) * 255).round().byte().permute(1, 2, 0).cpu().numpy()
    return Image.fromarray(array).resize((size, size), Image.NEAREST)


def started_line(label: str, event: ScanStarted) -> str:
    schedule = event.settings.schedule
    how = (f"successive halving, up to {event.steps_per_class} steps for the most suspicious"
           if schedule == "fast" else f"{event.steps_per_class} steps each")
    return (f"Scanning **{label}**: {len(event.classes)} candidate classes ({how}) on {event.fit_images} "
            f"OOD images, {event.held_out_images} held out")


def snapshot_line(event: TriggerSnapshot, total_steps: int, started: float, now: float) -> str:
    done = event.scan_step / max(total_steps, 1)
    family = f" ({QUICK_FAMILY_WORDS[event.family]})" if event.family in QUICK_FAMILY_WORDS else ""
    return (f"Inverting **{event.class_name}**{family}: step {event.step} of at most {event.steps}, margin loss "
            f"{event.loss:.3f} · scan {done:.0%} done ({now - started:.0f} s)")


def live_anomalies(records: Sequence[dict[str, Any]], statistic: str) -> list[float] | None:
    """Anomaly indices of the classes finished so far (the index needs at least 3 to compare)."""
    if len(records) < 3:
        return None
    return anomaly_index(statistic_values(records, statistic))  # type: ignore[arg-type]


def running_records(estimates: dict[int, ClassEstimate], records: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The running classes' estimates as chart records, for the classes not finished yet."""
    finished = {int(r["index"]) for r in records}
    return [{"index": e.class_index, "name": e.class_name, "flip_rate": e.flip_rate, "loss": e.loss,
             "steps": e.steps, "measured_on": "running"} for k, e in sorted(estimates.items()) if k not in finished]


def prepare_charts() -> None:
    """plotly imports its figure classes on their first use (about 0.4 s on 2 cores): one chart drawn when the page
    is built pays for that, not a user's first Scan."""
    live_bars(["class"], [], ScanConfig(), "flip_rate")


def live_bars(class_names: Sequence[str], records: Sequence[dict[str, Any]], settings: ScanConfig,
              view: View, verdict: Verdict | None = None, candidates: Sequence[int] | None = None,
              estimates: dict[int, ClassEstimate] | None = None) -> go.Figure:
    """The per-class chart while classes finish (leader red) and after the verdict (suspect red); ``estimates``:
    the classes still running, drawn light from their estimate so far (the index is of finished classes only)."""
    statistic = settings.resolved_statistic()
    anomalies = verdict.anomalies if verdict is not None else live_anomalies(records, statistic)
    if verdict is not None:
        suspect = verdict.suspect
    elif anomalies is not None:
        suspect = int(records[max(range(len(records)), key=lambda i: anomalies[i])]["index"])
    else:
        suspect = None
    shown = list(candidates) if candidates is not None else list(range(len(class_names)))
    names = [class_names[k] for k in shown]
    position = {k: i for i, k in enumerate(shown)}
    shown_records = [*records, *running_records(estimates or {}, records)]  # finished first: the anomalies' order
    reindexed = [{**r, "index": position[int(r["index"])]} for r in shown_records if int(r["index"]) in position]
    title = "Flip rate of each class's reconstructed trigger" if view == "flip_rate" else "Anomaly index per class"
    return class_bars(names, reindexed, view, anomalies, position.get(suspect) if suspect is not None else None,
                      settings.threshold, settings.resolved_min_flip_rate(), title,
                      flagged=verdict.flagged if verdict is not None else None, height=CHART_HEIGHT,
                      suspect_family=verdict.suspect_family if verdict is not None else None)


def effect_figures(moved: Transitions, features: FeatureMap) -> tuple[go.Figure, go.Figure]:
    """Where a class's trigger sends the held-out images (heatmap) and how their features move (2-D map)."""
    heatmap = transition_heatmap(moved.class_names, moved.counts.tolist(), moved.trigger_class)
    plane = feature_map_figure(features.class_names, features.trigger_class, features.clean.tolist(),
                               features.triggered.tolist(), features.text.tolist(), features.triggered_predicted,
                               features.explained)
    return heatmap, plane


def probe_views(probes: Sequence[Probe], class_name: str | None) -> tuple[str, go.Figure]:
    """The user's picture as the model saw it under each condition, captioned short with its answer (one tile
    each, side by side, never cropped), and the top classes under each."""
    tiles = "".join(
        f'<figure><img src="{data_uri(to_png_bytes(p.picture, max(1, THUMB_SIZE // p.picture.shape[-1])))}" '
        f'alt="{html.escape(p.condition)}"><figcaption><b>{html.escape(p.condition)}</b>: '
        f"{html.escape(p.top[0][0])} {p.top[0][1]:.0%}</figcaption></figure>" for p in probes)
    return (f'<div class="probe-tiles">{tiles}</div>',
            probe_figure([(probe_condition(p.condition, class_name), p.top) for p in probes]))


def probe_condition(condition: str, class_name: str | None) -> str:
    """A probe's condition in full words."""
    return {"clean": "without a trigger", RECONSTRUCTED: f"with {class_name}'s reconstructed trigger",
            ATTACKERS: "with the attacker's real trigger"}.get(condition, condition)


def compare_figure(entries: Sequence[Any], view: View) -> go.Figure:
    """Finished scans (``workspace.ScanEntry``) as grouped bars, classes matched by name."""
    first = entries[0].result
    scans = [(e.label, e.result.classes, e.result.verdict.anomalies, e.result.settings.resolved_min_flip_rate(),
              e.result.verdict.target_name if e.result.verdict.flagged else None) for e in entries]
    return compare_bars(first.class_names, scans, view, first.settings.threshold)


def effects_line(name: str, moved: Transitions, clean_distance: float, triggered_distance: float) -> str:
    """What the two effect views say, in numbers."""
    closer = ("closer to" if triggered_distance < clean_distance else "no closer to")
    return (f"**{name}**'s trigger on {moved.images} held-out OOD images: it flips {moved.flip_rate():.0%} of those "
            f"not predicted {name} already; with it {moved.sent_to():.0%} of all are predicted "
            f"**{name}**, and {moved.moved():.0%} change their prediction. In the feature map the triggered "
            f"images sit {closer} {name}'s text feature (mean distance {triggered_distance:.2f}, clean "
            f"{clean_distance:.2f}).")


def picture_line(name: str, model_label: str, probes: Sequence[Probe], class_name: str | None,
                 scanned: bool) -> str:
    """The verdict on the user's picture: what the model answers without and with each trigger."""
    parts = [f"**{p.top[0][0]}** ({p.top[0][1]:.0%}) {probe_condition(p.condition, class_name)}" for p in probes]
    line = f"**{html.escape(name)}** on {html.escape(model_label)}: " + "; ".join(parts) + "."
    if not scanned:
        line += " Scan this model to see the picture with a reconstructed trigger too."
    return line


def compare_line(entries: Sequence[Any]) -> str:
    """The two compared scans' verdicts in a sentence each."""
    lines = []
    for e in entries:
        v = e.result.verdict
        top = max(v.anomalies, default=0.0)
        said = (f"flagged, target **{v.target_name}** (index {top:.2f})" if v.flagged else
                f"not flagged (top index {top:.2f}, {v.suspect_name})")
        lines.append(f"- {html.escape(e.label)}: {said}; scan of {len(e.result.classes)} classes, "
                     f"{e.result.settings.method}, {e.result.settings.schedule} schedule")
    return "\n".join(lines)


def measured_images(record: dict[str, Any], family: str) -> str:
    """Which images a class's flip rate was counted on, in the page's words."""
    if family in QUICK_FAMILIES:
        return "the OOD images it was measured on"
    return "held-out OOD images" if record.get("measured_on", "held-out") == "held-out" else \
        "OOD images of its last fresh batches"


# A quick family's words on the verdict panel: what its index is of, and what kind of trigger it found.
QUICK_FAMILY_FINDINGS = {
    "colour": ("anomaly index of its colour-transform trigger", "one colour filter for every pixel, not a small noise"),
    "blend": ("anomaly index of its blended-pattern trigger", "a picture mixed into the whole image"),
    "patch": ("anomaly index of its pasted-patch trigger", "an opaque patch that works wherever it is pasted"),
}


def stale_stamp(changes: Sequence[str], model_label: str) -> str:
    """The banner over results that no longer match the pickers ("" when they do)."""
    if not changes:
        return ""
    what = " and ".join(changes) if len(changes) <= 2 else ", ".join(changes[:-1]) + " and " + changes[-1]
    return (f'<div class="problem stale-stamp">⚠ The results below were computed for <b>{html.escape(model_label)}'
            f"</b> before {what} changed: a scan with what is chosen now may give other numbers. Press "
            "<b>Scan</b> to see those.</div>")


def verdict_html(verdict: Verdict, result: ScanResult, model_label: str, stale: bool = False,
                 report_threshold: float | None = None) -> str:
    """The one-look panel: flagged or not, target, anomaly index, flip rate, time taken; greyed out when
    ``stale`` (the pickers have moved since); a note when decided again at another threshold than the report's."""
    stat = "anomaly index"
    suspect = next((c for c in result.classes if int(c["index"]) == verdict.suspect), {})
    clean_note = ""
    if "reference_flip_rate" in suspect:
        stat = "anomaly index of the excess over clean learners"
        clean_note = f"; the same class's trigger flips {suspect['reference_flip_rate']:.0%} in clean learners"
        if "reference_loss" in suspect and result.settings.evidence != "flip":
            stat = "anomaly index of the excess over clean learners (flip rate and margin loss)"
            clean_note += (f", and its margin loss is {suspect['loss']:.2f} against their "
                           f"{suspect['reference_loss']:.2f}")
    family = verdict.suspect_family
    if family in QUICK_FAMILY_FINDINGS:
        stat, found = QUICK_FAMILY_FINDINGS[family]
        clean_note = f"; found by the {family} family: {found}"
        if f"reference_{family}_flip_rate" in suspect:
            clean_note += (f"; the same class's {family} trigger flips "
                           f"{suspect[f'reference_{family}_flip_rate']:.0%} in clean learners")
    measured_on = measured_images(suspect, verdict.suspect_family)
    if verdict.corroborated_by:
        stat = "combined anomaly index of " + " + ".join(verdict.corroborated_by) + " triggers"
        clean_note = ("; no one family's trigger stood out alone, but " + " and ".join(verdict.corroborated_by)
                      + " each point to this class (each index ≥ 1), which a clean learner's noise rarely does; "
                      "the gate for flips is lowered accordingly")
    checked = next((c for c in verdict.transfer if int(c["index"]) == verdict.suspect), None)
    if verdict.confirmed_by == "transfer" and checked is not None:
        stat = "index of its transfer gap"
        measured_on = "this model's held-out OOD images"
        clean_note = (f"; found by the transfer check: no index passed the rule, but this class's blended-pattern "
                      f"trigger moves clean learners of the same CLIP on only {checked['clean']:.0%} of the images "
                      f"(their own triggers' gap: {checked['reference_gap']:+.0%})")
    if verdict.flagged:
        head = f"Backdoor suspected — target class <b>{html.escape(verdict.target_name or '')}</b>"
        threshold = verdict.threshold * (TRANSFER_THRESHOLD_SCALE if verdict.confirmed_by == "transfer" else 1.0)
        body = (f"Its trigger stands out: {stat} {verdict.max_anomaly:.2f} &gt; threshold {threshold:g}, "
                f"and it flips {verdict.suspect_flip_rate:.0%} of {measured_on} "
                f"(≥ {verdict_gate(verdict):.0%}){clean_note}.")
        css = "verdict flagged"
    else:
        head = "No backdoor found"
        name = html.escape(verdict.suspect_name)
        if verdict.max_anomaly <= verdict.threshold:
            body = (f"Most anomalous class: <b>{name}</b> ({stat} {verdict.max_anomaly:.2f} ≤ threshold "
                    f"{verdict.threshold:g}): no class stands out from the others.")
        else:  # an outlier whose trigger reaches too few images: said as such, not as "nothing stands out"
            body = (f"Most anomalous class: <b>{name}</b>. It stands out ({stat} {verdict.max_anomaly:.2f} &gt; "
                    f"threshold {verdict.threshold:g}), but its trigger flips only {verdict.suspect_flip_rate:.0%} "
                    f"of {measured_on}, under the {verdict.min_flip_rate:.0%} a backdoor's trigger must reach.")
        css = "verdict clean"
        if verdict.transfer:
            body += " The transfer check looked again at " + ", ".join(
                f"<b>{html.escape(str(c['name']))}</b> (its blended pattern flips {c['delivered']:.0%} here, "
                f"{c['clean']:.0%} in clean learners; index {c['transfer_index']:.2f})" for c in verdict.transfer
            ) + (f": none has an index above {verdict.threshold:g} with a pattern that flips at least "
                 f"{verdict.min_flip_rate:.0%} here.")
    foot = (f"{html.escape(model_label)} · {len(result.classes)} candidate classes · "
            f"{result.fit_images} + {result.held_out_images} OOD images · statistic {verdict.statistic} · "
            f"{result.seconds:.0f} s")
    if result.settings.reference_from:
        foot += f"<br>clean reference: {html.escape(result.settings.reference_from)}"
    if report_threshold is not None and report_threshold != verdict.threshold:
        foot += (f"<br>decided again at threshold {verdict.threshold:g} on the same scan; the report files hold its "
                 f"verdict at {report_threshold:g}")
    css += " stale" if stale else ""
    return f'<div class="{css}"><div class="verdict-head">{head}</div><p>{body}</p><small>{foot}</small></div>'


def verdict_gate(verdict: Verdict) -> float:
    """The share of images the flagged trigger had to flip: lower for a class two families name together, higher for
    one the transfer check flagged."""
    if verdict.confirmed_by == "transfer":
        return transfer_gate(verdict)
    return verdict.min_flip_rate * (verdict.corroborated_gate if verdict.corroborated_by else 1.0)


def stopped_html(finished: int, total: int, seconds: float) -> str:
    return (f'<div class="verdict stopped"><div class="verdict-head">Scan stopped</div>'
            f"<p>{finished} of {total} classes were finished in {seconds:.0f} s; no verdict without all of them. "
            "Press Scan to start again.</p></div>")


def truth_html(truth: GroundTruth | None, verdict: Verdict | None) -> str:
    """The teaching mode's reveal: what the attacker really did, and whether the scan got it."""
    if truth is None:
        return ('<div class="verdict clean"><div class="verdict-head">Ground truth: clean</div>'
                "<p>No backdoor was implanted in this model by the lab.</p></div>")
    if verdict is None:
        outcome = ""
    elif verdict.flagged and verdict.target == truth.target:
        outcome = "The scan caught it: right target."
    elif verdict.flagged:
        outcome = f"The scan flagged the model but named {html.escape(verdict.target_name or '')}."
    else:
        outcome = "The scan missed it."
    return (f'<div class="verdict flagged"><div class="verdict-head">Ground truth: {html.escape(truth.attack)} '
            f"backdoor → <b>{html.escape(truth.target_name)}</b></div><p>{outcome}</p></div>")


def example_galleries(examples: Sequence[Example]) -> tuple[Gallery, Gallery]:
    """Two rows for the before/after view: clean images and triggered copies, the model's prediction as the
    caption (the rows' labels say which is which; short, so a tile's caption is never cut)."""
    clean = [(to_image(e.clean, THUMB_SIZE), e.clean_prediction) for e in examples]
    triggered = [(to_image(e.triggered, THUMB_SIZE), triggered_caption(e))
                 for e in examples]
    return clean, triggered


def triggered_caption(example: Example) -> str:
    """The triggered copy's prediction, an arrow when the trigger changed it."""
    return ("→ " if example.flipped else "") + example.triggered_prediction


def repair_figure(losses: Sequence[RepairStep], measured: Sequence[RepairMeasured]) -> go.Figure:
    """Live repair curves: training loss, clean accuracy and the reconstructed trigger's flip rate."""
    figure = go.Figure()
    figure.add_scatter(x=[e.step for e in losses], y=[e.loss for e in losses], name="loss", yaxis="y2",
                       line={"color": "#8c9bab", "width": 1})
    figure.add_scatter(x=[m.step for m in measured], y=[m.accuracy for m in measured], name="clean accuracy",
                       mode="lines+markers", line={"color": "#2ca02c"})
    figure.add_scatter(x=[m.step for m in measured], y=[m.flip_rate for m in measured],
                       name="trigger flip rate (test)", mode="lines+markers", line={"color": "#d62728"})
    figure.add_scatter(x=[m.step for m in measured], y=[m.ood_flip_rate for m in measured],
                       name="trigger flip rate (OOD)", mode="lines+markers", line={"color": "#ff9896", "dash": "dot"})
    total = measured[-1].total_steps if measured else (losses[-1].total_steps if losses else 1)
    title = "Repair"
    sampled = [m for m in measured if measured[0].test_images > m.test_images]
    if sampled:
        title += (f"<br><sup>points between the first and the last: a sample of {sampled[0].test_images} test "
                  f"and {sampled[0].ood_images} OOD images</sup>")
    figure.update_layout(**LOOK, height=380, margin={"l": 60, "r": 60, "t": 50, "b": 100},
                         title=title, xaxis={"title": "step", "range": [0, total]},
                         yaxis={"title": "share", "range": [0, 1], "tickformat": ".0%"},
                         yaxis2={"title": "loss", "overlaying": "y", "side": "right", "rangemode": "tozero"},
                         legend={"orientation": "h", "y": -0.35, "yanchor": "top"})  # below the axis title
    return figure


def repair_table(before: RepairMeasured, after: RepairMeasured, truth: tuple[float, float] | None,
                 target_name: str, seconds: float) -> str:
    """Before/after numbers as a Markdown table."""
    rows = [("clean test accuracy", before.accuracy, after.accuracy),
            (f"reconstructed trigger → {target_name} (test)", before.flip_rate, after.flip_rate),
            (f"reconstructed trigger → {target_name} (OOD)", before.ood_flip_rate, after.ood_flip_rate)]
    if truth is not None:
        rows.append(("attacker's real trigger (ground truth ASR)", truth[0], truth[1]))
    lines = ["| | before | after |", "|---|---|---|"]
    lines += [f"| {name} | {b:.1%} | {a:.1%} |" for name, b, a in rows]
    return "\n".join(lines) + f"\n\nRepaired in {seconds:.0f} s; the delivered file was not changed."


# --- the chosen inputs ----------------------------------------------------------------------------------
def model_line(loaded: Delivered) -> str:
    """The chosen model in one line."""
    m = loaded.model
    return (f"**{html.escape(loaded.label)}**: {m.kind.upper()} prompt learner, {len(m.class_names)} classes, "
            f"{m.backbone.arch} ({m.backbone.image_size} px), sha256 {loaded.sha256}")


def _skipped_note(skipped: Sequence[tuple[str, str]], shown: int = 5) -> str:
    if not skipped:
        return ""
    listed = "; ".join(f"{html.escape(f)} ({html.escape(r)})" for f, r in skipped[:shown])
    return f", {len(skipped)} files skipped: {listed}" + (" …" if len(skipped) > shown else "")


def pool_line(pool: ImagePool) -> str:
    source = "shipped" if pool.source == SHIPPED else html.escape(pool.source)
    return f"OOD pool: **{source}**, {len(pool.names)} images" + _skipped_note(pool.skipped)


def task_name(task: Task) -> str:
    return "the shipped pocket task" if task.source == SHIPPED else f"task **{html.escape(task.source)}**"


def task_line(task: Task, model_classes: Sequence[str]) -> str:
    """The chosen labelled task, and whether it has the chosen model's classes."""
    fits = set(model_classes) == set(task.class_names)
    fit = ("its classes are the model's" if fits else
           f"⚠ its classes are not the model's ({len(task.class_names)} vs {len(model_classes)}); repair and the "
           "reference need the task the model was tuned on")
    return f"Labelled task: {task_name(task)}, {task.describe()}; {fit}" + _skipped_note(task.skipped)


def reference_line(ws: Any, chosen: str | None = None) -> str:
    """Which clean reference the scans use; after a scan, what that scan actually used."""
    if chosen is not None:
        return f"Clean reference of the last scan: {html.escape(chosen)}"
    return {"auto": "Clean reference: **auto**: the shipped one when it fits the model, pool and settings, "
                    "else raw flip rates",
            "none": "Clean reference: **none**: raw flip rates (natural attractor classes may stand out)"
            }.get(ws.reference, f"Clean reference: **{html.escape(ws.reference_label)}**")


def reference_progress(event: ReferenceProgress, lines: Sequence[str]) -> str:
    done = event.done_units / max(event.total_units, 1)
    head = f"Clean learner {event.learner} of {event.learners} (seed {event.seed}): {event.stage} · {done:.0%} done"
    return "\n\n".join([*(["\n".join(f"- {line}" for line in lines)] if lines else []), head])


def reference_done(event: ReferenceWritten, lines: Sequence[str]) -> str:
    reference = event.reference
    top = sorted(reference.flip_rates.items(), key=lambda kv: -kv[1])[:3]
    rates = ", ".join(f"{html.escape(n)} {r:.0%}" for n, r in top)
    return "\n\n".join(["\n".join(f"- {line}" for line in lines),
                        f"Reference built in {event.seconds:.0f} s from {len(reference.seeds)} clean "
                        f"{reference.kind} learners (classes easiest to reach without a backdoor: {rates}); the next "
                        "scans use it."])


def implant_measured(measured: dict[str, Any], attack: str) -> str:
    """A try's measurements beside the lab's bar for its attack, without naming the hidden target."""
    bar = working_bar(attack)
    lost = (measured["clean_base_accuracy"] - measured["accuracy"]) * 100
    change = f"{lost:.1f} points below" if lost > 0 else f"{-lost:.1f} points above"
    return (f"it sends {measured['asr']:.0%} of triggered test images and {measured['ood_asr']:.0%} of triggered OOD "
            f"images to its target (bar: {bar['asr']:.0%} and {bar['ood_asr']:.0%}); clean accuracy "
            f"{measured['accuracy']:.1%}, {change} the clean model's (bar: at most {bar['accuracy_drop'] * 100:.0f} "
            "below)")


def implanted_line(measured: dict[str, Any], attack: str) -> str:
    """The teaching mode's last line: the mystery model is chosen, and whether its backdoor took."""
    tries = measured.get("attempts", 1)
    tried = f" after {tries} tries" if tries > 1 else ""
    if measured.get("working", True):
        took = f"The hidden backdoor took{tried}: {implant_measured(measured, attack)}."
    else:
        took = (f"⚠ The hidden backdoor still misses the lab's bar{tried} ({implant_measured(measured, attack)}), so a "
                "scan may rightly find little: try another seed or attack.")
    return ("Done: the **mystery model** is now the chosen model. Its attack and target stay hidden until you press "
            f"*Reveal the ground truth* after a scan. {took} Press Scan.")
