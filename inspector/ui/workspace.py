"""One browser's work in the app: what it chose (model, OOD pool, labelled task, clean reference) and what
its jobs produced (scan, repair, reference, implant).

No Gradio here and no workflow either: every job is ``inspector.pipeline``'s, started with this
browser's inputs and stop flag, so the CLI and the page run exactly the same steps. Files the user
names are read only under the app's allowed roots; everything the app writes goes to a fresh run
folder under ``runs_root``; the model file the user delivered is never written.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from inspector.backbone import shared_backbone
from inspector.data import SHIPPED, ImagePool, Task, load_shipped_pool
from inspector.effects import FeatureMap, Probe, Transitions, feature_map, probe, transitions
from inspector.errors import InputError
from inspector.examples import Example, before_after
from inspector.invert import ClassEstimate, ScanConfig, ScanFinished, ScanResult, class_index
from inspector.lab.implant import IMPLANT_ATTEMPTS, ImplantConfig
from inspector.pipeline import (
    Delivered,
    Implanted,
    ImplantJobEvent,
    ReferenceWritten,
    Repaired,
    RepairJobEvent,
    ReportWritten,
    ScanJobEvent,
    implant_job,
    open_delivered,
    open_pool,
    open_task_for,
    pool_of,
    reference_job,
    repair_job,
    saved_scan_for,
    scan_job,
)
from inspector.pools import Skip, decode_image
from inspector.reference import Reference, ReferenceEvent
from inspector.repair import RepairConfig
from inspector.report import REPORT
from inspector.runs import fresh_run_name, slug
from inspector.tasks import load_labelled
from inspector.ui.stages import JobStages
from inspector.zoo import list_zoo


def zoo_names() -> list[str]:
    return [entry.name for entry in list_zoo()]


def within_roots(path_text: str, roots: list[Path], what: str) -> Path:
    """A user-typed path, accepted only when it exists under one of the allowed roots."""
    if not path_text.strip():
        raise InputError(f"no {what} path given", hint=f"type the path of the {what}")
    path = Path(path_text.strip()).expanduser().resolve()
    if not any(path == root or root in path.parents for root in roots):
        raise InputError(f"{path} is outside the folders this app may read",
                         hint="allowed: " + ", ".join(str(r) for r in roots) + " (start the app with --allow-path DIR)")
    if not path.exists():
        raise InputError(f"{path} does not exist", hint=f"check the {what} path")
    return path


@contextlib.contextmanager
def named_as_uploaded(path_text: str) -> Iterator[None]:
    """Messages about an uploaded file name it as the user knows it, not by the server's temp path."""
    try:
        yield
    except InputError as exc:
        shown = f"uploaded file {Path(path_text).name!r}"
        raise InputError(exc.message.replace(str(Path(path_text)), shown), hint=exc.hint) from exc


@dataclass
class Source:
    """Where a chosen input comes from: "shipped", an upload (server path + the name the user knows) or a path."""

    kind: str  # "shipped", "upload" or "folder"
    path: str | None = None
    label: str = SHIPPED

    @classmethod
    def pick(cls, kind: str, upload: str | None, folder: str | None, roots: list[Path], what: str) -> Source:
        if kind == "shipped":
            return cls("shipped")
        if kind == "upload":
            if not upload:
                raise InputError(f"no zip uploaded for the {what}", hint="drop a .zip on the upload box")
            return cls("upload", upload, Path(upload).name)
        path = within_roots(folder or "", roots, what)
        return cls("folder", str(path), str(path))

    def read(self, reader: Any) -> Any:
        if self.kind == "upload":
            assert self.path is not None
            with named_as_uploaded(self.path):
                return reader()
        return reader()


def settings_key(config: ScanConfig) -> tuple[Any, ...]:
    """The scan settings that change a scan's records (the threshold does not: it only re-decides them)."""
    epsilon = None if config.epsilon is None else round(float(config.epsilon), 6)
    return (config.method, config.schedule, epsilon, int(config.pool_size), int(config.epochs),
            tuple(config.classes or ()), config.blend)


@dataclass(frozen=True)
class ScanInputs:
    """What a scan's results were computed for; compared with what is chosen now, it says which shown
    results no longer apply."""

    model: tuple[str, str]  # label, file
    pool: tuple[Any, ...] | None
    reference: str
    settings: tuple[Any, ...]

    def changes(self, now: ScanInputs) -> list[str]:
        """What differs in ``now``, in the page's words."""
        pairs = (("the model", self.model, now.model), ("the OOD pool", self.pool, now.pool),
                 ("the clean reference", self.reference, now.reference),
                 ("the scan settings", self.settings, now.settings))
        return [words for words, was, is_ in pairs if was != is_]


@dataclass(frozen=True)
class ScanEntry:
    """A finished scan of this session, kept to be compared with another (records and verdict; no triggers)."""

    name: str  # as the comparison's pickers show it: number, model, verdict, time
    label: str  # as its chart shows it: number and model
    result: ScanResult


HISTORY = 8  # finished scans a session keeps for the comparison
RECONSTRUCTED, ATTACKERS = "reconstructed", "attacker's"  # the user's picture probed with which trigger


@dataclass
class Workspace:
    """Everything one browser has chosen and produced."""

    runs_root: Path
    allowed_roots: list[Path]
    device: str | None = None
    loaded: Delivered | None = None
    pool_source: Source = field(default_factory=lambda: Source("shipped"))
    pool: ImagePool | None = None
    pool_key: tuple[Any, ...] | None = None
    task_source: Source = field(default_factory=lambda: Source("shipped"))
    task: Task | None = None
    task_key: tuple[Any, ...] | None = None
    reference: str = "auto"  # "auto", "none", or the path of a reference file (uploaded or built here)
    reference_label: str = "auto"
    reference_uploaded: bool = False  # the reference is an upload: messages name it by its file name
    result: ScanResult | None = None
    scanned: Delivered | None = None  # the model the last scan was run on
    scanned_pool: ImagePool | None = None  # and the pool it read
    run_dir: Path | None = None
    report: dict[str, Any] | None = None
    repaired: Repaired | None = None
    stop: threading.Event = field(default_factory=threading.Event)
    view: str = "flip_rate"  # the chart's statistic: "flip_rate" or "anomaly"
    scanned_with: ScanInputs | None = None  # what the last scan was computed for
    chosen_settings: tuple[Any, ...] | None = None  # the scan settings the page shows now (None: not moved yet)
    scan_threshold: float | None = None  # the threshold the scan decided at (its report holds that verdict)
    repaired_on: tuple[Any, ...] | None = None  # the labelled task the last repair was trained and measured on
    mystery: Path | None = None  # the teaching mode's mystery model: only its scans offer to reveal the truth
    revealed: Path | None = None  # the mystery model whose ground truth was revealed: its trigger may be shown
    history: list[ScanEntry] = field(default_factory=list)  # this session's finished scans, oldest first
    scans_done: int = 0
    inspected: str | None = None  # the class the inspect views show
    open_view: str = "inspect"  # the tab open below the chart: the effects views are computed only while open
    picture: tuple[str, bytes] | None = None  # the user's own picture ("try it on your image"): name, file bytes
    # a running scan: records of the finished classes, its settings, candidates, the running classes' estimates
    live: tuple[list[dict[str, Any]], ScanConfig, list[int], dict[int, ClassEstimate]] | None = None
    job: JobStages | None = None  # the running job's page updates, between the events that send them

    # --- choosing inputs -------------------------------------------------------------------------------
    def open_model(self, source: str, label: str | None = None, weights: str | None = None) -> Delivered:
        """A zoo name or a file path -> the opened learner (the backbone comes from the shared cache)."""
        from inspector.zoo import resolve_model

        path = resolve_model(source)
        current = self.loaded
        if current is not None and current.unchanged(path) and current.label == (label or source):
            return current  # already open and unchanged on disk
        self.loaded = open_delivered(path, label or source, weights, self.device, shared_backbone)
        return self.loaded

    def open_upload(self, upload: str, weights: str | None = None) -> Delivered:
        with named_as_uploaded(upload):
            return self.open_model(upload, label=Path(upload).name, weights=weights)

    def open_model_path(self, path_text: str, weights: str | None = None) -> Delivered:
        path = within_roots(path_text, self.allowed_roots, "model file")
        if not path.is_file():
            raise InputError(f"{path} is a folder, not a model file", hint="give the path of a .safetensors file")
        kept = self.loaded.label if self.loaded is not None and self.loaded.path.resolve() == path else None
        return self.open_model(str(path), label=kept or path.name, weights=weights)  # a reopened file keeps its name

    def require_model(self) -> Delivered:
        if self.loaded is None:
            raise InputError("no model chosen yet", hint="pick a demo model, upload one, or give a path")
        return self.loaded

    def use_pool(self, source: Source, pool_size: int = 1000) -> ImagePool:
        """The OOD pool, read as the CLI reads it (a user's pool: its first ``pool_size`` images)."""
        size = self.require_model().model.backbone.image_size
        key = (source.kind, source.path, size, None if source.kind == "shipped" else int(pool_size))
        if self.pool is None or self.pool_key != key:
            self.pool = source.read(lambda: open_pool(source.path, size, int(pool_size), label=source.label))
            self.pool_source, self.pool_key = source, key
        return self.pool

    def require_pool(self, pool_size: int = 1000) -> ImagePool:
        return self.use_pool(self.pool_source, pool_size)

    def use_task(self, source: Source) -> Task:
        """The labelled task (repair, the clean reference), read at the chosen model's input size."""
        size = self.require_model().model.backbone.image_size
        key = (source.kind, source.path, size)
        if self.task is None or self.task_key != key:
            self.task = source.read(lambda: load_labelled(source.path, size, need_test=False, label=source.label))
            self.task_source, self.task_key = source, key
        return self.task

    def require_task(self) -> Task:
        return self.use_task(self.task_source)

    def use_reference(self, choice: str, upload: str | None = None) -> str:
        """``choice``: "auto", "none", "upload" (a reference .json) or "built" (the one built here last)."""
        if choice in ("auto", "none"):
            self.reference, self.reference_label, self.reference_uploaded = choice, choice, False
        elif choice == "upload":
            if not upload:
                raise InputError("no reference file uploaded", hint="drop a reference .json on the upload box")
            with named_as_uploaded(upload):
                Reference.read(Path(upload))
            self.reference, self.reference_label, self.reference_uploaded = upload, Path(upload).name, True
        elif not self.reference or self.reference in ("auto", "none"):
            raise InputError("no reference has been built here yet", hint="press Build reference first")
        return self.reference_label

    def new_run_dir(self, label: str) -> Path:
        """A fresh, empty folder for this run's outputs; earlier runs are never overwritten."""
        for _ in range(100):
            path = fresh_run_name(self.runs_root, label)
            try:
                path.mkdir(parents=True)
                return path
            except FileExistsError:  # another tab took the name a moment ago
                continue
        raise InputError(f"could not create a run folder under {self.runs_root}", hint="clean up old runs")

    # --- scan ------------------------------------------------------------------------------------------
    def scan(self, config: ScanConfig) -> Iterator[ScanJobEvent]:
        """The engine's scan job on the chosen model, pool and reference; stops when ``stop`` is set."""
        loaded, pool = self.require_model(), self.require_pool(config.pool_size)
        self.stop.clear()
        self.result, self.report, self.repaired, self.scanned, self.scanned_pool = None, None, None, loaded, pool
        self.scanned_with = self.inputs_now(settings_key(config))
        self.chosen_settings = None
        out = fresh_run_name(self.runs_root, loaded.label)
        with named_as_uploaded(self.reference) if self.reference_uploaded else contextlib.nullcontext():
            for event in scan_job(loaded, pool, config, out, self.reference, should_stop=self.stop.is_set):
                if isinstance(event, ScanFinished):
                    self.result, self.scan_threshold = event.result, event.result.settings.threshold
                    self.remember(loaded.label, event.result)
                elif isinstance(event, ReportWritten):
                    self.run_dir, self.report = event.folder, event.report
                yield event

    def remember(self, label: str, result: ScanResult) -> ScanEntry:
        """Keep a finished scan for the comparison (the newest ``HISTORY``)."""
        self.scans_done += 1
        verdict = result.verdict
        said = f"flagged: {verdict.target_name}" if verdict.flagged else "not flagged"
        short = f"#{self.scans_done} {label}"
        entry = ScanEntry(f"{short} ({said}, {time.strftime('%H:%M')})", short, replace(result, triggers={}))
        self.history = [*self.history, entry][-HISTORY:]
        return entry

    def scan_named(self, name: str) -> ScanEntry:
        for entry in self.history:
            if entry.name == name:
                return entry
        raise InputError(f"no scan named {name!r} in this session", hint="pick one of the finished scans")

    def inputs_now(self, settings: tuple[Any, ...]) -> ScanInputs:
        """The model, pool and reference chosen now, with ``settings``."""
        loaded = self.require_model()
        return ScanInputs((loaded.label, str(loaded.path)), self.pool_key, self.reference, settings)

    def stale_since_scan(self) -> list[str]:
        """What was chosen since the last scan, so that its shown results no longer apply ([] when they do)."""
        if self.scanned_with is None or self.loaded is None:
            return []
        settings = self.chosen_settings if self.chosen_settings is not None else self.scanned_with.settings
        return self.scanned_with.changes(self.inputs_now(settings))

    def repair_is_stale(self) -> bool:
        """Whether the labelled task chosen now is not the one the shown repair was made on."""
        return self.repaired is not None and self.repaired_on is not None and self.repaired_on != self.task_key

    def redecide(self, threshold: float, min_flip_rate: float | None = None) -> ScanResult:
        """The finished scan decided again at ``threshold`` and ``min_flip_rate`` (None: the scan's), by the
        engine's rule on the same records."""
        self.result = self.require_result().redecided(threshold, min_flip_rate)
        return self.result

    def report_files(self) -> list[str]:
        if self.run_dir is None:
            return []
        return [str(self.run_dir / name) for name in ("report.html", REPORT, "triggers.safetensors")
                if (self.run_dir / name).exists()]

    def require_result(self) -> ScanResult:
        if self.result is None or self.scanned is None:
            raise InputError("no finished scan yet", hint="press Scan and let it finish first")
        return self.result

    def examples(self, class_index: int | None = None, count: int = 8) -> list[Example]:
        result, scanned = self.require_result(), self.scanned
        assert scanned is not None and self.scanned_pool is not None
        return before_after(scanned.model, result, self.scanned_pool.pixels, class_index, count)

    def trigger_effects(self, class_index: int) -> tuple[Transitions, FeatureMap]:
        """Where class ``class_index``'s trigger sends the scan's held-out images, and their features moving."""
        result = self.require_result()
        assert self.scanned is not None and self.scanned_pool is not None
        model, pixels = self.scanned.model, self.scanned_pool.pixels
        return transitions(model, result, pixels, class_index), feature_map(model, result, pixels, class_index)

    def use_picture(self, path: str) -> None:
        """The user's own picture, read once (the upload's temp file may go); checked as the pool's images are."""
        try:
            blob = Path(path).read_bytes()
        except OSError as exc:
            raise InputError(f"the picture {Path(path).name!r} cannot be read ({exc.strerror})",
                             hint="upload it again") from exc
        self._decoded(Path(path).name, blob, 32)  # refused now, with the reason, not at the first probe
        self.picture = (Path(path).name, blob)

    def _decoded(self, name: str, blob: bytes, size: int) -> torch.Tensor:
        try:
            return decode_image(blob, size)
        except Skip as exc:
            raise InputError(f"the picture {name!r} cannot be used: {exc}",
                             hint="upload a PNG, JPEG or WebP photo or drawing") from exc

    def probe_picture(self, class_index: int | None) -> list[Probe]:
        """The user's picture as the chosen model sees it: clean, with class ``class_index``'s reconstructed trigger
        (when the shown scan is of this model) and, once the teaching mode revealed it, the attacker's trigger."""
        loaded = self.require_model()
        if self.picture is None:
            raise InputError("no picture uploaded yet", hint="drop a picture on the box")
        model = loaded.model
        pixels = self._decoded(self.picture[0], self.picture[1], model.backbone.image_size)
        triggers = []
        device = model.backbone.device
        if self.result is not None and self.scanned is loaded and class_index is not None \
                and class_index in self.result.triggers:
            triggers.append((RECONSTRUCTED, self.result.trigger(class_index).to(device)))
        if loaded.truth is not None and self.revealed is not None and self.revealed == loaded.path:
            triggers.append((ATTACKERS, loaded.truth.trigger.to(device)))
        return probe(model, pixels, triggers)

    def use_saved_scan(self, report_text: str) -> ScanResult:
        """A finished scan of the chosen model from its report.json (under the allowed folders), as if scanned
        here: what a repair needs. Refused unless the report was written for exactly this model file."""
        loaded = self.require_model()
        report = within_roots(report_text, self.allowed_roots, "scan report")
        saved = saved_scan_for(loaded, report)
        pool = pool_of(saved, loaded.model.backbone.image_size)
        self.result, self.scanned, self.scanned_pool, self.repaired = saved.result, loaded, pool, None
        self.scan_threshold = saved.result.settings.threshold
        self.run_dir, self.report = report.parent, json.loads(report.read_text())
        return saved.result

    # --- repair ----------------------------------------------------------------------------------------
    def repair(self, target: int, config: RepairConfig) -> Iterator[RepairJobEvent]:
        """The engine's repair job: a fresh copy of the scanned model against ``target``'s trigger, on the
        chosen labelled task, written to the run folder (``self.repaired``), never over the delivered file."""
        result, scanned = self.require_result(), self.scanned
        assert scanned is not None and self.scanned_pool is not None
        self.stop.clear()
        task = self.require_task()
        run_dir = self.run_dir or self.new_run_dir(scanned.label)
        out = run_dir / f"{scanned.path.stem}-repaired-{int(time.time())}.safetensors"
        for event in repair_job(scanned, result, task, self.scanned_pool, out, config, target,
                                should_stop=self.stop.is_set, source=str(run_dir / REPORT)):
            if isinstance(event, Repaired):
                self.repaired, self.repaired_on = event, self.task_key
            yield event

    # --- the clean reference ---------------------------------------------------------------------------
    def build_reference(self, learners: int, epsilon: float | None,
                        pool_size: int) -> Iterator[ReferenceEvent | ReferenceWritten]:
        """Tune and scan ``learners`` clean learners of the chosen model's kind on the chosen task and pool.

        Kept under runs/references/ by task, kind and pool, with one learners folder, so a stopped build
        resumes where it stopped and a larger one reuses the learners of a smaller one; the finished
        reference becomes the one the next scans use.
        """
        loaded, task, pool = self.require_model(), self.require_task(), self.require_pool(pool_size)
        open_task_for(loaded.model, task, loaded.label, need_test=False)  # refused now, not after the build
        self.stop.clear()
        model = loaded.model
        name = f"{slug(Path(task.source).stem)}-{model.kind}-{task.fingerprint[7:15]}-{pool.fingerprint[-8:]}"
        out = self.runs_root / "references" / name / f"{model.kind}-{learners}-learners.json"
        config = ScanConfig(epsilon=epsilon, pool_size=pool_size)
        for event in reference_job(task, pool, model.kind, model.backbone, out, learners, config=config,
                                   overwrite=True, should_stop=self.stop.is_set, keep=out.parent / "learners"):
            if isinstance(event, ReferenceWritten):
                self.reference, self.reference_label = str(out), f"built here: {out.parent.name}"
                self.reference_uploaded = False
            yield event

    # --- teaching mode ---------------------------------------------------------------------------------
    def implant(self, base: str, attack: str, target: int | None, seed: int) -> Iterator[ImplantJobEvent]:
        """Implant ``attack`` into a clean demo model; the mystery model becomes the chosen model.

        Each try is measured on the shipped task's test split and OOD pool and, while it misses the lab's bar,
        tried again as a provider would (``IMPLANT_ATTEMPTS`` tries), so a workshop never scans a backdoor that
        did not take. ``target`` None draws the hidden target from ``seed``, and a try that misses moves on to the
        next drawn target (some targets do not take in a given learner at any poison weight that keeps its
        accuracy).
        """
        self.stop.clear()
        loaded = self.open_model(base)
        model = loaded.fresh_copy()
        others: tuple[int, ...] = ()
        if target is None:
            drawn = torch.randperm(len(model.class_names), generator=torch.Generator().manual_seed(seed)).tolist()
            target, others = drawn[0], tuple(drawn[1:IMPLANT_ATTEMPTS])
        config = ImplantConfig.for_attack(attack, target, model.kind, seed=seed)  # type: ignore[arg-type]
        size = model.backbone.image_size
        task = load_labelled(None, size)
        run_dir = self.new_run_dir("teaching")
        out = run_dir / f"mystery-model-{seed}.safetensors"  # the name must not give the attack away
        for event in implant_job(model, task, config, out, base, pool=load_shipped_pool(size), model_label=base,
                                 should_stop=self.stop.is_set, attempts=IMPLANT_ATTEMPTS, other_targets=others):
            if isinstance(event, Implanted):  # before the event: a consumer may stop iterating at it
                self.open_model(str(out), label=f"mystery model ({base} + hidden backdoor)")
                self.mystery = out
            yield event

    def target_index(self, name: str) -> int:
        return class_index(self.require_model().model.class_names, name, role="target class")
