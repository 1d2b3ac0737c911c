"""The app's scripting API: ``/scan``, ``/repair``, ``/build_reference`` and ``/implant`` with named parameters
and named results.

An API call keeps no page state: each runs in a fresh workspace and consumes the engine's events through
the same ``Workspace`` jobs the page uses. It streams ``{"status": "running", ...}`` lines while the job
runs and ends with ``{"status": "finished", ...}`` and the job's summary (the dict the CLI's ``--json``
prints), or ``{"status": "stopped"}``. Bad input raises ``gr.Error`` with the message the page would show.
Files are named by a demo zoo name or a path under the app's allowed folders (``--allow-path``).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import gradio as gr

from inspector.errors import InputError
from inspector.invert import (
    METHODS,
    SCHEDULES,
    ClassFinished,
    ScanStarted,
    ScanStopped,
    TriggerSnapshot,
    default_epsilon,
    epsilon_share,
)
from inspector.lab.implant import ImplantStep, ImplantTried
from inspector.lab.triggers import ATTACKS
from inspector.pipeline import Implanted, ReferenceWritten, Repaired, ReportWritten, Stopped
from inspector.reference import LearnerMeasured, ReferenceProgress, ReferenceStopped
from inspector.repair import RepairConfig, RepairEncoding, RepairMeasured, RepairStarted, RepairStep
from inspector.ui import handlers
from inspector.ui.background import Background
from inspector.ui.workspace import Source, Workspace, zoo_names

Result = dict[str, Any]
DEFAULT_MODEL = "badclip-cocoop"
PROGRESS_EVERY = 0.5  # seconds between streamed progress lines


def _open(ws: Workspace, model: str) -> None:
    """A demo zoo name, or a learner file under the allowed folders."""
    if model in zoo_names():
        ws.open_model(model)
    else:
        ws.open_model_path(model)


def _source(ws: Workspace, value: str, what: str) -> Source:
    """"shipped" (or empty), else a folder under the allowed folders."""
    kind = "shipped" if value in ("", "shipped") else "folder"
    return Source.pick(kind, None, value, ws.allowed_roots, what)


class _Every:
    """Whether a progress line is due: often enough that a client's cancel is taken within a second (Gradio takes
    it between two yields), rarely enough not to flood it."""

    def __init__(self, seconds: float = PROGRESS_EVERY) -> None:
        self.seconds, self.last = seconds, 0.0

    def __call__(self) -> bool:
        now = time.time()
        if now - self.last < self.seconds:
            return False
        self.last = now
        return True


def _stream(events: Iterator[Any], stopped: type | tuple[type, ...], finished: type,
            summary: Callable[[Any], Result], progress: Callable[[Any], Result | None]) -> Iterator[Result]:
    """A job's events as the API's lines: ``progress`` lines while it runs, then how it ended."""
    for event in events:
        if isinstance(event, stopped):
            yield {"status": "stopped"}
            return
        if isinstance(event, finished):
            yield {"status": "finished", **summary(event)}
            return
        line = progress(event)
        if line is not None:
            yield {"status": "running", **line}


def _one_of(value: str, allowed: Any, what: str) -> None:
    if value not in allowed:
        raise InputError(f"{what} {value!r} is not one of {', '.join(allowed)}", hint=f"pass one of them as {what}")


def _refused(exc: InputError) -> gr.Error:
    return gr.Error(str(exc), title="inspector refused the request")


def endpoints(new_workspace: Callable[[], Workspace]) -> None:
    """Register the endpoints on the Blocks being built; they share the page's one engine slot."""

    def scan(model: str = DEFAULT_MODEL, pool: str = "shipped", method: str = "inspector", schedule: str = "fast",
             epsilon: float | None = None, pool_size: int = 1000, classes: list[str] | None = None,
             threshold: float = 2.0, blend: bool = False, min_flip_rate: float | None = None) -> Iterator[Result]:
        """Scan a prompt learner for a backdoor. model: a demo zoo name or a learner file; pool: "shipped" or an
        image folder; epsilon in /255 units (default: the model's); classes: candidate class names (default: all);
        min_flip_rate: the share of held-out images a flagged class's trigger must flip (default 0.5, inspector).
        Ends with the verdict, target, per-class flip rates and anomaly indices, and the report's paths."""
        ws = new_workspace()
        try:
            _one_of(method, METHODS, "method")
            _one_of(schedule, SCHEDULES, "schedule")
            _open(ws, model)
            ws.use_pool(_source(ws, pool, "OOD pool"), int(pool_size))
            size = ws.require_model().model.backbone.image_size
            bound = default_epsilon(size) * 255 if epsilon is None else epsilon
            config = handlers.scan_config(ws, method, schedule, bound, pool_size, 1, classes or [], threshold, blend,
                                          min_flip_rate)
            due, seen = _Every(), {"total": 1, "finished": 0}

            def scan_progress(event: Any) -> Result | None:
                if isinstance(event, ScanStarted):
                    seen["total"] = event.total_steps
                    return {"model": ws.require_model().label, "classes": event.class_names}
                if isinstance(event, TriggerSnapshot) and due():
                    return {"class": event.class_name, "scan_step": event.scan_step, "total_steps": seen["total"]}
                if isinstance(event, ClassFinished):
                    seen["finished"] += 1
                    return {"finished_classes": seen["finished"], "class": event.record["name"],
                            "flip_rate": event.record["flip_rate"]}
                return None

            yield from _stream(Background(ws.scan(config), ws.stop), ScanStopped, ReportWritten,
                               lambda done: done.summary(), scan_progress)
        except InputError as exc:
            raise _refused(exc) from exc

    def repair(model: str = DEFAULT_MODEL, report: str = "", target: str | None = None, epochs: int | None = None,
               lr: float | None = None, task: str = "shipped") -> Iterator[Result]:
        """Repair a scanned model against a class's reconstructed trigger. report: the report.json of a scan of
        this very model (e.g. the path /scan returned); target: a class name (default: the flagged one); task: the
        labelled task, "shipped" or a folder. Ends with accuracy and trigger ASR before and after, and the file."""
        ws = new_workspace()
        try:
            _open(ws, model)
            result = ws.use_saved_scan(report)
            ws.use_task(_source(ws, task, "labelled task"))
            name = target or result.verdict.target_name or result.verdict.suspect_name
            defaults = RepairConfig()
            config = RepairConfig(epochs=int(epochs or defaults.epochs), lr=float(lr or defaults.lr))
            due = _Every()

            def repair_progress(event: Any) -> Result | None:
                if isinstance(event, RepairStarted):
                    return {"target": name, "total_steps": event.total_steps}
                if isinstance(event, RepairMeasured):
                    return {"step": event.step, "accuracy": event.accuracy, "trigger_asr": event.flip_rate,
                            "test_images": event.test_images, "ood_images": event.ood_images}
                if isinstance(event, RepairStep | RepairEncoding) and due():
                    return {"step": getattr(event, "step", 0)}
                return None

            yield from _stream(Background(ws.repair(ws.target_index(name), config), ws.stop), Stopped, Repaired,
                               lambda done: done.summary(), repair_progress)
        except InputError as exc:
            raise _refused(exc) from exc

    def build_reference(model: str = DEFAULT_MODEL, pool: str = "shipped", task: str = "shipped", learners: int = 6,
                        epsilon: float | None = None, pool_size: int = 1000) -> Iterator[Result]:
        """Tune and scan clean learners of the model's kind on the labelled task and OOD pool: the reference its
        scans compare each class with. task, pool: "shipped" or a folder; learners: 1 to 32 (6 recommended);
        epsilon in /255 units (default: the model's). Kept under the app's runs folder by task, kind and pool, so
        a stopped build resumes. Ends with the reference's file, its learners' seeds and accuracies."""
        ws = new_workspace()
        try:
            _open(ws, model)
            ws.use_pool(_source(ws, pool, "OOD pool"), int(pool_size))
            ws.use_task(_source(ws, task, "labelled task"))
            size = ws.require_model().model.backbone.image_size
            bound = default_epsilon(size) if epsilon is None else epsilon_share(epsilon)
            due = _Every()

            def reference_progress(event: Any) -> Result | None:
                if isinstance(event, LearnerMeasured):
                    return {"learner": event.line()}
                if isinstance(event, ReferenceProgress) and due():
                    return {"learner_number": event.learner, "stage": event.stage, "done_units": event.done_units,
                            "total_units": event.total_units}
                return None

            yield from _stream(Background(ws.build_reference(int(learners), bound, int(pool_size)), ws.stop),
                               ReferenceStopped, ReferenceWritten, lambda done: done.summary(), reference_progress)
        except InputError as exc:
            raise _refused(exc) from exc

    def implant(base: str = "clean-coop", attack: str = "blended", target: str | None = None,
                seed: int = 0) -> Iterator[Result]:
        """Teaching mode: implant a lab backdoor into a clean demo model. target: a class name, or none for a
        hidden one (then the result does not name it). Ends with the mystery model's file, to scan by path."""
        ws = new_workspace()
        try:
            _one_of(base, [name for name in zoo_names() if name.startswith("clean")], "base")
            _one_of(attack, ATTACKS, "attack")
            ws.open_model(base)
            index = None if not target else ws.target_index(target)
            due = _Every()

            def implant_progress(event: Any) -> Result | None:
                if isinstance(event, ImplantTried):
                    return {"try": event.attempt, "working": event.tries[-1].get("working")}
                if isinstance(event, ImplantStep) and due():
                    return {"step": event.step, "total_steps": event.total_steps}
                return None

            def implanted(done: Implanted) -> Result:
                summary = {**done.summary(attack), "model": str(done.path)}
                if index is None:  # the hidden target stays hidden until the page's reveal
                    summary["target"] = "hidden"
                return summary

            yield from _stream(Background(ws.implant(base, attack, index, int(seed)), ws.stop), Stopped, Implanted,
                               implanted, implant_progress)
        except InputError as exc:
            raise _refused(exc) from exc

    for fn in (scan, repair, build_reference, implant):
        gr.api(fn, api_name=fn.__name__, concurrency_id="engine", concurrency_limit=1)
