"""A clean reference for the anomaly index: what a scan finds in prompt learners the defender tuned
themselves, on the same task, with the same backbone and learner kind.

Why: prompt tuning creates natural attractor classes. On the pocket task a clean learner's trigger
for "file icon" flips most OOD images, so a raw flip-rate outlier test flags clean models (and a
backdoor aimed elsewhere can lose to it). The defender holds the task's labelled train split (repair
needs it anyway), so it can tune a few clean learners itself and scan them once. Subtracting each
class's mean flip rate in those learners leaves what the delivered model adds: the backdoor
(measured in benchmarks/reference.md). Without a matching reference the raw flip rate is used.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from inspector.backbone import ASSETS_DIR, Backbone
from inspector.baseline import Baseline, with_baseline
from inspector.data import Task
from inspector.detect import Verdict, decide
from inspector.errors import InputError
from inspector.invert import ScanConfig, class_curves, run_scan
from inspector.prompts import Kind, PromptedCLIP, TuneConfig, build_learner, load_learner, save_learner, tune

REFERENCE_DIR = ASSETS_DIR / "reference"
FORMAT = "inspector.reference"
EPSILON_TOLERANCE = 1e-6


@dataclass
class Reference:
    """Mean per-class flip rate of clean learners' triggers, and what it is valid for."""

    kind: str
    arch: str
    pretrained: str
    image_size: int
    class_names: list[str]
    epsilon: float
    pool: str  # "shipped": the reference was scanned on the shipped OOD pool
    seeds: list[int]
    flip_rates: dict[str, float]  # class name -> mean over the reference learners (faithful schedule)
    per_learner: list[dict[str, float]] = field(default_factory=list)  # faithful held-out rate per learner
    accuracies: list[float] = field(default_factory=list)
    pool_size: int = 1000
    holdout: float = 0.2
    # The fast schedule with every class run to the end: {"lr", "batch_size", "steps", "held_out": [per learner
    # {class: rate}], "curves": [per learner {class: [[flips, eligible], ...]}]}; None in references without it.
    fast: dict[str, Any] | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"format": FORMAT, **asdict(self)}

    @classmethod
    def read(cls, path: Path) -> Reference:
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
            if data.pop("format", None) != FORMAT:
                raise ValueError("not an inspector reference")
            reference = cls(**data)
            if not all(isinstance(v, (int, float)) and math.isfinite(v) for v in reference.flip_rates.values()):
                raise ValueError("flip rates must be finite numbers")
            return reference
        except (OSError, ValueError, TypeError) as exc:
            raise InputError(f"reference {path} cannot be used ({exc})",
                             hint="build one with scripts/build_reference.py, or scan with --reference none") from exc

    def mismatch(self, model: PromptedCLIP, config: ScanConfig, pool: str) -> str | None:
        """Why this reference does not apply to a scan of ``model`` with ``config`` (None when it does)."""
        bb = model.backbone
        epsilon = config.for_input(bb.image_size).epsilon
        assert epsilon is not None
        fast = self.fast or {}
        plan = (sum(config.fast_rounds or config.fast_defaults(reference=True).rounds), config.fast_lr,
                config.fast_batch_size)
        built = (fast.get("steps"), fast.get("lr"), fast.get("batch_size"))
        checks = [(self.kind == model.kind, f"learner kind {model.kind} (reference: {self.kind})"),
                  (self.arch == bb.arch and self.pretrained == bb.pretrained,
                   f"backbone {bb.arch}/{bb.pretrained} (reference: {self.arch}/{self.pretrained})"),
                  (self.class_names == list(model.class_names), "class names differ from the reference's"),
                  (abs(self.epsilon - epsilon) <= EPSILON_TOLERANCE,
                   f"epsilon {epsilon * 255:.1f}/255 (reference: {self.epsilon * 255:.1f}/255)"),
                  (self.pool == pool, f"OOD pool {pool} (reference: {self.pool})"),
                  ((config.pool_size, config.holdout) == (self.pool_size, self.holdout),
                   f"pool size {config.pool_size} / held-out share {config.holdout} "
                   f"(reference: {self.pool_size} / {self.holdout})"),
                  (config.schedule != "fast" or bool(fast), "the reference has no fast-schedule measurements"),
                  (config.schedule != "fast" or plan == built,
                   f"fast plan of {plan[0]} steps at lr {plan[1]}, batch {plan[2]} "
                   f"(reference: {built[0]} steps at lr {built[1]}, batch {built[2]})")]
        return next((why for ok, why in checks if not ok), None)

    def baseline(self, config: ScanConfig) -> Baseline:
        """The clean learners' values for a scan with ``config``'s schedule."""
        if config.schedule == "fast" and self.fast:
            names = list(self.fast["held_out"][0])
            return Baseline(held_out={c: [h[c] for h in self.fast["held_out"]] for c in names},
                            curves={c: [curves[c] for curves in self.fast["curves"]] for c in names},
                            window=config.fast_window, held_out_steps=int(self.fast["steps"]))
        return Baseline(held_out={c: [p[c] for p in self.per_learner] for c in self.per_learner[0]})


def shipped_reference_path(arch: str, kind: str) -> Path:
    return REFERENCE_DIR / f"{arch}-{kind}.json"


def reference_for(model: PromptedCLIP, config: ScanConfig, pool: str,
                  choice: str = "auto") -> tuple[Baseline | None, str]:
    """The clean learners' per-class values for this scan and a line saying where they come from.

    ``choice``: "auto" (the shipped reference when it matches, else none), "none", or a file path
    (which must match; a mismatch is an error, since the user asked for it).
    """
    if config.method != "inspector" or choice == "none":
        return None, "none (raw flip rates)"
    if choice == "auto":
        path = shipped_reference_path(model.backbone.arch, model.kind)
        if not path.is_file():
            return None, "none: no shipped reference for this backbone and learner kind (raw flip rates)"
        reference = Reference.read(path)
        why = reference.mismatch(model, config, pool)
        if why:
            return None, f"none: the shipped reference does not apply ({why}; raw flip rates)"
    else:
        reference = Reference.read(Path(choice))
        why = reference.mismatch(model, config, pool)
        if why:
            raise InputError(f"reference {choice} does not fit this scan: {why}",
                             hint="build a reference for this model's task, kind and settings, or pass none")
    return reference.baseline(config), (f"{len(reference.seeds)} clean {reference.kind} learners tuned on the "
                                        f"task (seeds {', '.join(map(str, reference.seeds))})")


def decide_with_reference(records: list[dict[str, Any]], reference: Reference, schedule: str,
                          window: int = ScanConfig.fast_window) -> tuple[list[dict[str, Any]], Verdict]:
    """Saved per-class records of a scan made with ``schedule``, decided as a scan given ``reference`` decides
    (the reference changes the decision, not the inversion): for replaying cached scans in benchmarks."""
    baseline = reference.baseline(ScanConfig(schedule=schedule, fast_window=window))  # type: ignore[arg-type]
    records = [with_baseline(r, baseline.learner_values(r)) for r in records]
    return records, decide(records, "excess_flip_rate")


def build_reference(kind: Kind, backbone: Backbone, task: Task, pool: torch.Tensor, seeds: list[int],
                    config: ScanConfig | None = None, progress: Callable[[str], None] = print,
                    epochs: int | None = None, learners: Path | None = None) -> Reference:
    """Tune one clean learner per seed on the task's train split and scan it with both schedules: the
    published faithful one, and the fast one with every class run to the end (``invert.class_curves``).

    ``learners``: a folder where tuned learners are kept (``<kind>_s<seed>.safetensors``) and reused.
    """
    from inspector.evaluate import accuracy

    config = config or ScanConfig()
    steps = sum(config.fast_rounds or config.fast_defaults(reference=True).rounds)  # the plan a scan with it runs
    config = config.for_input(backbone.image_size)
    per_learner, accuracies, fast_held, fast_curves = [], [], [], []
    for seed in seeds:
        model = _tuned_learner(kind, backbone, task, seed, epochs, learners)
        accuracies.append(round(accuracy(model, task), 4))
        result = run_scan(model, pool, replace(config, schedule="faithful", reference=None))
        per_learner.append({c["name"]: float(c["flip_rate"]) for c in result.classes})
        curves = class_curves(model, pool, config, config.fast_lr, config.fast_batch_size, steps)
        steps = len(curves[0]["curve"])  # fewer when the pool has fewer batches
        fast_held.append({c["name"]: float(c["held_out"][steps]["flip_rate"]) for c in curves})
        fast_curves.append({c["name"]: [[int(f), int(e)] for f, e, _ in c["curve"]] for c in curves})
        progress(f"reference {kind} seed {seed}: accuracy {accuracies[-1]:.1%}, top flip rate "
                 f"{max(per_learner[-1].values()):.1%} ({max(per_learner[-1], key=per_learner[-1].get)}; "
                 f"fast schedule {max(fast_held[-1].values()):.1%})")
    means = {name: round(sum(p[name] for p in per_learner) / len(per_learner), 4) for name in per_learner[0]}
    assert config.epsilon is not None
    fast = {"lr": config.fast_lr, "batch_size": config.fast_batch_size, "steps": steps, "held_out": fast_held,
            "curves": fast_curves}
    return Reference(kind=kind, arch=backbone.arch, pretrained=str(backbone.pretrained),
                     image_size=backbone.image_size, class_names=list(task.class_names), epsilon=config.epsilon,
                     pool="shipped", seeds=list(seeds), flip_rates=means, per_learner=per_learner,
                     accuracies=accuracies, pool_size=config.pool_size, holdout=config.holdout, fast=fast)


def _tuned_learner(kind: Kind, backbone: Backbone, task: Task, seed: int, epochs: int | None,
                   folder: Path | None) -> PromptedCLIP:
    kept = folder / f"{kind}_s{seed}.safetensors" if folder is not None else None
    if kept is not None and kept.is_file():
        return load_learner(kept, backbone)
    model = build_learner(kind, backbone, task.class_names, seed=seed)
    tune(model, task.train_pixels, task.train_labels, TuneConfig.for_kind(kind, seed=seed, epochs=epochs))
    if kept is not None:
        kept.parent.mkdir(parents=True, exist_ok=True)
        save_learner(model, kept, extra={"seed": seed})
    return model
