"""OOD trigger inversion over candidate classes: the scan, as a generator of typed events (DESIGN §1–2).

Per candidate class k: a fresh candidate trigger, one epoch over the fitting part of the OOD pool
in batches of 32 (stamp trigger, logits, loss, Adam step, project), then its flip rate on the
held-out part (images the model already puts in k do not count). After the last class, the verdict
from ``detect.decide``. The model is never changed; its learner's gradients are switched off for
the scan and restored after.

Stopping: pass ``should_stop`` (checked between steps; the scan then yields ``ScanStopped``) or
just stop iterating.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import torch

from inspector.candidates import METHODS, CandidateTrigger, Method, make_candidate, margin_loss
from inspector.detect import DEFAULT_MIN_FLIP_RATE, DEFAULT_THRESHOLD, Statistic, Verdict, decide
from inspector.errors import InputError
from inspector.prompts import PromptedCLIP

PUBLISHED_EPSILON = 4 / 255  # the published bound, for CLIP's 224-pixel input
PUBLISHED_IMAGE_SIZE = 224


def default_epsilon(image_size: int) -> float:
    """The published 4/255 at 224 px, scaled by 224 / ``image_size`` for other input sizes.

    A network's first-order sensitivity to an L-inf perturbation grows like the square root of the
    number of input values (Simon-Gabriel et al., ICML 2019), so the same 4/255 is 3.5 times weaker
    on the pocket CLIP's 64-pixel input than on ViT-B/16's 224 pixels; scaling keeps the trigger's
    L2 energy per image equal. Real CLIP models (224 px) get exactly 4/255.
    """
    return PUBLISHED_EPSILON * PUBLISHED_IMAGE_SIZE / image_size


@dataclass
class ScanConfig:
    """Settings of one scan; the defaults are the published schedule (one epoch, batch 32, Adam 0.1)."""

    method: Method = "inspector"
    epsilon: float | None = None  # L-inf bound in [0, 1] pixels; None: ``default_epsilon`` of the input size
    lr: float = 0.1
    batch_size: int = 32
    epochs: int = 1
    pool_size: int = 1000  # OOD images used: fitting part + held-out part
    holdout: float = 0.2  # share of them held out to measure flip rates
    classes: tuple[int, ...] | None = None  # candidate classes (default: all)
    statistic: Statistic | None = None  # what feeds the anomaly index (default per method)
    threshold: float = DEFAULT_THRESHOLD
    min_flip_rate: float | None = None  # default: 0.5 for the inspector, none for Neural Cleanse
    snapshot_every: int = 4  # steps between trigger snapshots
    seed: int = 0

    def for_input(self, image_size: int) -> ScanConfig:
        """A copy with the input-size-dependent defaults filled in."""
        epsilon = self.epsilon if self.epsilon is not None else default_epsilon(image_size)
        return replace(self, epsilon=epsilon)

    def resolved_statistic(self) -> Statistic:
        return self.statistic or ("flip_rate" if self.method == "inspector" else "mask_norm")

    def resolved_min_flip_rate(self) -> float:
        if self.min_flip_rate is not None:
            return self.min_flip_rate
        return DEFAULT_MIN_FLIP_RATE if self.method == "inspector" else 0.0

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["classes"] = list(self.classes) if self.classes is not None else None
        out["statistic"], out["min_flip_rate"] = self.resolved_statistic(), self.resolved_min_flip_rate()
        return out


@dataclass
class ScanStarted:
    classes: list[int]
    class_names: list[str]
    steps_per_class: int
    fit_images: int
    held_out_images: int
    settings: dict[str, Any]


@dataclass
class TriggerSnapshot:
    class_index: int
    class_name: str
    position: int  # 0-based rank of this class in the scan order
    step: int
    steps: int
    loss: float
    picture: torch.Tensor  # (3, S, S) amplified for display
    true_scale: torch.Tensor  # (3, S, S) as applied


@dataclass
class ClassFinished:
    position: int
    total: int
    record: dict[str, Any]  # index, name, flip_rate, loss, ... (see ``_measure``)
    trigger: CandidateTrigger


@dataclass
class ScanStopped:
    finished: list[dict[str, Any]]
    seconds: float


@dataclass
class ScanResult:
    """Everything a report needs: settings, per-class records, triggers, the verdict, timings."""

    settings: dict[str, Any]
    class_names: list[str]
    classes: list[dict[str, Any]]
    triggers: dict[int, dict[str, torch.Tensor]]
    verdict: Verdict
    seconds: float
    fit_images: int
    held_out_images: int
    image_passes: int  # image-encoder forward passes (images), for the speed benchmarks
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class ScanFinished:
    result: ScanResult


ScanEvent = ScanStarted | TriggerSnapshot | ClassFinished | ScanStopped | ScanFinished


def split_pool(pixels: torch.Tensor, pool_size: int, holdout: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A seeded sample of ``pool_size`` images, split into (fitting part, held-out part)."""
    if len(pixels) < 2:
        raise InputError(f"the OOD pool has {len(pixels)} image(s); a scan needs at least 2",
                         hint="use a pool of a few hundred unlabelled images (1,000 recommended)")
    if not 0 < holdout < 1:
        raise InputError(f"holdout share {holdout} is not between 0 and 1", hint="use e.g. 0.2")
    order = torch.randperm(len(pixels), generator=torch.Generator().manual_seed(seed))[:pool_size]
    n_held = min(len(order) - 1, max(1, round(len(order) * holdout)))
    return pixels[order[n_held:]], pixels[order[:n_held]]


def candidate_classes(config: ScanConfig, n_classes: int) -> list[int]:
    classes = list(range(n_classes)) if config.classes is None else list(config.classes)
    bad = [k for k in classes if not 0 <= k < n_classes]
    if bad or not classes:
        raise InputError(f"candidate classes {bad or classes} are not classes of this model (0..{n_classes - 1})",
                         hint="pass class names or indices of the model's own classes")
    if len(classes) < 3:
        raise InputError(f"{len(classes)} candidate class(es): the anomaly index needs at least 3 to compare",
                         hint="scan at least 3 classes (all of them by default)")
    return list(dict.fromkeys(classes))


@contextlib.contextmanager
def frozen_learner(model: PromptedCLIP) -> Iterator[None]:
    """No parameter gradients during a scan; the learner's flags are put back afterwards."""
    flags = [(p, p.requires_grad) for p in model.learner.parameters()]
    was_training = model.learner.training
    model.learner.eval()
    for p, _ in flags:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)
        model.learner.train(was_training)


class Logits:
    """Logits of pixel batches, reusing CoOp's class text features (they do not depend on the image)."""

    def __init__(self, model: PromptedCLIP) -> None:
        self.model = model
        self.text = None
        if model.kind == "coop":
            with torch.no_grad():
                self.text = model.text_features()
        self.image_passes = 0

    def __call__(self, pixels: torch.Tensor) -> torch.Tensor:
        self.image_passes += len(pixels)
        return self.model.logits_from_features(self.model.image_features(pixels), self.text)

    @torch.no_grad()
    def predict(self, pixels: torch.Tensor, batch_size: int = 128) -> torch.Tensor:
        device = self.model.backbone.device
        return torch.cat([self(pixels[i:i + batch_size].to(device)).argmax(1).cpu()
                          for i in range(0, len(pixels), batch_size)])


def scan(model: PromptedCLIP, pool: torch.Tensor, config: ScanConfig | None = None,
         should_stop: Callable[[], bool] | None = None) -> Iterator[ScanEvent]:
    """Invert a trigger per candidate class on the OOD ``pool`` ((N, 3, S, S) pixels in [0, 1])."""
    config = (config or ScanConfig()).for_input(model.backbone.image_size)
    if config.method not in METHODS:
        raise InputError(f"unknown scan method {config.method!r}", hint="methods: " + ", ".join(METHODS))
    if not config.epsilon > 0:
        raise InputError(f"epsilon {config.epsilon} must be positive",
                         hint="leave it unset for the default (4/255 at 224 px)")
    started = time.time()
    names = list(model.class_names)
    classes = candidate_classes(config, len(names))
    fit, held = split_pool(pool, config.pool_size, config.holdout, config.seed)
    batches = _batches(len(fit), config)
    yield ScanStarted(classes, [names[k] for k in classes], len(batches), len(fit), len(held), config.as_dict())
    device = model.backbone.device
    records: list[dict[str, Any]] = []
    triggers: dict[int, dict[str, torch.Tensor]] = {}
    with frozen_learner(model):
        logits_of = Logits(model)
        clean_held = None  # predicted after the first class's steps, so its first snapshot comes at once
        for position, k in enumerate(classes):
            class_started = time.time()
            trigger = make_candidate(config.method, model.backbone.image_size, config.epsilon,
                                     config.seed + k).to(device)
            optimizer = _optimizer(trigger, config)
            loss = float("nan")
            for step, idx in enumerate(batches, start=1):
                if should_stop is not None and should_stop():
                    yield ScanStopped(records, round(time.time() - started, 2))
                    return
                logits = logits_of(trigger(fit[idx].to(device)))
                objective = trigger.loss(logits, k)
                optimizer.zero_grad(set_to_none=True)
                objective.backward()
                optimizer.step()
                trigger.project()
                trigger.after_step(logits.detach(), k)
                loss = float(objective.detach())
                if step == 1 or step % config.snapshot_every == 0 or step == len(batches):
                    yield TriggerSnapshot(k, names[k], position, step, len(batches), loss, trigger.picture(),
                                          trigger.true_scale())
            if clean_held is None:
                clean_held = logits_of.predict(held)
            record = _measure(logits_of, trigger, k, names[k], held, clean_held)
            record.update({"train_loss": round(loss, 4), "steps": len(batches),
                           "seconds": round(time.time() - class_started, 2)})
            records.append(record)
            triggers[k] = trigger.tensors()
            yield ClassFinished(position, len(classes), record, trigger)
    verdict = decide(records, config.resolved_statistic(), config.threshold, config.resolved_min_flip_rate())
    yield ScanFinished(ScanResult(config.as_dict(), names, records, triggers, verdict,
                                  round(time.time() - started, 2), len(fit), len(held), logits_of.image_passes))


def run_scan(model: PromptedCLIP, pool: torch.Tensor, config: ScanConfig | None = None,
             on_event: Callable[[ScanEvent], None] | None = None) -> ScanResult:
    """Drive ``scan`` to its end (CLI, benchmarks, tests)."""
    for event in scan(model, pool, config):
        if on_event is not None:
            on_event(event)
        if isinstance(event, ScanFinished):
            return event.result
    raise RuntimeError("scan ended without a result")


def _batches(n: int, config: ScanConfig) -> list[torch.Tensor]:
    """The same shuffled batches for every class (a fair comparison), ``epochs`` passes."""
    generator = torch.Generator().manual_seed(config.seed + 1)
    out: list[torch.Tensor] = []
    for _ in range(config.epochs):
        order = torch.randperm(n, generator=generator)
        out += [order[i:i + config.batch_size] for i in range(0, n, config.batch_size)]
    return out


def _optimizer(trigger: CandidateTrigger, config: ScanConfig) -> torch.optim.Optimizer:
    if config.method == "neural-cleanse":  # NC's own Adam settings
        return torch.optim.Adam(trigger.parameters(), lr=config.lr, betas=(0.5, 0.9))
    return torch.optim.Adam(trigger.parameters(), lr=config.lr)


@torch.no_grad()
def _measure(logits_of: Logits, trigger: CandidateTrigger, k: int, name: str, held: torch.Tensor,
             clean_held: torch.Tensor, batch_size: int = 128) -> dict[str, Any]:
    """Flip rate and mean margin loss of the finished trigger on the held-out images."""
    device = logits_of.model.backbone.device
    eligible = clean_held != k
    flips, margin_sum = 0, 0.0
    for i in range(0, len(held), batch_size):
        logits = logits_of(trigger(held[i:i + batch_size].to(device)))
        hit = (logits.argmax(1).cpu() == k) & eligible[i:i + batch_size]
        flips += int(hit.sum())
        margin_sum += float(margin_loss(logits, k)) * len(logits)
    n_eligible = int(eligible.sum())
    return {"index": k, "name": name, "flip_rate": round(flips / n_eligible, 4) if n_eligible else 0.0,
            "flips": flips, "eligible": n_eligible, "loss": round(margin_sum / max(len(held), 1), 4),
            **{key: round(value, 6) for key, value in trigger.stats().items()}}


def class_index(class_names: Sequence[str], name: str, role: str = "class") -> int:
    """A class given by name or index -> its index; ``role`` names it in the error ("target class")."""
    if name in class_names:
        return list(class_names).index(name)
    if name.isdigit() and int(name) < len(class_names):
        return int(name)
    raise InputError(f"{role} {name!r} is not one of the model's classes", hint="classes: " + ", ".join(class_names))


def parse_classes(spec: str | Sequence[str] | None, class_names: Sequence[str]) -> tuple[int, ...] | None:
    """``"balloon,clock"`` or ``["3", "clock"]`` -> class indices; None means every class."""
    if spec is None or spec == "" or spec == []:
        return None
    items = [s.strip() for s in (spec.split(",") if isinstance(spec, str) else spec) if str(s).strip()]
    return tuple(class_index(class_names, item, role="candidate class") for item in items)
