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
import math
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any, Literal

import torch

from inspector.baseline import (
    Baseline,
    fresh_flip_rate,
    fresh_margin,
    with_baseline,
    with_family_baseline,
    with_loss_baseline,
)
from inspector.candidates import (
    BLEND_ALPHA,
    COLOUR_BIAS_BOUND,
    COLOUR_MATRIX_BOUND,
    METHODS,
    OBJECTIVES,
    PATCH_SHARE,
    BlendInversion,
    CandidateTrigger,
    ColourInversion,
    Method,
    Objective,
    PatchInversion,
    UnitBoxInversion,
    candidate_from_tensors,
    make_candidate,
    margin_loss,
    objective_loss,
    repair_candidates,
    row_margins,
)
from inspector.detect import (
    DEFAULT_EVIDENCE,
    DEFAULT_MIN_FLIP_RATE,
    DEFAULT_SPREAD,
    DEFAULT_THRESHOLD,
    QUICK_FAMILIES,
    QUICK_FAMILIES_BY_DEFAULT,
    USE_COLOUR_FAMILY,
    Evidence,
    Spread,
    Statistic,
    Verdict,
    confirmed_by_transfer,
    decide,
    transfer_candidates,
)
from inspector.errors import InputError
from inspector.limits import MIN_POOL_IMAGES
from inspector.prompts import PromptedCLIP

Schedule = Literal["fast", "faithful"]
SCHEDULES: tuple[Schedule, ...] = ("fast", "faithful")
PUBLISHED_EPSILON = 4 / 255  # the published bound, for CLIP's 224-pixel input
PUBLISHED_IMAGE_SIZE = 224


@dataclass(frozen=True)
class FastPlanDefaults:
    """The fast schedule's plan where a scan leaves it unset (chosen in benchmarks/schedule_design-lr0.3-b16.md)."""

    rounds: tuple[int, ...]  # steps per round
    keep: float  # share of all classes still running after round r: keep ** (r + 1)
    measured: int  # finalists measured on the held-out images


# With a clean reference every class is compared with clean learners stopped after the same step
# (inspector.baseline), so half the classes can stop after 4 steps. Without one, the raw flip rate of a
# class stopped early is not comparable with a finalist's, and most classes have to run longer.
FAST_WITH_REFERENCE = FastPlanDefaults(rounds=(4, 4, 10), keep=0.5, measured=2)
FAST_RAW = FastPlanDefaults(rounds=(6, 6, 6), keep=0.75, measured=1)


def epsilon_share(per_255: float, name: str = "epsilon") -> float:
    """A trigger bound as people and the paper write it (/255 units) -> the engine's share of the pixel range;
    ``name`` is what the user typed it into (an option, a field)."""
    if not 0 < float(per_255) <= 255:
        raise InputError(f"{name} {float(per_255):g} is outside (0, 255]",
                         hint="give the bound in /255 units, e.g. 4 at 224 px or 14 on the 64 px pocket CLIP")
    return float(per_255) / 255


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
    """Settings of one scan. ``schedule="faithful"`` is the published one (one epoch per class, batch 32,
    Adam 0.1, every class measured on the held-out images); the default ``"fast"`` is successive halving."""

    method: Method = "inspector"
    epsilon: float | None = None  # L-inf bound in [0, 1] pixels; None: ``default_epsilon`` of the input size
    lr: float = 0.1
    objective: Objective = "margin"  # the inspector's loss (the others only for the paper's ablation)
    batch_size: int = 32
    epochs: int = 1
    pool_size: int = 1000  # OOD images used: fitting part + held-out part
    holdout: float = 0.2  # share of them held out to measure flip rates
    classes: tuple[int, ...] | None = None  # candidate classes (default: all)
    statistic: Statistic | None = None  # what feeds the anomaly index (default per method)
    threshold: float = DEFAULT_THRESHOLD
    spread: Spread = DEFAULT_SPREAD  # with a reference: what a class's excess is measured against (detect.decide)
    evidence: Evidence = DEFAULT_EVIDENCE  # with a reference that kept margins: flip-rate excess alone or with the loss
    min_flip_rate: float | None = None  # default: 0.5 for the inspector, none for Neural Cleanse
    snapshot_every: int = 4  # steps between trigger snapshots
    seed: int = 0
    schedule: Schedule = "fast"
    # The fast schedule: successive halving with its own steps. Unset parts: FAST_WITH_REFERENCE or FAST_RAW.
    fast_rounds: tuple[int, ...] | None = None  # steps per round; after each, the most promising classes go on
    fast_keep: float | None = None  # share of all classes still running after round r: keep ** (r + 1)
    fast_lr: float = 0.3  # larger steps on smaller batches: 18 steps of 16 images land where 25 of 32 at 0.1 do
    fast_batch_size: int = 16
    fast_window: int = 10  # steps whose fresh batches give a class's estimate
    fast_measured: int | None = None  # finalists with the highest estimates measured on the held-out images
    fast_joint_images: int = 80  # images per encoder pass when a round steps several classes together (joint_step)
    # The colour family (inspector method only): every class's colour transform runs ``colour_steps`` steps on the
    # first ``colour_batch_size`` images of the scan's first batches; its estimate counts the steps after the first.
    colour: bool | None = USE_COLOUR_FAMILY  # None: when the reference measured it; True: always; False: never
    colour_steps: int = 3
    colour_batch_size: int = 8
    colour_lr: float = 0.3
    colour_matrix_bound: float = COLOUR_MATRIX_BOUND
    colour_bias_bound: float = COLOUR_BIAS_BOUND
    # The blend family, run like the colour family: a pattern mixed into the image at opacity ``blend_alpha``.
    blend: bool | None = None  # True: always; None or False: never (a reference build measures it unless False)
    blend_steps: int = 3
    blend_batch_size: int = 8
    blend_lr: float = 1.0
    blend_alpha: float = BLEND_ALPHA
    # The patch family, run like the others: an opaque square of ``patch_share`` of the image side, placed anew
    # in every image.
    patch: bool | None = None  # None: when the reference measured it (as the colour family); True: always; False: never
    patch_steps: int = 3
    # a patch reaches fewer images than a colour filter: a larger sample was chosen on the dev zoo, but a step reads
    # at most the fast schedule's batch (``family_images``), so 16 images are what each step has read all along
    patch_batch_size: int = 32
    patch_lr: float = 1.0
    patch_share: float = PATCH_SHARE
    colour_joint_images: int = 64  # images per encoder pass when the classes' quick-family steps run together
    bf16: bool | None = None  # bfloat16 autocast on CUDA (default: for the fast schedule); no effect on CPU
    # The transfer check (inspector.transfer): a blend trigger at opacity ``transfer_alpha`` stepped ``transfer_steps``
    # times on ``transfer_images`` images per step, for the classes an unflagged scan points at.
    transfer: bool | None = None  # None: when the reference carries the check; False: never
    transfer_steps: int = 40
    transfer_images: int = 16
    transfer_lr: float = 0.1
    transfer_alpha: float = 0.1
    # Per-class flip rates of clean learners of the same task under this schedule (inspector.reference): the
    # index then reads the excess over them, so classes prompt tuning makes easy to reach do not pass for a backdoor.
    reference: Baseline | None = None
    reference_from: str = ""  # where the reference comes from, for the report

    def for_input(self, image_size: int) -> ScanConfig:
        """A copy with the defaults that depend on the input size and on the reference filled in."""
        epsilon = self.epsilon if self.epsilon is not None else default_epsilon(image_size)
        plan = self.fast_defaults()
        return replace(self, epsilon=epsilon, fast_rounds=self.fast_rounds or plan.rounds,
                       fast_keep=self.fast_keep if self.fast_keep is not None else plan.keep,
                       fast_measured=self.fast_measured if self.fast_measured is not None else plan.measured)

    def fast_defaults(self, reference: bool | None = None) -> FastPlanDefaults:
        """The fast plan for unset settings: ``reference`` (default: whether this config has one) picks which."""
        with_reference = self.reference is not None if reference is None else reference
        return FAST_WITH_REFERENCE if with_reference else FAST_RAW

    def runs(self, family: str) -> bool:
        """Whether this scan runs the quick ``family`` ("colour", "blend" or "patch"): when told to, or by default
        (None) when it is one of ``QUICK_FAMILIES_BY_DEFAULT`` and the reference measured it."""
        wanted = getattr(self, family)
        if self.method != "inspector" or getattr(self, f"{family}_steps") <= 1 or wanted is False:
            return False
        return wanted is True or (family in QUICK_FAMILIES_BY_DEFAULT and self.reference is not None
                                  and bool(self.reference.families.get(family)))

    @property
    def quick_families(self) -> tuple[str, ...]:
        """The quick families this scan runs, in the order it runs them."""
        return tuple(family for family in QUICK_FAMILIES if self.runs(family))

    def family_settings(self, family: str) -> dict[str, Any]:
        """What a reference's flip rates of ``family`` must have been measured with to be compared with this scan's."""
        keys = {"colour": ("colour_steps", "colour_batch_size", "colour_lr", "colour_matrix_bound",
                           "colour_bias_bound"),
                "blend": ("blend_steps", "blend_batch_size", "blend_lr", "blend_alpha"),
                "patch": ("patch_steps", "patch_batch_size", "patch_lr", "patch_share")}[family]
        return {key: getattr(self, key) for key in keys}

    def transfer_settings(self) -> dict[str, Any]:
        """What a reference's transfer gaps must have been measured with to be compared with this scan's."""
        return {key: getattr(self, key) for key in ("transfer_steps", "transfer_images", "transfer_lr",
                                                     "transfer_alpha")}

    def runs_transfer(self) -> bool:
        """Whether an unflagged scan runs the transfer check: the inspector's, unless told not to, with a reference
        whose transfer gaps were measured with these settings."""
        reference = self.reference
        return (self.method == "inspector" and self.transfer is not False and reference is not None
                and bool(reference.transfer) and reference.transfer_settings == self.transfer_settings())

    def family_images(self, family: str) -> int:
        """Images each step of ``family`` reads: the first ``<family>_batch_size`` of the fast schedule's batch of
        that step (``family_batch``), so no more than that batch holds, whichever schedule runs the additive family."""
        return min(getattr(self, f"{family}_batch_size"), self.fast_batch_size)

    def family_steps(self, family: str, n_batches: int) -> int:
        """Steps each class's ``family`` trigger takes in this scan (0: the family does not run)."""
        return min(getattr(self, f"{family}_steps"), n_batches) if self.runs(family) else 0

    def quick_total_steps(self, n_classes: int, n_batches: int) -> int:
        return n_classes * sum(self.family_steps(family, n_batches) for family in QUICK_FAMILIES)

    def resolved_statistic(self) -> Statistic:
        if self.statistic:
            return self.statistic
        if self.method != "inspector":
            return "mask_norm" if self.method == "neural-cleanse" else "trigger_size"
        return "excess_flip_rate" if self.reference else "flip_rate"

    def resolved_min_flip_rate(self) -> float:
        if self.min_flip_rate is not None:
            return self.min_flip_rate
        return DEFAULT_MIN_FLIP_RATE if self.method == "inspector" else 0.0

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ScanConfig:
        """The settings a report recorded (``as_dict``), without the reference's per-learner values."""
        known = {f.name for f in fields(cls)} - {"reference"}
        values = {key: value for key, value in data.items() if key in known}
        for key in ("classes", "fast_rounds"):
            if values.get(key) is not None:
                values[key] = tuple(int(v) for v in values[key])
        return cls(**values)

    def as_dict(self) -> dict[str, Any]:
        out = asdict(replace(self, reference=None))
        out["reference"] = self.reference.means() if self.reference is not None else None
        out["classes"] = list(self.classes) if self.classes is not None else None
        out["fast_rounds"] = list(self.fast_rounds) if self.fast_rounds is not None else None
        if self.schedule != "fast":
            out = {k: v for k, v in out.items() if not k.startswith("fast_")}
        for family in QUICK_FAMILIES:
            if not self.runs(family):
                out = {k: v for k, v in out.items() if not k.startswith(f"{family}_")}
        out["statistic"], out["min_flip_rate"] = self.resolved_statistic(), self.resolved_min_flip_rate()
        return out


@dataclass
class ScanStarted:
    classes: list[int]
    class_names: list[str]
    steps_per_class: int  # the most steps one class gets (the finalists', in the fast schedule)
    total_steps: int  # trigger-optimisation steps of the whole scan
    fit_images: int
    held_out_images: int
    settings: ScanConfig  # resolved for the model's input size


@dataclass
class TriggerSnapshot:
    class_index: int
    class_name: str
    position: int  # 0-based rank of this class in the scan order
    step: int
    steps: int
    loss: float
    scan_step: int  # steps of the whole scan so far (out of ``ScanStarted.total_steps``)
    picture: torch.Tensor  # (3, S, S) amplified for display
    true_scale: torch.Tensor  # (3, S, S) as applied
    family: str = "additive"  # which inversion family's trigger this is


@dataclass
class ClassFinished:
    position: int
    total: int
    record: dict[str, Any]  # index, name, flip_rate, loss, ... (see ``_measure``)
    trigger: CandidateTrigger


@dataclass
class ClassEstimate:
    """A class still running in the fast schedule: its flip rate so far on the fresh batches of its last steps
    (each counted before the trigger learnt from it), so a front-end can show every class from the first round
    on; the class's ``ClassFinished`` record replaces it."""

    class_index: int
    class_name: str
    steps: int
    flip_rate: float
    loss: float  # mean margin loss over the same batches


@dataclass
class ScanStopped:
    finished: list[dict[str, Any]]
    seconds: float


@dataclass
class ScanResult:
    """Everything a report needs: settings, per-class records, triggers, the verdict, timings.

    A result knows how it was made, so it can rebuild any class's trigger and the held-out OOD images
    its flip rates were measured on (for the before/after view and for repair).
    """

    settings: ScanConfig  # resolved for the model's input size
    class_names: list[str]
    classes: list[dict[str, Any]]
    triggers: dict[int, dict[str, torch.Tensor]]
    verdict: Verdict
    seconds: float
    fit_images: int
    held_out_images: int
    image_passes: int  # image-encoder forward passes (images), for the speed benchmarks
    extra: dict[str, Any] = field(default_factory=dict)

    def trigger(self, k: int, family: str | None = None) -> CandidateTrigger:
        """Class ``k``'s reconstructed trigger (on the CPU): of ``family``, by default the one that gave the class
        its anomaly index."""
        assert self.settings.epsilon is not None
        return candidate_from_tensors(self.settings.method, self._tensors(k), self.settings.epsilon,
                                      family or self.family(k))

    def repair_triggers(self, k: int, families: str = "indexed",
                        colour_scale: float = 1.0) -> tuple[CandidateTrigger, tuple[CandidateTrigger, ...]]:
        """Class ``k``'s trigger to repair against (the indexed family's) and, with ``families`` "both", its
        trigger of every other family the scan reconstructed (``repair.RepairConfig.families``, ``colour_scale``)."""
        assert self.settings.epsilon is not None
        return repair_candidates(self.settings.method, self._tensors(k), self.settings.epsilon, self.family(k),
                                 families, colour_scale)

    def _tensors(self, k: int) -> dict[str, torch.Tensor]:
        """Class ``k``'s saved trigger tensors, every family's; a class that was not scanned has none."""
        if k not in self.triggers:
            raise InputError(f"class {self.class_names[k]!r} was not scanned, so it has no trigger",
                             hint="scan it first (candidate classes)")
        return self.triggers[k]

    def family(self, k: int) -> str:
        """The inversion family that gave class ``k`` its anomaly index ("additive" or "colour")."""
        position = next((i for i, c in enumerate(self.classes) if int(c["index"]) == k), None)
        families = self.verdict.families
        return families[position] if position is not None and position < len(families) else "additive"

    def redecided(self, threshold: float, min_flip_rate: float | None = None) -> ScanResult:
        """The same scan under another rule: the per-class records and triggers stand, only the decision on them
        changes (an analyst moving the threshold needs no rescan). ``min_flip_rate`` None keeps the scan's."""
        settings = replace(self.settings, threshold=float(threshold),
                           min_flip_rate=self.settings.min_flip_rate if min_flip_rate is None else float(min_flip_rate))
        verdict = decide(self.classes, settings.resolved_statistic(), settings.threshold,
                         settings.resolved_min_flip_rate(), settings.spread, settings.evidence)
        if self.verdict.transfer:  # the classes the transfer check measured, judged by the new rule too
            verdict = confirmed_by_transfer(verdict, self.verdict.transfer)
        return replace(self, settings=settings, verdict=verdict)

    def held_out(self, pool: torch.Tensor) -> torch.Tensor:
        """The held-out part of ``pool`` (the same pool the scan read) that the flip rates were measured on."""
        return split_pool(pool, self.settings.pool_size, self.settings.holdout, self.settings.seed)[1]

    def record(self, k: int) -> dict[str, Any]:
        return next(c for c in self.classes if int(c["index"]) == k)


@dataclass
class ScanFinished:
    result: ScanResult


ScanEvent = ScanStarted | TriggerSnapshot | ClassEstimate | ClassFinished | ScanStopped | ScanFinished


def split_pool(pixels: torch.Tensor, pool_size: int, holdout: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A seeded sample of ``pool_size`` images, split into (fitting part, held-out part)."""
    used = min(len(pixels), pool_size)
    if used < MIN_POOL_IMAGES:
        what = f"the OOD pool has {len(pixels)} image(s)" if len(pixels) < pool_size else f"pool size {pool_size}"
        raise InputError(f"{what}; a scan needs at least {MIN_POOL_IMAGES} (a fifth is held out to measure "
                         "flip rates)", hint="use a pool of a few hundred unlabelled images (1,000 recommended)")
    if not 0 < holdout < 1:
        raise InputError(f"holdout share {holdout} is not between 0 and 1", hint="use e.g. 0.2")
    order = torch.randperm(len(pixels), generator=torch.Generator().manual_seed(seed))[:pool_size]
    n_held = held_out_count(len(order), holdout)
    return pixels[order[n_held:]], pixels[order[:n_held]]


def held_out_count(used: int, holdout: float) -> int:
    """Images held out of ``used`` pool images (at least one, and one left to fit on)."""
    return min(used - 1, max(1, round(used * holdout)))


def fast_steps(config: ScanConfig, pool_images: int) -> int:
    """Steps the finalists of a fast scan get on a pool of this many images (fewer when it has few batches)."""
    used = min(pool_images, config.pool_size)
    fit = used - held_out_count(used, config.holdout)
    batches = math.ceil(fit / config.fast_batch_size) * config.epochs
    return min(sum(config.fast_rounds or config.fast_defaults().rounds), batches)


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
    """Logits of pixel batches, reusing CoOp's class text features (they do not depend on the image).

    ``bf16``: run the encoders under bfloat16 autocast (CUDA only; logits come back in float32).
    """

    def __init__(self, model: PromptedCLIP, bf16: bool = False) -> None:
        self.model = model
        self.text = None
        if model.kind == "coop":
            with torch.no_grad():
                self.text = model.text_features()
        self.image_passes = 0
        self.bf16 = bf16 and model.backbone.device.type == "cuda"

    def __call__(self, pixels: torch.Tensor) -> torch.Tensor:
        self.image_passes += len(pixels)
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=self.bf16):
            logits = self.model.logits_from_features(self.model.image_features(pixels), self.text)
        return logits.float()

    def margin(self, pixels: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        """CoCoOp's margin loss toward ``k`` with its exact gradient, and the (detached) logits of all classes."""
        targets = torch.full((len(pixels),), k, dtype=torch.long, device=pixels.device)
        margins, logits = self.margins(pixels, targets)
        return margins.mean(), logits

    def margins(self, pixels: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """CoCoOp's per-image margin toward each image's own target, with its exact gradient, and the logits.

        The margin max_{j != k} z_j - z_k only sends gradient through class k and each image's best other
        class. So all classes' logits are computed without a graph (to find that class), and the text
        tower runs with gradients for just those two prompts per image, not for every class.
        """
        self.image_passes += len(pixels)
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=self.bf16):
            features = self.model.image_features(pixels)
            with torch.no_grad():
                logits = self.model.logits_from_features(features.detach()).float()
            others = logits.scatter(1, targets.reshape(-1, 1), float("-inf"))
            pair = torch.stack([targets, others.argmax(1)], dim=1)
            text = self.model.text_features(features, pair)  # (B, 2, D)
            pair_logits = self.model.logit_scale * torch.einsum("bd,bnd->bn", features, text.to(features.dtype))
        pair_logits = pair_logits.float()
        return pair_logits[:, 1] - pair_logits[:, 0], logits

    @torch.no_grad()
    def predict(self, pixels: torch.Tensor, batch_size: int = 128) -> torch.Tensor:
        device = self.model.backbone.device
        return torch.cat([self(pixels[i:i + batch_size].to(device)).argmax(1).cpu()
                          for i in range(0, len(pixels), batch_size)])


class CleanPredictions:
    """The model's predictions on the clean OOD batches, computed once per batch and shared by all classes.

    An image the model already puts in class k cannot be flipped to k, so it does not count for k.
    """

    def __init__(self, logits_of: Logits, fit: torch.Tensor, batches: list[torch.Tensor]) -> None:
        self.logits_of, self.fit, self.batches = logits_of, fit, batches
        self._done: dict[int, torch.Tensor] = {}

    def __call__(self, step: int) -> torch.Tensor:
        if step not in self._done:
            self._done[step] = self.logits_of.predict(self.fit[self.batches[step]])
        return self._done[step]


class ClassInversion:
    """One candidate class's trigger being inverted: the trigger, its optimiser and its learning curve.

    Each step reads the trigger's success on its batch *before* learning from it. Within one pass over
    the pool those images are new to the trigger, so the curve is an honest (progressive) held-out
    estimate that costs no extra image-encoder pass.
    """

    def __init__(self, k: int, name: str, trigger: CandidateTrigger, method: str, lr: float,
                 objective: Objective = "margin") -> None:
        self.k, self.name, self.trigger, self.objective = k, name, trigger, objective
        baseline = method in ("neural-cleanse", "pixel-backdoor")
        betas = (0.5, 0.9) if baseline else (0.9, 0.999)  # NC's and Pixel Backdoor's own Adam settings
        self.optimizer = torch.optim.Adam(trigger.parameters(), lr=lr, betas=betas)
        self.steps = 0
        self.loss = float("nan")
        self.curve: list[tuple[int, int, float]] = []  # per step: flips, eligible images, margin loss

    def step(self, logits_of: Logits, pixels: torch.Tensor, clean_predictions: torch.Tensor) -> float:
        """Stamp, logits, loss, Adam step, project: the method's inner loop on one batch."""
        if isinstance(self.trigger, UnitBoxInversion) and self.objective != "margin":
            logits = logits_of(self.trigger(pixels))
            objective = objective_loss(self.objective, logits, self.k)
        elif isinstance(self.trigger, UnitBoxInversion) and logits_of.model.kind == "cocoop":
            objective, logits = logits_of.margin(self.trigger(pixels), self.k)
        else:
            logits = logits_of(self.trigger(pixels))
            objective = self.trigger.loss(logits, self.k)
        self.optimizer.zero_grad(set_to_none=True)
        objective.backward()
        self.optimizer.step()
        self.trigger.project()
        return self.record(logits, clean_predictions, float(objective.detach()))

    @torch.no_grad()
    def record(self, logits: torch.Tensor, clean_predictions: torch.Tensor, loss: float) -> float:
        """After an update: the batch's flips (read before it), eligible images and margin go on the curve."""
        self.trigger.after_step(logits, self.k)
        eligible = clean_predictions != self.k
        flips = int(((logits.argmax(1).cpu() == self.k) & eligible).sum())
        self.curve.append((flips, int(eligible.sum()), float(margin_loss(logits, self.k))))
        self.steps += 1
        self.loss = loss
        return self.loss

    def fresh_flip_rate(self, last: int) -> float:
        """Share of eligible images flipped over the ``last`` steps, each counted before the trigger learnt from it."""
        return fresh_flip_rate(self.curve, last)

    def fresh_margin(self, last: int) -> float:
        """Mean margin loss over the ``last`` steps' batches, before each update (lower: easier to reach)."""
        return fresh_margin(self.curve, last)

    def snapshot(self, position: int, steps: int, scan_step: int) -> TriggerSnapshot:
        family = getattr(self.trigger, "family", "additive")
        return TriggerSnapshot(self.k, self.name, position, self.steps, steps, self.loss, scan_step,
                               self.trigger.picture(), self.trigger.true_scale(), family)


def joint_step(arms: Sequence[ClassInversion], logits_of: Logits, pixels: torch.Tensor,
               clean_predictions: torch.Tensor) -> None:
    """One step of every arm on the same images, in one encoder pass.

    The arms' parameters are disjoint and each arm's loss is its own mean over its copy of the batch, so
    the summed loss gives each arm the gradient it would get alone, and each keeps its own Adam: the same
    updates as stepping the arms one after the other, in fewer, larger calls of the encoders.
    """
    n = len(pixels)
    targets = torch.tensor([arm.k for arm in arms], device=pixels.device).repeat_interleave(n)
    stamped = torch.cat([arm.trigger(pixels) for arm in arms])
    if logits_of.model.kind == "cocoop":
        margins, logits = logits_of.margins(stamped, targets)
    else:
        logits = logits_of(stamped)
        margins = row_margins(logits, targets)
    objectives = margins.reshape(len(arms), n).mean(1)
    for arm in arms:
        arm.optimizer.zero_grad(set_to_none=True)
    objectives.sum().backward()
    for i, arm in enumerate(arms):
        arm.optimizer.step()
        arm.trigger.project()
        arm.record(logits[i * n:(i + 1) * n].detach(), clean_predictions, float(objectives[i].detach()))


def family_arm(family: str, k: int, name: str, config: ScanConfig, device: torch.device,
               image_size: int) -> ClassInversion:
    """Class ``k``'s trigger of the quick ``family``, starting from no change (the identity transform, a grey
    pattern at its opacity, a grey patch)."""
    if family == "colour":
        trigger: UnitBoxInversion = ColourInversion(config.colour_matrix_bound, config.colour_bias_bound)
    elif family == "patch":  # each class's places drawn from its own seed, so a scan repeats
        trigger = PatchInversion(image_size, config.patch_share, seed=config.seed * 1000 + k)
    else:
        trigger = BlendInversion(image_size, config.blend_alpha)
    return ClassInversion(k, name, trigger.to(device), "inspector", getattr(config, f"{family}_lr"))


def family_batches_of(n: int, config: ScanConfig) -> list[torch.Tensor]:
    """The batches a quick family draws its images from, whichever schedule runs the additive family: the fast
    schedule's, on which the clean reference measured the families (``family_flip_rates``, ``class_curve_steps``),
    so that a faithful scan's family flip rates are compared with clean learners' measured on the same images."""
    return _batches(n, config.fast_batch_size, config.epochs, config.seed)


def family_batch(family: str, fit: torch.Tensor, batches: list[torch.Tensor], clean_fit: CleanPredictions, t: int,
                 config: ScanConfig, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """A quick family's images at step ``t`` (the first ``family_images`` of batch t), clean predictions."""
    n = config.family_images(family)
    return fit[batches[t][:n]].to(device), clean_fit(t)[:n]


def family_record(family: str, arm: ClassInversion) -> dict[str, Any]:
    """A quick family's fresh-batch estimate: flips over the steps after the first (taken from its neutral start),
    under the family's own keys (``colour_flip_rate``, ``blend_flip_rate``, ...)."""
    part = arm.curve[1:]
    flips, eligible = sum(f for f, _, _ in part), sum(e for _, e, _ in part)
    return {f"{family}_flip_rate": round(flips / eligible, 4) if eligible else 0.0, f"{family}_flips": flips,
            f"{family}_eligible": eligible, f"{family}_loss": round(arm.fresh_margin(len(part)), 4),
            **{key: round(value, 6) for key, value in arm.trigger.stats().items()}}


def scan(model: PromptedCLIP, pool: torch.Tensor, config: ScanConfig | None = None,
         should_stop: Callable[[], bool] | None = None) -> Iterator[ScanEvent]:
    """Invert a trigger per candidate class on the OOD ``pool`` ((N, 3, S, S) pixels in [0, 1])."""
    config = (config or ScanConfig()).for_input(model.backbone.image_size)
    if config.method not in METHODS:
        raise InputError(f"unknown scan method {config.method!r}", hint="methods: " + ", ".join(METHODS))
    if config.schedule not in SCHEDULES:
        raise InputError(f"unknown schedule {config.schedule!r}", hint="schedules: " + ", ".join(SCHEDULES))
    if config.objective not in OBJECTIVES:
        raise InputError(f"unknown inversion loss {config.objective!r}", hint="losses: " + ", ".join(OBJECTIVES))
    if not config.epsilon > 0:
        raise InputError(f"epsilon {config.epsilon} must be positive",
                         hint="leave it unset for the default (4/255 at 224 px)")
    started = time.time()
    names = list(model.class_names)
    classes = candidate_classes(config, len(names))
    _check_reference(config, [names[k] for k in classes])
    fit, held = split_pool(pool, config.pool_size, config.holdout, config.seed)
    fast = config.schedule == "fast"
    batches = _batches(len(fit), config.fast_batch_size if fast else config.batch_size, config.epochs, config.seed)
    family_batches = batches if fast else family_batches_of(len(fit), config)
    plan = fast_plan(config, len(classes), len(batches)) if fast else None
    steps_per_class = plan.finalist_steps if plan is not None else len(batches)
    total_steps = plan.total_steps(len(classes)) if plan is not None else len(batches) * len(classes)
    total_steps += config.quick_total_steps(len(classes), len(family_batches))
    yield ScanStarted(classes, [names[k] for k in classes], steps_per_class, total_steps, len(fit), len(held),
                      config)
    with frozen_learner(model):
        run = _Run(model, config, names, fit, held, batches, family_batches, should_stop, started)
        if plan is None:
            yield from run.quick_families(classes)
            if not run.stopped:
                yield from run.faithful(classes)
        else:
            yield from run.fast(classes, plan)
    if run.stopped:
        return
    records = [run.records[k] for k in classes]
    verdict = decide(records, config.resolved_statistic(), config.threshold, config.resolved_min_flip_rate(),
                     config.spread, config.evidence)
    triggers = {k: {**run.arms[k].trigger.tensors(),
                    **{key: value for arms in run.family_arms.values() if k in arms
                       for key, value in arms[k].trigger.tensors().items()}} for k in classes}
    extra = {f"{family}_seconds": seconds for family, seconds in run.family_seconds.items()}
    positions = transfer_candidates(verdict) if config.runs_transfer() else []
    if positions:
        from inspector import transfer  # it builds on this module

        checked_at = time.time()
        with frozen_learner(model):
            clean_held = run.clean_held if run.clean_held is not None else run.logits_of.predict(held)
            checked, tensors = yield from transfer.check(model, positions, records, run.logits_of, fit,
                                                         run.family_batches, run.family_clean, held, clean_held,
                                                         config, run.scan_steps)
        verdict = confirmed_by_transfer(verdict, checked)
        for k, found in tensors.items():
            triggers[k].update(found)
        extra["transfer_seconds"] = round(time.time() - checked_at, 2)
    yield ScanFinished(ScanResult(config, names, records, triggers, verdict, round(time.time() - started, 2),
                                  len(fit), len(held), run.logits_of.image_passes, extra))


def _check_reference(config: ScanConfig, names: list[str]) -> None:
    if config.resolved_statistic() == "excess_flip_rate":
        if not config.reference:
            raise InputError("the excess flip rate needs a clean reference", hint="pass a reference, or use flip_rate")
        missing = [n for n in names if n not in config.reference.held_out]
        if missing:
            raise InputError(f"the reference has no flip rate for class {missing[0]!r}",
                             hint="use a reference built for this model's classes")


@dataclass
class FastPlan:
    """Successive halving: every class runs ``rounds[0]`` steps, the best ``keep[i]`` go on for ``rounds[i + 1]``."""

    rounds: tuple[int, ...]
    keep: tuple[int, ...]

    @property
    def finalist_steps(self) -> int:
        return sum(self.rounds)

    def total_steps(self, n_classes: int) -> int:
        running = [n_classes, *self.keep]
        return sum(steps * n for steps, n in zip(self.rounds, running, strict=True))


def fast_plan(config: ScanConfig, n_classes: int, n_batches: int) -> FastPlan:
    """The fast schedule's rounds for this many candidate classes and batches (``config`` after ``for_input``)."""
    assert config.fast_rounds is not None and config.fast_keep is not None, "call ScanConfig.for_input first"
    rounds, total = [], 0
    for steps in config.fast_rounds:  # never more steps than the batches of the configured epochs
        steps = max(0, min(steps, n_batches - total))
        if steps:
            rounds.append(steps)
            total += steps
    keep = [min(n_classes, max(2, math.ceil(n_classes * config.fast_keep ** (i + 1)))) for i in range(len(rounds) - 1)]
    return FastPlan(tuple(rounds), tuple(keep))


class _Run:
    """One scan while its schedule runs: the classes' inversions, the records so far, the shared predictions."""

    def __init__(self, model: PromptedCLIP, config: ScanConfig, names: list[str], fit: torch.Tensor,
                 held: torch.Tensor, batches: list[torch.Tensor], family_batches: list[torch.Tensor],
                 should_stop: Callable[[], bool] | None, started: float) -> None:
        self.model, self.config, self.names = model, config, names
        self.fit, self.held, self.batches, self.family_batches = fit, held, batches, family_batches
        self.should_stop, self.started = should_stop, started
        self.device = model.backbone.device
        bf16 = config.bf16 if config.bf16 is not None else config.schedule == "fast"
        self.logits_of = Logits(model, bf16=bf16)
        self.clean_fit = CleanPredictions(self.logits_of, fit, batches)
        self.family_clean = (self.clean_fit if family_batches is batches
                             else CleanPredictions(self.logits_of, fit, family_batches))
        self.clean_held: torch.Tensor | None = None
        self.arms: dict[int, ClassInversion] = {}
        self.family_arms: dict[str, dict[int, ClassInversion]] = {}  # quick family -> class -> its arm
        self.family_seconds: dict[str, float] = {}
        self.records: dict[int, dict[str, Any]] = {}
        self.stopped = False
        self.scan_steps = 0

    def arm(self, k: int) -> ClassInversion:
        if k not in self.arms:
            trigger = make_candidate(self.config.method, self.model.backbone.image_size, self.config.epsilon,
                                     self.config.seed + k).to(self.device)
            lr = self.config.fast_lr if self.config.schedule == "fast" else self.config.lr
            self.arms[k] = ClassInversion(k, self.names[k], trigger, self.config.method, lr, self.config.objective)
        return self.arms[k]

    def joint_steps(self, group: list[ClassInversion], classes: list[int], shown_steps: int
                    ) -> Iterator[ScanEvent]:
        """One more step of every arm of ``group``, all on their next batch of the shared order (the same one: the
        arms of a round have taken as many steps), in one encoder pass (``joint_step``; a group of one, as the
        faithful schedule steps, takes its own step), with snapshots."""
        if self.should_stop is not None and self.should_stop():
            self.stopped = True
            yield ScanStopped(list(self.records.values()), round(time.time() - self.started, 2))
            return
        t = group[0].steps
        assert all(arm.steps == t for arm in group), "a joint step needs arms at the same step"
        pixels = self.fit[self.batches[t]].to(self.device)
        if len(group) == 1:
            group[0].step(self.logits_of, pixels, self.clean_fit(t))
        else:
            joint_step(group, self.logits_of, pixels, self.clean_fit(t))
        every, done = self.config.snapshot_every, self.scan_steps
        self.scan_steps += len(group)
        for i, arm in enumerate(group):  # numbered as if stepped one after the other
            if arm.steps == 1 or arm.steps % every == 0 or arm.steps == shown_steps:
                yield arm.snapshot(classes.index(arm.k), shown_steps, done + i + 1)

    def groups(self, active: list[int], first_alone: bool) -> list[list[ClassInversion]]:
        """The round's classes in groups stepped together: as many as ``fast_joint_images`` images hold, for the
        inspector's margin only (the baselines' losses and cost schedules are per trigger); ``first_alone``: the
        first class steps by itself, so that a front-end has its first picture after one short step."""
        arms = [self.arm(k) for k in active]
        joins = self.config.method == "inspector" and self.config.objective == "margin"
        size = max(1, self.config.fast_joint_images // self.config.fast_batch_size) if joins else 1
        head = [[arms[0]]] if first_alone and size > 1 else []
        rest = arms[len(head):]
        return head + [rest[i:i + size] for i in range(0, len(rest), size)]

    def quick_families(self, classes: list[int]) -> Iterator[ScanEvent]:
        """Every quick family the scan runs, one after the other (``quick``)."""
        for family in self.config.quick_families:
            if not self.stopped:
                yield from self.quick(family, classes)

    def quick(self, family: str, classes: list[int]) -> Iterator[ScanEvent]:
        """A quick family (before the additive steps in the faithful schedule, after every class's first one in the
        fast schedule): every class's trigger of ``family`` for a few steps on the same images, the classes stepped
        together (``joint_step``) in groups of at most ``colour_joint_images`` images."""
        steps = self.config.family_steps(family, len(self.family_batches))
        started = time.time()
        arms = self.family_arms.setdefault(family, {})
        per_pass = max(1, self.config.colour_joint_images // self.config.family_images(family))
        size = self.model.backbone.image_size
        for first in range(0, len(classes), per_pass):
            for k in classes[first:first + per_pass]:
                arms[k] = family_arm(family, k, self.names[k], self.config, self.device, size)
            group = [arms[k] for k in classes[first:first + per_pass]]
            for t in range(steps):
                if self.should_stop is not None and self.should_stop():
                    self.stopped = True
                    yield ScanStopped([], round(time.time() - self.started, 2))
                    return
                joint_step(group, self.logits_of, *family_batch(family, self.fit, self.family_batches,
                                                                self.family_clean, t, self.config, self.device))
                self.scan_steps += len(group)
                if t == 0 or t == steps - 1:  # the first picture soon, and each class's last
                    for arm in group:
                        yield arm.snapshot(classes.index(arm.k), steps, self.scan_steps)
        self.family_seconds[family] = round(time.time() - started, 2)

    def finish(self, arm: ClassInversion, position: int, total: int, held_out: bool,
               seconds: float) -> ClassFinished:
        """The class's record: flip rate and loss on the held-out images, or (``held_out`` False) on its last
        fresh batches; ``seconds``: the time its steps took, to which the measurement's is added."""
        measuring = time.time()
        arm.trigger.settle()
        if held_out:
            if self.clean_held is None:
                self.clean_held = self.logits_of.predict(self.held)
            record = _measure(self.logits_of, arm.trigger, arm.k, arm.name, self.held, self.clean_held)
        else:
            window = arm.curve[-self.config.fast_window:]
            record = {"index": arm.k, "name": arm.name, "flip_rate": round(arm.fresh_flip_rate(len(window)), 4),
                      "flips": sum(f for f, _, _ in window), "eligible": sum(e for _, e, _ in window),
                      "loss": round(arm.fresh_margin(len(window)), 4),
                      **{key: round(value, 6) for key, value in arm.trigger.stats().items()}}
        record.update({"measured_on": "held-out" if held_out else "fresh batches", "train_loss": round(arm.loss, 4),
                       "steps": arm.steps, "seconds": round(seconds + time.time() - measuring, 2),
                       "curve": [round(f / e, 4) if e else 0.0 for f, e, _ in arm.curve]})
        for family, arms in self.family_arms.items():
            if arm.k in arms:
                record.update(family_record(family, arms[arm.k]))
        reference = self.config.reference
        if reference is not None:
            record = with_baseline(record, reference.learner_values(record))
            record = with_loss_baseline(record, reference.learner_losses(record))
            for family, arms in self.family_arms.items():
                if arm.k in arms and arm.name in reference.families.get(family, {}):
                    record = with_family_baseline(record, family, reference.families[family][arm.name])
        self.records[arm.k] = record
        return ClassFinished(position, total, record, arm.trigger)

    def faithful(self, classes: list[int]) -> Iterator[ScanEvent]:
        """The published schedule: class after class, one full epoch each, then its held-out flip rate."""
        for position, k in enumerate(classes):
            class_started = time.time()
            arm = self.arm(k)
            for _ in range(len(self.batches)):
                yield from self.joint_steps([arm], classes, len(self.batches))
                if self.stopped:
                    return
            yield self.finish(arm, position, len(classes), held_out=True, seconds=time.time() - class_started)

    def fast(self, classes: list[int], plan: FastPlan) -> Iterator[ScanEvent]:
        """Successive halving: a short run for every class, longer ones for the classes easiest to reach.

        Within a round the classes take their steps in turn (step t of every class, then step t + 1), so that
        every class has an estimate after the round's first step; the quick families run right after that first
        step, not before it, so that a front-end shows every class within seconds. Classes at the same step share
        its batch, so they step together in groups (``groups``, ``joint_step``): larger encoder calls, the same
        updates to float rounding. A class's trajectory does not depend on the others nor on the quick families
        (its own batches, trigger and optimiser), so neither the order nor the grouping changes anything else.
        After each round the classes still running are ranked by the margin loss on their last fresh batches, and
        the others stop there. Every class's flip rate is then its share of fresh-batch
        images flipped over its last ``fast_window`` steps, except for the ``fast_measured`` classes with the
        highest ones, which are measured on the held-out images as in the faithful schedule.
        """
        active, finished, shown = list(classes), 0, 0
        spent: dict[int, float] = dict.fromkeys(classes, 0.0)
        for r, steps in enumerate(plan.rounds):
            shown += steps
            for t in range(steps):
                for group in self.groups(active, first_alone=r == 0 and t == 0):
                    began = time.time()
                    yield from self.joint_steps(group, classes, shown)
                    if self.stopped:
                        return
                    share = (time.time() - began) / len(group)
                    for arm in group:
                        last = min(arm.steps, self.config.fast_window)
                        spent[arm.k] += share
                        yield ClassEstimate(arm.k, arm.name, arm.steps, round(arm.fresh_flip_rate(last), 4),
                                            round(arm.fresh_margin(last), 4))
                if r == 0 and t == 0:
                    yield from self.quick_families(classes)
                    if self.stopped:
                        return
            if r == len(plan.rounds) - 1:
                break
            ranked = sorted(active, key=lambda k: self.arms[k].fresh_margin(steps))
            for k in ranked[plan.keep[r]:]:
                yield self.finish(self.arms[k], finished, len(classes), held_out=False, seconds=spent[k])
                finished += 1
            active = [k for k in active if k in ranked[:plan.keep[r]]]
        window = self.config.fast_window
        ranked = sorted(active, key=lambda k: -self.arms[k].fresh_flip_rate(window))
        measured = set(ranked[:self.config.fast_measured or 0])
        for k in ranked:
            yield self.finish(self.arms[k], finished, len(classes), held_out=k in measured, seconds=spent[k])
            finished += 1


def run_scan(model: PromptedCLIP, pool: torch.Tensor, config: ScanConfig | None = None,
             on_event: Callable[[ScanEvent], None] | None = None) -> ScanResult:
    """Drive ``scan`` to its end (CLI, benchmarks, tests)."""
    for event in scan(model, pool, config):
        if on_event is not None:
            on_event(event)
        if isinstance(event, ScanFinished):
            return event.result
    raise RuntimeError("scan ended without a result")


@dataclass
class CurveStep:
    """Progress of ``class_curve_steps``: ``done`` of ``total`` inversion steps over all classes."""

    class_name: str
    done: int
    total: int


def class_curve_steps(model: PromptedCLIP, pool: torch.Tensor, config: ScanConfig, lr: float, batch_size: int,
                      steps: int, checkpoints: Sequence[int] = (),
                      out: list[dict[str, Any]] | None = None) -> Iterator[CurveStep]:
    """Every candidate class run for ``steps`` steps with no class stopped early: per step the fresh-batch
    (flips, eligible, margin), and the held-out flip rate and loss after the last step and at ``checkpoints``,
    appended to ``out`` class by class; yields progress after every step (stop by no longer iterating).

    A class's trajectory does not depend on the other classes (same batches, own trigger and optimiser),
    so this is what a fast scan would see of every class whichever round it stopped in: the clean
    reference is built from it, and the schedule benchmarks replay plans on it.
    """
    out = [] if out is None else out
    config = config.for_input(model.backbone.image_size)
    names = list(model.class_names)
    classes = candidate_classes(config, len(names))
    fit, held = split_pool(pool, config.pool_size, config.holdout, config.seed)
    batches = _batches(len(fit), batch_size, config.epochs, config.seed)[:steps]
    device = model.backbone.device
    quick = {family: config.family_steps(family, len(batches)) for family in config.quick_families}
    per_class = len(batches) + sum(quick.values())
    total = len(classes) * per_class
    size = model.backbone.image_size
    with frozen_learner(model):
        logits_of = Logits(model)
        clean_fit = CleanPredictions(logits_of, fit, batches)
        clean_held = logits_of.predict(held)
        for position, k in enumerate(classes):
            done = position * per_class
            families: dict[str, Any] = {}
            for family, family_steps in quick.items():
                arm = family_arm(family, k, names[k], config, device, size)
                for _ in step_family_arm(arm, family, logits_of, fit, batches, clean_fit, family_steps, config,
                                           device):
                    done += 1
                    yield CurveStep(names[k], done, total)
                families.update(family_record(family, arm))
            trigger = make_candidate(config.method, size, config.epsilon, config.seed + k)
            arm = ClassInversion(k, names[k], trigger.to(device), config.method, lr, config.objective)
            held_out = {}
            for t in range(len(batches)):
                arm.step(logits_of, fit[batches[t]].to(device), clean_fit(t))
                if arm.steps in checkpoints or arm.steps == len(batches):
                    m = _measure(logits_of, arm.trigger, k, names[k], held, clean_held)
                    held_out[arm.steps] = {"flip_rate": m["flip_rate"], "loss": m["loss"]}
                done += 1
                yield CurveStep(names[k], done, total)
            out.append({"index": k, "name": names[k], "curve": arm.curve, "held_out": held_out, **families})


def step_family_arm(arm: ClassInversion, family: str, logits_of: Logits, fit: torch.Tensor, batches: list[torch.Tensor],
                    clean_fit: CleanPredictions, steps: int, config: ScanConfig,
                    device: torch.device) -> Iterator[int]:
    """One class's quick-family arm stepped alone on the scan's batches (reference curves, measurements of a
    kept learner); yields after every step."""
    for t in range(steps):
        arm.step(logits_of, *family_batch(family, fit, batches, clean_fit, t, config, device))
        yield t + 1


def family_flip_rates(model: PromptedCLIP, pool: torch.Tensor, config: ScanConfig, family: str) -> dict[str, float]:
    """Per candidate class, the flip rate of the quick ``family``'s trigger as a scan with ``config`` estimates it
    (for a clean learner measured before the family existed)."""
    config = config.for_input(model.backbone.image_size)
    names = list(model.class_names)
    fit, _ = split_pool(pool, config.pool_size, config.holdout, config.seed)
    batches = family_batches_of(len(fit), config)
    device = model.backbone.device
    rates: dict[str, float] = {}
    with frozen_learner(model):
        logits_of = Logits(model)
        clean_fit = CleanPredictions(logits_of, fit, batches)
        for k in candidate_classes(config, len(names)):
            arm = family_arm(family, k, names[k], config, device, model.backbone.image_size)
            steps = min(getattr(config, f"{family}_steps"), len(batches))
            for _ in step_family_arm(arm, family, logits_of, fit, batches, clean_fit, steps, config, device):
                pass
            rates[names[k]] = float(family_record(family, arm)[f"{family}_flip_rate"])
    return rates


def class_curves(model: PromptedCLIP, pool: torch.Tensor, config: ScanConfig, lr: float, batch_size: int,
                 steps: int, checkpoints: Sequence[int] = ()) -> list[dict[str, Any]]:
    """``class_curve_steps`` run to its end: the per-class curves."""
    out: list[dict[str, Any]] = []
    for _ in class_curve_steps(model, pool, config, lr, batch_size, steps, checkpoints, out):
        pass
    return out


def _batches(n: int, batch_size: int, epochs: int, seed: int) -> list[torch.Tensor]:
    """The same shuffled batches for every class (a fair comparison), ``epochs`` passes."""
    generator = torch.Generator().manual_seed(seed + 1)
    out: list[torch.Tensor] = []
    for _ in range(epochs):
        order = torch.randperm(n, generator=generator)
        out += [order[i:i + batch_size] for i in range(0, n, batch_size)]
    return out


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
