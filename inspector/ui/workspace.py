"""One browser's work in the app: the model and OOD pool it chose, its last scan, repair and implant.

No Gradio here: the handlers keep one ``Workspace`` per browser session (``gr.State``) and call
these methods, so the same steps can be driven and tested without a browser. Files the user
names are read only under the app's allowed roots; everything the app writes goes to a fresh
run folder under ``runs_root``; the model file the user delivered is never written.
"""

from __future__ import annotations

import contextlib
import functools
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from inspector.backbone import Backbone, file_sha256, load_backbone
from inspector.data import ImagePool, Task, load_shipped_pool, task_for
from inspector.errors import InputError
from inspector.examples import Example, before_after, held_out_images
from inspector.invert import ScanConfig, ScanEvent, ScanFinished, ScanResult, class_index, scan
from inspector.lab.implant import ImplantConfig, ImplantEvent, ImplantFinished, implant
from inspector.lab.triggers import Trigger
from inspector.lab.truth import GroundTruth, attack_success_rate, read_ground_truth, save_implanted
from inspector.pools import pool_summary, read_pool
from inspector.prompts import PromptedCLIP, open_model, save_learner
from inspector.repair import RepairConfig, RepairEvent, RepairFinished, repair
from inspector.report import REPORT, write_report
from inspector.runs import fresh_run_name, staged_folder
from inspector.zoo import list_zoo, resolve_model


@functools.lru_cache(maxsize=4)
def cached_backbone(arch: str, pretrained: str | None = None, device: str | None = None) -> Backbone:
    """Backbones are frozen and never written, so every session can share one copy per weights."""
    return load_backbone(arch, pretrained, device=device)


@functools.lru_cache(maxsize=2)
def shipped_pool(image_size: int) -> ImagePool:
    return load_shipped_pool(image_size)


def zoo_names() -> list[str]:
    return [entry.name for entry in list_zoo()]


APP_POOL_LIMIT = 1200  # images read from a user's pool: the most the pool-size slider can use


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


def _file_stamp(path: Path) -> tuple[int, int]:
    info = path.stat()
    return info.st_size, info.st_mtime_ns


@dataclass
class LoadedModel:
    """A prompt learner opened for scanning, with where it came from."""

    label: str
    path: Path
    sha256: str
    model: PromptedCLIP
    truth: GroundTruth | None  # the lab's record, for the teaching mode's reveal; the scan never reads it
    stamp: tuple[int, int]  # file size and mtime when opened

    def describe(self) -> str:
        m = self.model
        return (f"**{self.label}**: {m.kind.upper()} prompt learner, {len(m.class_names)} classes, "
                f"{m.backbone.arch} ({m.backbone.image_size} px), sha256 {self.sha256}")


@dataclass
class RepairOutcome:
    finished: RepairFinished
    path: Path
    target: int
    truth_asr: tuple[float, float] | None  # ground-truth ASR before / after, when the lab's record exists


@dataclass
class Workspace:
    """Everything one browser has chosen and produced."""

    runs_root: Path
    allowed_roots: list[Path]
    device: str | None = None
    loaded: LoadedModel | None = None
    pool: ImagePool | None = None
    pool_info: dict[str, Any] = field(default_factory=lambda: {"source": "shipped"})
    pool_key: tuple[Any, ...] | None = None
    result: ScanResult | None = None
    scanned: LoadedModel | None = None  # the model the last scan was run on
    run_dir: Path | None = None
    report: dict[str, Any] | None = None
    repaired: RepairOutcome | None = None
    stop: threading.Event = field(default_factory=threading.Event)
    view: str = "flip_rate"  # the chart's statistic: "flip_rate" or "anomaly"
    live: tuple[list[dict[str, Any]], dict[str, Any], list[int]] | None = None  # records so far of a running scan

    # --- choosing inputs -------------------------------------------------------------------------------
    def open_model(self, source: str, label: str | None = None, weights: str | None = None) -> LoadedModel:
        """A zoo name or a file path -> the loaded learner (the backbone comes from the shared cache)."""
        path = resolve_model(source)
        current = self.loaded
        if current is not None and current.path == path.resolve() and current.label == (label or source) \
                and current.stamp == _file_stamp(path):
            return current  # already open and unchanged on disk
        path = path.resolve()
        model = open_model(path, weights=weights or None, device=self.device,
                           backbone_loader=lambda arch, pretrained, device=None: cached_backbone(
                               arch, pretrained, str(device) if device is not None else None))
        self.loaded = LoadedModel(label or source, path, file_sha256(path), model, read_ground_truth(path),
                                  _file_stamp(path))
        if self.pool is not None and self.pool.pixels.shape[-1] != model.backbone.image_size:
            self.pool, self.pool_info, self.pool_key = None, {"source": "shipped"}, None  # read at another size
        return self.loaded

    def open_upload(self, upload: str, weights: str | None = None) -> LoadedModel:
        with named_as_uploaded(upload):
            return self.open_model(upload, label=Path(upload).name, weights=weights)

    def open_model_path(self, path_text: str, weights: str | None = None) -> LoadedModel:
        path = within_roots(path_text, self.allowed_roots, "model file")
        if not path.is_file():
            raise InputError(f"{path} is a folder, not a model file", hint="give the path of a .safetensors file")
        return self.open_model(str(path), label=path.name, weights=weights)

    def use_pool(self, kind: str, upload: str | None = None, folder: str | None = None) -> ImagePool:
        """The OOD pool: shipped, an uploaded zip, or a folder under the allowed roots."""
        size = self.require_model().model.backbone.image_size
        key = (kind, upload if kind == "upload" else None, folder if kind == "folder" else None, size)
        if self.pool is not None and self.pool_key == key:
            return self.pool
        if kind == "shipped":
            pool = shipped_pool(size)
            info = pool_summary(pool, "shipped")
        elif kind == "upload":
            if not upload:
                raise InputError("no zip uploaded for the OOD pool", hint="drop a .zip of images on the upload box")
            with named_as_uploaded(upload):
                pool = read_pool(Path(upload), size, APP_POOL_LIMIT)
            info = pool_summary(pool, Path(upload).name)
        else:
            path = within_roots(folder or "", self.allowed_roots, "image folder")
            pool = read_pool(path, size, APP_POOL_LIMIT)
            info = pool_summary(pool, str(path))
        self.pool, self.pool_info, self.pool_key = pool, info, key
        return pool

    def require_model(self) -> LoadedModel:
        if self.loaded is None:
            raise InputError("no model chosen yet", hint="pick a demo model, upload one, or give a path")
        return self.loaded

    def require_pool(self) -> ImagePool:
        if self.pool is None:
            self.use_pool("shipped")
        assert self.pool is not None
        return self.pool

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
    def scan(self, config: ScanConfig) -> Iterator[ScanEvent]:
        """The engine's scan of the chosen model on the chosen pool; stops when ``stop`` is set."""
        loaded, pool = self.require_model(), self.require_pool()
        self.stop.clear()
        self.result, self.report, self.repaired, self.scanned = None, None, None, loaded
        for event in scan(loaded.model, pool.pixels, config, should_stop=self.stop.is_set):
            if isinstance(event, ScanFinished):
                self.result = event.result
            yield event

    def write_report(self) -> dict[str, Any]:
        """report.json, report.html and the trigger PNGs of the last scan, in a fresh run folder."""
        result, loaded = self.require_result(), self.scanned
        assert loaded is not None
        run_dir = fresh_run_name(self.runs_root, loaded.label)
        model = loaded.model
        model_info = {"name": loaded.label, "path": str(loaded.path), "sha256": loaded.sha256, "kind": model.kind,
                      "arch": model.backbone.arch, "pretrained": model.backbone.pretrained,
                      "n_classes": len(model.class_names)}
        examples = self.examples()
        with staged_folder(run_dir) as staging:  # a closed tab mid-write leaves no half-written report
            report = write_report(result, staging, model_info, self.pool_info, examples)
        self.run_dir, self.report = run_dir, report
        return report

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
        result, pool = self.require_result(), self.require_pool()
        assert self.scanned is not None
        return before_after(self.scanned.model, result, pool.pixels, class_index, count)

    # --- repair ----------------------------------------------------------------------------------------
    def repair(self, target: int, config: RepairConfig) -> Iterator[RepairEvent]:
        """Repair a fresh copy of the scanned model against ``target``'s reconstructed trigger.

        Every repair starts from the delivered file again, so recipes can be compared; the result is
        written to the run folder (``self.repaired``), never over the delivered file.
        """
        result, scanned = self.require_result(), self.scanned
        assert scanned is not None
        if target not in result.triggers:
            raise InputError(f"class {scanned.model.class_names[target]!r} was not scanned, so it has no trigger",
                             hint="scan it first (candidate classes)")
        self.stop.clear()
        model = self.open_model_copy(scanned)
        task = task_for(model.class_names, model.backbone.image_size, scanned.label)
        from inspector.candidates import candidate_from_tensors

        trigger = candidate_from_tensors(result.settings["method"], result.triggers[target],
                                         result.settings["epsilon"]).to(model.backbone.device)
        held = held_out_images(result, self.require_pool().pixels)
        truth_before = self._truth_asr(model, scanned.truth, task)
        finished = None
        for event in repair(model, trigger, target, task.train_pixels, task.train_labels, task.test_pixels,
                            task.test_labels, held, config):
            if self.stop.is_set():
                return
            if isinstance(event, RepairFinished):
                finished = event
            else:
                yield event
        assert finished is not None
        truth_after = self._truth_asr(model, scanned.truth, task)
        path = self._save_repaired(model, scanned, target, config, finished)
        truth = (truth_before, truth_after) if truth_before is not None and truth_after is not None else None
        self.repaired = RepairOutcome(finished, path, target, truth)
        yield finished

    def open_model_copy(self, loaded: LoadedModel) -> PromptedCLIP:
        return open_model(loaded.path, device=self.device, backbone_loader=lambda *a, **k: loaded.model.backbone)

    @staticmethod
    def _truth_asr(model: PromptedCLIP, truth: GroundTruth | None, task: Task) -> float | None:
        if truth is None:
            return None
        return round(attack_success_rate(model, truth.trigger, task.test_pixels, truth.target, task.test_labels), 4)

    def _save_repaired(self, model: PromptedCLIP, scanned: LoadedModel, target: int, config: RepairConfig,
                       finished: RepairFinished) -> Path:
        run_dir = self.run_dir or self.new_run_dir(scanned.label)
        path = run_dir / f"{scanned.path.stem}-repaired-{int(time.time())}.safetensors"
        extra = {"repaired": {"from": scanned.path.name, "from_sha256": scanned.sha256,
                              "target": model.class_names[target], "recipe": config.as_dict(),
                              "before": vars(finished.before), "after": vars(finished.after)}}
        if scanned.truth is not None:  # keep the lab's record, so the repaired model can still be measured
            save_implanted(model, path, scanned.truth.trigger, scanned.truth.target,
                           recipe=scanned.truth.record.get("recipe"), extra=extra)
        else:
            save_learner(model, path, extra=extra)
        return path

    # --- teaching mode ---------------------------------------------------------------------------------
    def implant(self, base: str, attack: str, target: int | None, seed: int) -> Iterator[ImplantEvent]:
        """Implant ``attack`` into a clean demo model; the result becomes the chosen model.

        ``target`` None draws one at random from ``seed`` (hidden until the reveal).
        """
        self.stop.clear()
        loaded = self.open_model(base)
        model = loaded.model
        task = task_for(model.class_names, model.backbone.image_size, base)
        if target is None:
            target = int(torch.randint(len(model.class_names), (1,), generator=torch.Generator().manual_seed(seed)))
        config = ImplantConfig.for_attack(attack, target, seed=seed)  # type: ignore[arg-type]
        trigger: Trigger | None = None
        for event in implant(model, task.train_pixels, task.train_labels, config):
            if self.stop.is_set():
                self.loaded = None
                return
            if isinstance(event, ImplantFinished):
                trigger = event.trigger
            yield event
        assert trigger is not None
        run_dir = self.new_run_dir("teaching")
        path = run_dir / f"mystery-model-{seed}.safetensors"  # the name must not give the attack away
        save_implanted(model, path, trigger, target, recipe={**config.recipe(model.backbone.image_size), "base": base})
        self.open_model(str(path), label=f"mystery model ({base} + hidden backdoor)")

    def target_index(self, name: str) -> int:
        return class_index(self.require_model().model.class_names, name, role="target class")
