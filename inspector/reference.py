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
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from inspector.backbone import ASSETS_DIR, Backbone
from inspector.data import Task
from inspector.errors import InputError
from inspector.invert import ScanConfig, run_scan
from inspector.prompts import Kind, PromptedCLIP, TuneConfig, build_learner, tune

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
    flip_rates: dict[str, float]  # class name -> mean over the reference learners
    per_learner: list[dict[str, float]] = field(default_factory=list)
    accuracies: list[float] = field(default_factory=list)

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

    def mismatch(self, model: PromptedCLIP, epsilon: float, pool: str) -> str | None:
        """Why this reference does not apply to a scan of ``model`` (None when it does)."""
        bb = model.backbone
        checks = [(self.kind == model.kind, f"learner kind {model.kind} (reference: {self.kind})"),
                  (self.arch == bb.arch and self.pretrained == bb.pretrained,
                   f"backbone {bb.arch}/{bb.pretrained} (reference: {self.arch}/{self.pretrained})"),
                  (self.class_names == list(model.class_names), "class names differ from the reference's"),
                  (abs(self.epsilon - epsilon) <= EPSILON_TOLERANCE,
                   f"epsilon {epsilon * 255:.1f}/255 (reference: {self.epsilon * 255:.1f}/255)"),
                  (self.pool == pool, f"OOD pool {pool} (reference: {self.pool})")]
        return next((why for ok, why in checks if not ok), None)


def shipped_reference_path(arch: str, kind: str) -> Path:
    return REFERENCE_DIR / f"{arch}-{kind}.json"


def reference_for(model: PromptedCLIP, config: ScanConfig, pool: str,
                  choice: str = "auto") -> tuple[dict[str, float] | None, str]:
    """The per-class reference flip rates for this scan and a line saying where they come from.

    ``choice``: "auto" (the shipped reference when it matches, else none), "none", or a file path
    (which must match; a mismatch is an error, since the user asked for it).
    """
    if config.method != "inspector" or choice == "none":
        return None, "none (raw flip rates)"
    epsilon = config.for_input(model.backbone.image_size).epsilon
    assert epsilon is not None
    if choice == "auto":
        path = shipped_reference_path(model.backbone.arch, model.kind)
        if not path.is_file():
            return None, "none: no shipped reference for this backbone and learner kind (raw flip rates)"
        reference = Reference.read(path)
        why = reference.mismatch(model, epsilon, pool)
        if why:
            return None, f"none: the shipped reference does not apply ({why}; raw flip rates)"
    else:
        reference = Reference.read(Path(choice))
        why = reference.mismatch(model, epsilon, pool)
        if why:
            raise InputError(f"reference {choice} does not fit this scan: {why}",
                             hint="build a reference for this model's task, kind and settings, or pass none")
    return dict(reference.flip_rates), (f"{len(reference.seeds)} clean {reference.kind} learners tuned on the "
                                        f"task (seeds {', '.join(map(str, reference.seeds))})")


def build_reference(kind: Kind, backbone: Backbone, task: Task, pool: torch.Tensor, seeds: list[int],
                    config: ScanConfig | None = None, progress: Callable[[str], None] = print,
                    epochs: int | None = None) -> Reference:
    """Tune one clean learner per seed on the task's train split, scan each with the published
    (faithful) schedule, and average every class's flip rate."""
    from inspector.evaluate import accuracy

    config = (config or ScanConfig(schedule="faithful")).for_input(backbone.image_size)
    per_learner, accuracies = [], []
    for seed in seeds:
        model = build_learner(kind, backbone, task.class_names, seed=seed)
        tune(model, task.train_pixels, task.train_labels, TuneConfig.for_kind(kind, seed=seed, epochs=epochs))
        accuracies.append(round(accuracy(model, task), 4))
        result = run_scan(model, pool, config)
        per_learner.append({c["name"]: float(c["flip_rate"]) for c in result.classes})
        progress(f"reference {kind} seed {seed}: accuracy {accuracies[-1]:.1%}, top flip rate "
                 f"{max(per_learner[-1].values()):.1%} ({max(per_learner[-1], key=per_learner[-1].get)})")
    means = {name: round(sum(p[name] for p in per_learner) / len(per_learner), 4) for name in per_learner[0]}
    assert config.epsilon is not None
    return Reference(kind=kind, arch=backbone.arch, pretrained=str(backbone.pretrained),
                     image_size=backbone.image_size, class_names=list(task.class_names), epsilon=config.epsilon,
                     pool="shipped", seeds=list(seeds), flip_rates=means, per_learner=per_learner,
                     accuracies=accuracies)
