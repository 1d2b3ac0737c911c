"""What each button does: engine events in, component updates out (STYLE: no numerics here).

Every handler takes the browser's ``Workspace`` first and yields ``{component name: value}``
dicts; ``layout.wire`` turns them into Gradio outputs (names not yielded stay as they are). Long
handlers are generators, so the page updates while the engine runs. Bad input never raises into
Gradio: it becomes a visible message naming what is wrong and what to do.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterator
from typing import Any

import gradio as gr

from inspector.errors import InputError
from inspector.invert import (
    ClassEstimate,
    ClassFinished,
    ScanConfig,
    ScanFinished,
    ScanStarted,
    ScanStopped,
    TriggerSnapshot,
    default_epsilon,
    epsilon_share,
    parse_classes,
)
from inspector.lab.implant import ImplantFinished, ImplantStep, ImplantTried
from inspector.pipeline import Implanted, ReferenceChosen, ReferenceWritten, Repaired, ReportWritten, Stopped
from inspector.reference import LearnerMeasured, ReferenceProgress, ReferenceStopped
from inspector.repair import RepairConfig, RepairEncoding, RepairMeasured, RepairStarted, RepairStep
from inspector.ui import views
from inspector.ui.background import Background
from inspector.ui.stages import Handover
from inspector.ui.workspace import Source, Workspace, settings_key

Updates = dict[str, Any]
SURPRISE = "surprise me (hidden)"
UPDATE_EVERY = 0.5  # seconds between live picture updates: two a second, each sent (and drawn) costs the engine CPU
BARS_EVERY = 1.5  # seconds between redraws of the live bar chart (heavier for the browser than a picture)
log = logging.getLogger("inspector.ui")


def problem(message: str) -> str:
    return f'<div class="problem">⚠ {message}</div>'


def guarded(fn: Callable[..., Iterator[Updates]], message_to: str) -> Callable[..., Iterator[Updates]]:
    """Bad input -> a message in ``message_to`` (and a toast), never a traceback in the page."""

    def run(*args: Any) -> Iterator[Updates]:
        try:
            yield from fn(*args)
        except InputError as exc:
            gr.Warning(str(exc))
            yield {message_to: problem(str(exc).replace("\n", "<br>")), **idle_buttons(args[0])}
        except Exception as exc:  # an engine bug must not take the app down with it
            log.exception("handler %s failed", fn.__name__)
            yield {message_to: problem(f"internal error ({type(exc).__name__}: {exc}); the app is still usable"),
                   **idle_buttons(args[0])}

    run.__name__ = fn.__name__
    return run


JOB_BUTTONS = ("scan_button", "implant_button", "reference_button")
STOP_BUTTONS = ("stop_button", "reference_stop", "repair_stop", "implant_stop")


def idle_buttons(ws: Workspace) -> Updates:
    has_result = ws is not None and ws.result is not None
    return {**{name: gr.update(interactive=True) for name in JOB_BUTTONS},
            **{name: gr.update(interactive=False) for name in STOP_BUTTONS},
            "repair_button": gr.update(interactive=has_result)}


def busy_buttons() -> Updates:
    return {**{name: gr.update(interactive=False) for name in (*JOB_BUTTONS, "repair_button")},
            **{name: gr.update(interactive=True) for name in STOP_BUTTONS}}


# --- choosing the model and pool ------------------------------------------------------------------------
def choose_model(ws: Workspace, source: str, zoo_name: str | None, upload: str | None, path: str | None,
                 weights: str | None = None, require: bool = False) -> Iterator[Updates]:
    """Open the chosen model and fit the class lists and the default epsilon to it. A source switched to an
    upload or a path with nothing given yet keeps the model chosen so far, and says so (not an error yet)."""
    waiting = None if require or ws.loaded is None else _awaiting_model(ws, source, upload, path)
    if waiting:
        yield {"model_info": waiting}
        return
    if source == "demo zoo":
        if not zoo_name:
            raise InputError("no demo model picked", hint="pick one in the list")
        loaded = ws.open_model(zoo_name, weights=weights)
    elif source == "upload":
        if not upload:
            raise InputError("no model file uploaded", hint="drop a .safetensors prompt learner on the upload box")
        loaded = ws.open_upload(upload, weights=weights)
    else:
        loaded = ws.open_model_path(path or "", weights=weights)
    yield model_updates(ws)
    del loaded


def _awaiting_model(ws: Workspace, source: str, upload: str | None, path: str | None) -> str | None:
    kept = f"until then **{ws.require_model().label}** stays the chosen model"
    if source == "upload" and not upload:
        return f"Model: drop a .safetensors prompt learner on the box above; {kept}."
    if source == "path" and not (path or "").strip():
        return f"Model: type the file's path above and press Enter; {kept}."
    return None


# What the page shows of the last scan and of its repair: cleared when another model is chosen, so that no result
# stands next to a model it was not computed for (the workspace keeps them; choosing the scanned model again
# brings nothing back, a new scan does).
SCAN_VIEWS: Updates = {"progress": "", "trigger_picture": None, "trigger_true": None, "trigger_caption": "",
                       "verdict": "", "truth": "", "clean_examples": None, "triggered_examples": None,
                       "report_files": None, "effects_heatmap": None, "effects_map": None, "effects_status": ""}
REPAIR_VIEWS: Updates = {"repair_status": "", "repair_plot": None, "repair_table": "", "repaired_file": None}


def stale_views(ws: Workspace) -> Updates:
    """The result panels as they may stand beside what is chosen now: blank when another model is chosen than
    the one they were computed for; marked, with what changed, when its pool, reference or scan settings were
    changed since (the model is the same, the numbers are not the ones a scan would give now)."""
    if ws.scanned is not None and ws.scanned is not ws.loaded:
        return {**SCAN_VIEWS, **REPAIR_VIEWS, "result_stamp": "", "class_picker": gr.update(choices=[], value=None),
                "reveal_button": gr.update(visible=False), "load_repaired": gr.update(visible=False),
                "repair_button": gr.update(interactive=False)}
    if ws.result is None or ws.live is not None or ws.scanned is None:
        return {}
    changes = ws.stale_since_scan()
    return {"result_stamp": views.stale_stamp(changes, ws.scanned.label),
            "verdict": views.verdict_html(ws.result.verdict, ws.result, ws.scanned.label, stale=bool(changes),
                                          report_threshold=ws.scan_threshold)}


def repair_stamp(ws: Workspace) -> Updates:
    """A repair shown beside another labelled task than the one it was made on is marked."""
    if not ws.repair_is_stale():
        return {}
    return {"repair_status": problem("The repair below was trained and measured on another labelled task than the "
                                     "one chosen now: press Repair again to repair on this one.")}


def model_updates(ws: Workspace) -> Updates:
    loaded = ws.require_model()
    names = list(loaded.model.class_names)
    epsilon = round(default_epsilon(loaded.model.backbone.image_size) * 255, 1)
    try:
        task_info = views.task_line(ws.require_task(), names)
    except InputError as exc:  # a chosen task that cannot be read at this model's size
        task_info = problem(str(exc))
    return {"model_info": views.model_line(loaded), "classes": gr.update(choices=names, value=[]),
            "repair_target": gr.update(choices=names, value=None),
            "teach_target": gr.update(choices=[SURPRISE, *names]),
            "epsilon": gr.update(value=epsilon), "state": ws, "task_info": task_info,
            "reference_info": views.reference_line(ws),
            # the empty chart now, so the browser has its plotting code ready before the scan needs the CPU
            "bars": views.live_bars(names, [], ScanConfig(), ws.view), **stale_views(ws), **picture_views(ws)}


SOURCES = {"shipped OOD pool": "shipped", "shipped pocket task": "shipped", "upload a zip": "upload",
           "folder path": "folder"}


def _awaiting(kind: str, upload: str | None, folder: str | None, what: str) -> str | None:
    """What to do next when a radio asks for an upload or a path that is not given yet (not an error yet)."""
    if SOURCES[kind] == "upload" and not upload:
        return f"{what}: drop a .zip on the box above"
    if SOURCES[kind] == "folder" and not (folder or "").strip():
        return f"{what}: type the folder's path above and press Enter"
    return None


def choose_pool(ws: Workspace, kind: str, upload: str | None, folder: str | None,
                pool_size: float = 1000, require: bool = False) -> Iterator[Updates]:
    waiting = None if require else _awaiting(kind, upload, folder, "OOD pool")
    if waiting:
        yield {"pool_info": waiting}
        return
    source = Source.pick(SOURCES[kind], upload, folder, ws.allowed_roots, "OOD pool")
    pool = ws.use_pool(source, int(pool_size))
    yield {"pool_info": views.pool_line(pool), "reference_info": views.reference_line(ws), "state": ws,
           **stale_views(ws)}


def choose_task(ws: Workspace, kind: str, upload: str | None, folder: str | None,
                require: bool = False) -> Iterator[Updates]:
    """The labelled task for repair and the clean reference (the shipped pocket task by default)."""
    waiting = None if require else _awaiting(kind, upload, folder, "Labelled task")
    if waiting:
        yield {"task_info": waiting}
        return
    source = Source.pick(SOURCES[kind], upload, folder, ws.allowed_roots, "labelled task")
    task = ws.use_task(source)
    yield {"task_info": views.task_line(task, ws.require_model().model.class_names), "state": ws, **repair_stamp(ws)}


def choose_reference(ws: Workspace, choice: str, upload: str | None) -> Iterator[Updates]:
    ws.use_reference(REFERENCE_CHOICES[choice], upload)
    yield {"reference_info": views.reference_line(ws), "state": ws, **stale_views(ws)}


REFERENCE_CHOICES = {"auto (the shipped one when it fits)": "auto", "none (raw flip rates)": "none",
                     "upload a reference": "upload", "the one built here": "built"}


# --- scan -----------------------------------------------------------------------------------------------
def scan_config(ws: Workspace, method: str, schedule: str, epsilon: float, pool_size: float, epochs: float,
                classes: list[str], threshold: float, blend: bool = False,
                min_flip_rate: float | None = None) -> ScanConfig:
    """The page's settings as the engine's; ``min_flip_rate`` (a share) applies to the inspector method only, the
    baselines have no such test."""
    names = ws.require_model().model.class_names
    return ScanConfig(method=method, schedule=schedule, epsilon=epsilon_share(epsilon), pool_size=int(pool_size),
                      epochs=int(epochs), classes=parse_classes(list(classes or []), names), threshold=float(threshold),
                      blend=True if blend else None, min_flip_rate=_min_flip_rate(method, min_flip_rate))


def _min_flip_rate(method: str, value: float | None) -> float | None:
    return None if value is None or method != "inspector" else float(value)


def settings_changed(ws: Workspace, method: str, schedule: str, epsilon: float, pool_size: float, epochs: float,
                     classes: list[str], blend: bool) -> Iterator[Updates]:
    """A scan setting moved: the shown results are marked when they were computed with other settings."""
    try:
        ws.chosen_settings = settings_key(scan_config(ws, method, schedule, epsilon, pool_size, epochs, classes,
                                                      ScanConfig.threshold, blend))
    except InputError:  # a setting the next Scan will refuse: what is shown is not what would be scanned
        ws.chosen_settings = ("not valid",)
    yield stale_views(ws)


def rethreshold(ws: Workspace, threshold: float, view: str, min_flip_rate: float | None = None) -> Iterator[Updates]:
    """The finished scan decided again at the new threshold and minimum flip rate, at once (the engine's rule on
    the same records)."""
    if ws.result is None or ws.live is not None or ws.scanned is not ws.loaded:
        return  # nothing finished to decide again; the next scan uses the threshold
    ws.view = view
    result = ws.redecide(threshold, _min_flip_rate(ws.result.settings.method, min_flip_rate))
    candidates = sorted(int(c["index"]) for c in result.classes)
    yield {**stale_views(ws), "bars": views.live_bars(result.class_names, result.classes, result.settings, view,
                                                      result.verdict, candidates),
           "repair_target": gr.update(value=result.verdict.target_name or result.verdict.suspect_name)}


def run_scan(ws: Workspace, method: str, schedule: str, epsilon: float, pool_size: float, epochs: float,
             classes: list[str], threshold: float, blend: bool, view: str,
             min_flip_rate: float | None = None) -> Iterator[Updates]:
    """Scan, streaming the evolving trigger, the progress line and the bars; then the verdict and the report."""
    ws.view = view
    loaded = ws.require_model()
    config = scan_config(ws, method, schedule, epsilon, pool_size, epochs, classes, threshold, blend, min_flip_rate)
    yield {**busy_buttons(), "progress": f"Scanning **{loaded.label}** …", "verdict": "", "truth": "",
           "result_stamp": "", "reveal_button": gr.update(visible=False), "clean_examples": None,
           "effects_heatmap": None, "effects_map": None, "effects_status": "",
           **REPAIR_VIEWS, "load_repaired": gr.update(visible=False), "triggered_examples": None,
           "report_files": None, "state": ws}
    yield Handover()
    started = time.time()  # the engine starts now: a wait for the engine slot is not the scan's time
    records: list[dict[str, Any]] = []
    estimates: dict[int, ClassEstimate] = {}  # classes still running: their flip rate so far
    settings = config
    candidates: list[int] = []
    total_steps = 1
    last_picture = last_bars = last_sent = 0.0
    pictures = 0
    bars_due = True  # the chart is drawn after the first trigger picture and at most every BARS_EVERY s:
    # drawing it costs the browser CPU that the engine needs on a small laptop
    every_class_drawn = False  # the first chart with an estimate for every class is drawn at once
    held_picture: TriggerSnapshot | None = None  # the newest picture the throttle kept back
    pending: Updates = {}  # updates not sent yet: one update covers a burst of queued events
    events = Background(ws.scan(config), ws.stop)
    for event in events.ticking(UPDATE_EVERY):
        now = time.time()
        updates: Updates = {}
        if isinstance(event, ReferenceChosen):
            updates["reference_info"] = views.reference_line(ws, event.line)
        elif isinstance(event, ScanStarted):
            settings, candidates, total_steps = event.settings, event.classes, event.total_steps
            ws.live = (records, settings, candidates, estimates)
            updates["progress"] = views.started_line(loaded.label, event)
        elif isinstance(event, TriggerSnapshot):
            held_picture = event
        elif isinstance(event, ClassEstimate):
            estimates[event.class_index] = event
            bars_due = True
        elif isinstance(event, ClassFinished):
            records.append(event.record)
            bars_due = True
        elif isinstance(event, ScanStopped):
            ws.live = None
            yield {**pending, **idle_buttons(ws), "verdict": views.stopped_html(len(event.finished), len(candidates),
                                                                                 event.seconds),
                   "progress": f"Stopped after {len(event.finished)} of {len(candidates)} classes.", "state": ws}
            return
        elif isinstance(event, ScanFinished):
            ws.live = None
            result = event.result
            yield {**pending, "bars": views.live_bars(result.class_names, result.classes, result.settings, ws.view,
                                                      result.verdict, candidates),
                   "verdict": views.verdict_html(result.verdict, result, loaded.label),
                   "steps": gr.Tabs(selected="inspect"),  # with the verdict: its images come to that tab next
                   "progress": f"Scan finished in {result.seconds:.0f} s; writing the report …"}
            pending, held_picture = {}, None
            continue
        elif isinstance(event, ReportWritten):
            yield from finished_scan(ws, candidates)
            return
        if held_picture is not None and now - last_picture >= UPDATE_EVERY:
            last_picture, pictures = now, pictures + 1
            updates.update(picture_update(held_picture, total_steps, started, now))
            held_picture = None
        pending.update(updates)
        if events.waiting and now - last_sent < UPDATE_EVERY:
            continue  # more events queued: one update for all of them
        every_class = not every_class_drawn and _every_class_estimated(candidates, estimates, records)
        if (bars_due and pictures > ("trigger_picture" in pending)
                and (now - last_bars >= BARS_EVERY or every_class)):
            pending["bars"] = views.live_bars(loaded.model.class_names, records, settings, ws.view, None, candidates,
                                              estimates)
            bars_due, last_bars, every_class_drawn = False, now, every_class_drawn or every_class
        if pending:
            yield pending
            pending, last_sent = {}, now


def picture_update(event: TriggerSnapshot, total_steps: int, started: float, now: float) -> Updates:
    """A trigger snapshot as the page shows it: the amplified and true-scale pictures, caption and progress."""
    return {"trigger_picture": views.to_image(event.picture), "trigger_true": views.to_image(event.true_scale),
            "trigger_caption": f"Trigger for **{event.class_name}** (amplified · true scale), step "
                               f"{event.step}/{event.steps}",
            "progress": views.snapshot_line(event, total_steps, started, now)}


def _every_class_estimated(candidates: list[int], estimates: dict[int, ClassEstimate],
                           records: list[dict[str, Any]]) -> bool:
    """Whether every scanned class has an estimate or a finished record, so the chart can show them all."""
    shown = set(estimates) | {int(r["index"]) for r in records}
    return bool(candidates) and shown.issuperset(candidates)


def finished_scan(ws: Workspace, candidates: list[int]) -> Iterator[Updates]:
    result = ws.require_result()
    verdict = result.verdict
    scanned_names = [result.class_names[k] for k in candidates]
    focus = result.class_names[verdict.suspect]
    ws.inspected, ws.open_view = focus, "inspect"  # the finished scan opens the Inspect tab
    yield {**idle_buttons(ws), **class_view(ws, focus), **compare_choices(ws), **picture_views(ws),
           "class_picker": gr.update(choices=scanned_names, value=focus),
           "repair_target": gr.update(value=verdict.target_name or focus),
           "report_files": ws.report_files(),
           "reveal_button": gr.update(visible=ws.mystery is not None and ws.scanned is not None
                                      and ws.scanned.path == ws.mystery),
           "progress": f"Scan finished in {result.seconds:.0f} s · report in {ws.run_dir}", "state": ws}


def stop(ws: Workspace, where: str = "progress") -> Iterator[Updates]:
    """Ask the running scan / repair / implant / reference build to stop at its next step."""
    if ws is not None:
        ws.stop.set()
    yield {where: "Stopping …"}


def stopper(where: str) -> Callable[[Workspace], Iterator[Updates]]:
    """The Stop button beside a job: its message goes to that job's status line."""

    def stop_job(ws: Workspace) -> Iterator[Updates]:
        yield from stop(ws, where)

    stop_job.__name__ = f"stop_{where}"
    return stop_job


def redraw_bars(ws: Workspace, view: str) -> Iterator[Updates]:
    """Switch the chart between flip rate and anomaly index (mid-scan too)."""
    ws.view = view
    if ws.result is not None and ws.live is None:
        result = ws.result
        candidates = [int(c["index"]) for c in result.classes]
        yield {"bars": views.live_bars(result.class_names, result.classes, result.settings, view, result.verdict,
                                       sorted(candidates))}
    elif ws.live is not None:
        records, settings, candidates, estimates = ws.live
        yield {"bars": views.live_bars(ws.require_model().model.class_names, records, settings, view, None,
                                       candidates, estimates)}


def class_view(ws: Workspace, name: str | None) -> Updates:
    """One class's reconstructed trigger and the before/after images under it."""
    result = ws.require_result()
    if not name:
        return {}
    k = result.class_names.index(name)
    trigger = result.trigger(k)
    record = result.record(k)
    clean, triggered = views.example_galleries(ws.examples(k))
    family = result.family(k)
    on = views.measured_images(record, family)
    if family == "colour":  # the picture is the colour transform's, so is the rate beside it
        shown = (f"Colour-transform trigger for **{name}** (applied to a colour chart): flips "
                 f"{record['colour_flip_rate']:.0%} of {on}")
    elif family == "blend":
        shown = (f"Blended-pattern trigger for **{name}** (the pattern · mixed into mid-grey at its opacity): flips "
                 f"{record['blend_flip_rate']:.0%} of {on}")
    elif family == "patch":
        shown = (f"Patch trigger for **{name}** (the patch · shown in the middle of mid-grey; the scan pastes it at a "
                 f"random place in each image): flips {record['patch_flip_rate']:.0%} of {on}")
    else:
        shown = f"Trigger for **{name}** (amplified · true scale): flips {record['flip_rate']:.0%} of {on}"
    return {"trigger_picture": views.to_image(trigger.picture()), "trigger_true": views.to_image(trigger.true_scale()),
            "trigger_caption": shown,
            "clean_examples": clean, "triggered_examples": triggered}


def pick_class(ws: Workspace, name: str | None) -> Iterator[Updates]:
    """Another class inspected: its trigger and images, and the open analyst view follows it."""
    ws.inspected = name
    yield {**class_view(ws, name), **picture_views(ws)}
    if ws.open_view == "effects":
        yield from show_effects(ws)


def reveal(ws: Workspace) -> Iterator[Updates]:
    """Teaching mode: show what the attacker really did, after the verdict; from then on the user's picture is
    also shown with the attacker's real trigger."""
    result = ws.require_result()
    assert ws.scanned is not None
    ws.revealed = ws.scanned.path
    yield {"truth": views.truth_html(ws.scanned.truth, result.verdict), **picture_views(ws)}


# --- the analyst's views --------------------------------------------------------------------------------
def opened(view: str) -> Callable[[Workspace], Iterator[Updates]]:
    """A tab was opened: the trigger-effects tab computes its views for the inspected class then (they take a
    few seconds, so a scan never waits for them)."""

    def open_tab(ws: Workspace) -> Iterator[Updates]:
        ws.open_view = view
        if view == "effects":
            yield from show_effects(ws)

    open_tab.__name__ = f"open_{view}"
    return open_tab


def show_effects(ws: Workspace) -> Iterator[Updates]:
    """Where the inspected class's trigger sends the held-out OOD images, and the features moving with it."""
    if ws.result is None or ws.scanned is not ws.loaded or not ws.inspected:
        yield {"effects_status": "Scan the model first: these views show what a class's reconstructed trigger does "
                                 "to the scan's held-out OOD images.", "effects_heatmap": None, "effects_map": None}
        return
    name = ws.inspected
    yield {"effects_status": f"Measuring **{name}**'s trigger on the held-out OOD images …"}
    moved, features = ws.trigger_effects(ws.result.class_names.index(name))
    heatmap, plane = views.effect_figures(moved, features)
    clean, triggered = features.distance_to_class()
    yield {"effects_heatmap": heatmap, "effects_map": plane,
           "effects_status": views.effects_line(name, moved, clean, triggered)}


def try_picture(ws: Workspace, path: str | None) -> Iterator[Updates]:
    """The user's own picture: the model's top classes without and with the inspected class's trigger."""
    if not path:
        ws.picture = None
        yield {"picture_tiles": "", "picture_plot": None, "picture_status": ""}
        return
    ws.use_picture(path)
    yield picture_views(ws)


def picture_views(ws: Workspace) -> Updates:
    """The probe of the user's picture on the chosen model now ({} when there is no picture)."""
    if ws.picture is None or ws.loaded is None:
        return {}
    result = ws.result if ws.scanned is ws.loaded else None
    k = result.class_names.index(ws.inspected) if result is not None and ws.inspected in result.class_names else None
    probes = ws.probe_picture(k)
    tiles, figure = views.probe_views(probes, ws.inspected)
    return {"picture_tiles": tiles, "picture_plot": figure,
            "picture_status": views.picture_line(ws.picture[0], ws.loaded.label, probes, ws.inspected,
                                                 result is not None)}


def compare_choices(ws: Workspace) -> Updates:
    """The comparison's pickers offer this session's finished scans; the last two are compared at once."""
    names = [entry.name for entry in ws.history]
    if len(names) < 2:
        return {"compare_a": gr.update(choices=names, value=names[0] if names else None),
                "compare_b": gr.update(choices=names, value=None),
                "compare_status": "Finish a second scan (another model, or the repaired one) to compare two scans."}
    return {"compare_a": gr.update(choices=names, value=names[-2]),
            "compare_b": gr.update(choices=names, value=names[-1]),
            **_compared(ws, names[-2], names[-1], ws.view)}


def compare_scans(ws: Workspace, first: str | None, second: str | None, view: str) -> Iterator[Updates]:
    if not first or not second:
        raise InputError("pick two finished scans to compare", hint="each list offers this session's scans")
    yield _compared(ws, first, second, view)


def _compared(ws: Workspace, first: str, second: str, view: str) -> Updates:
    entries = [ws.scan_named(first), ws.scan_named(second)]
    return {"compare_plot": views.compare_figure(entries, view), "compare_status": views.compare_line(entries)}


# --- repair ---------------------------------------------------------------------------------------------
def run_repair(ws: Workspace, target_name: str | None, epochs: float, lr: float) -> Iterator[Updates]:
    """Repair against one class's reconstructed trigger, with live curves, then the numbers and the file."""
    result = ws.require_result()
    if not target_name:
        raise InputError("no class chosen to repair against", hint="pick the flagged class (or any scanned class)")
    target = result.class_names.index(target_name)
    config = RepairConfig(epochs=int(epochs), lr=float(lr))
    task = ws.require_task()
    yield {**busy_buttons(), "repair_status": f"Repairing against **{target_name}**'s trigger on "
                                              f"{views.task_name(task)}: encoding the labelled images …",
           "repaired_file": None, "repair_table": ""}
    yield Handover()
    losses: list[RepairStep] = []
    measured: list[RepairMeasured] = []
    last = 0.0
    total_steps = 0
    for event in Background(ws.repair(target, config), ws.stop):
        now = time.time()
        if isinstance(event, RepairStarted):
            total_steps = event.total_steps
        elif isinstance(event, RepairEncoding):
            done = event.view == event.views
            yield {"repair_status": f"Repairing against **{target_name}**'s trigger: "
                                    + ("measuring the model before repair" if done else
                                       f"encoding {event.images} labelled images, clean and triggered: view "
                                       f"{event.view} of {event.views}")
                                    + f" ({total_steps} steps to go, {event.seconds:.0f} s so far)"}
        elif isinstance(event, RepairStep):
            losses.append(event)
            if now - last < 0.5:
                continue
            last = now
            yield {"repair_plot": views.repair_figure(losses, measured),
                   "repair_status": f"Repairing: step {event.step}/{event.total_steps}, loss {event.loss:.3f}"}
        elif isinstance(event, RepairMeasured):
            measured.append(event)
            yield {"repair_plot": views.repair_figure(losses, measured)}
        elif isinstance(event, Stopped):
            yield {**idle_buttons(ws), "repair_status": "Repair stopped; nothing was written."}
            return
        elif isinstance(event, Repaired):
            finished = event.finished
            yield {**idle_buttons(ws), "repair_plot": views.repair_figure(losses, measured),
                   "repair_table": views.repair_table(finished.before, finished.after, event.truth_asr, target_name,
                                                      finished.seconds),
                   "repaired_file": str(event.path), "load_repaired": gr.update(visible=True),
                   "repair_status": f"Repaired model ({config.epochs} epochs, {finished.after.step} steps, "
                                    f"lr {config.lr:g}, on {views.task_name(task)}) written to {event.path}",
                   "state": ws}
            return
    yield {**idle_buttons(ws), "repair_status": "Repair stopped; nothing was written."}


# --- the clean reference --------------------------------------------------------------------------------
def run_reference_build(ws: Workspace, learners: float, epsilon: float, pool_size: float) -> Iterator[Updates]:
    """Build a clean reference for the chosen model's task, kind and pool, live; it becomes the one scans use."""
    bound = epsilon_share(epsilon)
    task = ws.require_task()
    yield {**busy_buttons(), "reference_status": f"Building a clean reference on {views.task_name(task)} …"}
    yield Handover()
    lines: list[str] = []
    for event in Background(ws.build_reference(int(learners), bound, int(pool_size)), ws.stop):
        if isinstance(event, ReferenceProgress):
            yield {"reference_status": views.reference_progress(event, lines)}
        elif isinstance(event, LearnerMeasured):
            lines.append(event.line())
            yield {"reference_status": "\n".join(f"- {line}" for line in lines)}
        elif isinstance(event, ReferenceStopped):
            yield {**idle_buttons(ws), "reference_status": f"Stopped: {event.measured} learner(s) finished and kept; "
                                                           "Build reference again resumes from there."}
            return
        elif isinstance(event, ReferenceWritten):
            yield {**idle_buttons(ws), "reference_choice": "the one built here",
                   "reference_status": views.reference_done(event, lines),
                   "reference_info": views.reference_line(ws), "state": ws}
            return


def load_repaired(ws: Workspace) -> Iterator[Updates]:
    """Make the repaired model the chosen one, to scan it again."""
    if ws.repaired is None:
        raise InputError("no repaired model yet", hint="press Repair first")
    scanned_label = ws.scanned.label if ws.scanned is not None else "model"
    ws.open_model(str(ws.repaired.path), label=f"{scanned_label} (repaired)")
    updates = {key: value for key, value in model_updates(ws).items() if key not in REPAIR_VIEWS}  # its own repair
    yield {**updates, "model_source": "path", "model_path": str(ws.repaired.path)}


# --- teaching mode --------------------------------------------------------------------------------------
IMPLANT_PHASES = {"trigger": "Optimising the SIBA trigger on the clean model", "poison": "Implanting",
                  "narrow": "Narrowing the trigger (only the exact one may work)"}


def run_implant(ws: Workspace, base: str, attack: str, target: str, seed: float) -> Iterator[Updates]:
    """Implant a backdoor into a clean demo model; the mystery model becomes the chosen one."""
    names = list(ws.open_model(base).model.class_names)
    target_index = None if target in (None, "", SURPRISE) else names.index(target)
    yield {**busy_buttons(), "teach_status": f"Implanting a {attack} backdoor into {base} …"}
    yield Handover()
    last = 0.0
    attempt, tried = 1, ""
    for event in Background(ws.implant(base, attack, target_index, int(seed)), ws.stop):
        now = time.time()
        if isinstance(event, ImplantStep) and now - last >= UPDATE_EVERY:
            last = now
            sent = "" if math.isnan(event.poisoned_accuracy) else \
                f", triggered images already sent to the target: {event.poisoned_accuracy:.0%}"
            yield {"teach_status": f"{tried}{IMPLANT_PHASES.get(event.phase, 'Implanting')}"
                                   f"{f' (try {attempt})' if attempt > 1 else ''}: step {event.step}/"
                                   f"{event.total_steps}, loss {event.loss:.3f}{sent}"}
        elif isinstance(event, ImplantFinished):
            yield {"teach_status": f"{tried}Backdoor trained in {event.seconds:.0f} s; measuring it on the test "
                                   "images …"}
        elif isinstance(event, ImplantTried) and event.change is not None:
            again = "another hidden target" if "target" in event.change else "a heavier or lighter poison"
            tried = (f"Try {event.attempt} missed the lab's bar ({views.implant_measured(event.tries[-1], attack)}); "
                     f"trying again with {again}.<br>")
            attempt = event.attempt + 1
            yield {"teach_status": tried}
        elif isinstance(event, Stopped):
            yield {**idle_buttons(ws), "teach_status": "Implant stopped; nothing was written."}
            return
        elif isinstance(event, Implanted):
            assert ws.loaded is not None
            yield {**idle_buttons(ws), **model_updates(ws), "model_source": "path", "model_path": str(ws.loaded.path),
                   "teach_status": views.implanted_line(event.measured, attack)}
            return
