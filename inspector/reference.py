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
import time
from collections.abc import Callable, Generator, Iterator
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from inspector.backbone import ASSETS_DIR, Backbone
from inspector.baseline import Baseline, with_baseline, with_family_baseline, with_loss_baseline
from inspector.checks import number, rates, require, whole
from inspector.data import ImagePool, Task
from inspector.detect import (
    CORROBORATED_GATE,
    CORROBORATED_THRESHOLD,
    DEFAULT_EVIDENCE,
    DEFAULT_SPREAD,
    GATE_FIRST,
    LOSS_SPREAD_FLOOR,
    OPTIONAL_FAMILIES,
    QUICK_FAMILIES,
    Evidence,
    Spread,
    Verdict,
    decide,
)
from inspector.errors import InputError, shown
from inspector.invert import (
    ScanConfig,
    ScanFinished,
    ScanResult,
    ScanStopped,
    TriggerSnapshot,
    class_curve_steps,
    family_flip_rates,
    fast_steps,
    held_out_count,
    scan,
)
from inspector.prompts import (
    DEFAULT_CTX_INIT,
    Kind,
    PromptedCLIP,
    TuneConfig,
    build_learner,
    load_learner,
    save_learner,
    tuning,
)
from inspector.runs import atomic_file

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
    pool: str  # fingerprint of the OOD pool it was scanned on ("shipped": the shipped pool)
    seeds: list[int]
    flip_rates: dict[str, float]  # class name -> mean over the reference learners (faithful schedule)
    per_learner: list[dict[str, float]] = field(default_factory=list)  # faithful held-out rate per learner
    # faithful held-out margin loss per learner ({class: loss}), so that a faithful scan weighs its margins as the
    # fast one does; empty in references built before it was kept (the faithful verdict then reads flip rates only)
    faithful_loss: list[dict[str, float]] = field(default_factory=list)
    accuracies: list[float] = field(default_factory=list)
    pool_size: int = 1000
    holdout: float = 0.2
    # The fast schedule with every class run to the end: {"lr", "batch_size", "steps", "held_out": [per learner
    # {class: rate}], "curves": [per learner {class: [[flips, eligible, margin loss], ...]}], "held_out_loss": [per
    # learner {class: held-out margin loss}]}; None in references without it (older ones lack the margins).
    fast: dict[str, Any] | None = None
    pool_source: str = "shipped"  # how the OOD pool was named when the reference was built
    task: dict[str, Any] = field(default_factory=lambda: {"source": "shipped"})  # source, fingerprint, images
    tune: dict[str, Any] = field(default_factory=dict)  # the clean learners' recipe (TuneConfig)
    # The colour family: {"settings": ScanConfig.family_settings("colour"), "per_learner": [{class: flip rate}]}
    colour: dict[str, Any] | None = None
    blend: dict[str, Any] | None = None  # the blend family, likewise
    patch: dict[str, Any] | None = None  # the patch family, likewise
    # The transfer check (inspector.transfer): {"settings": ScanConfig.transfer_settings(), "learners": [seeds of the
    # learners a delivered model's triggers are carried over to, kept as learners/<kind>_s<seed>.safetensors beside
    # this file], "measured": [seeds of the other learners], "per_learner": [{class: transfer gap} per measured one]}
    transfer: dict[str, Any] | None = None
    # scan seeds per learner: the fast measurements and the quick families hold one entry per learner and scan seed
    # (learner by learner), the faithful ones one per learner
    scan_seeds: int = 1

    def as_dict(self) -> dict[str, Any]:
        return {"format": FORMAT, **asdict(self)}

    @classmethod
    def read(cls, path: Path) -> Reference:
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
            if not isinstance(data, dict) or data.pop("format", None) != FORMAT:
                raise ValueError("not an inspector reference")
            unknown = sorted(set(data) - {f.name for f in fields(cls)})
            if unknown:
                raise ValueError(f"unknown field {shown(unknown[0])}")
            reference = cls(**data)
            reference.check()
            return reference
        except RecursionError as exc:
            raise InputError(f"reference {path} cannot be used (its JSON is nested too deep)",
                             hint="build one with `python -m inspector reference build`") from exc
        except (OSError, ValueError, TypeError, AttributeError) as exc:
            raise InputError(f"reference {path} cannot be used ({str(exc)[:160]})",
                             hint="build one with `python -m inspector reference build`, or scan with "
                                  "--reference none") from exc

    def check(self) -> None:
        """Every field's type and range, named when wrong (ValueError): a reference file is untrusted input, and a
        scan reads its numbers deep inside the decision."""
        require(self.kind in ("coop", "cocoop"), "kind", self.kind, "coop or cocoop")
        for name in ("arch", "pretrained", "pool", "pool_source"):
            require(isinstance(getattr(self, name), str), name, getattr(self, name), "text")
        require(whole(self.image_size) and 8 <= self.image_size <= 4096, "image_size", self.image_size, "a pixel size")
        names = self.class_names
        require(isinstance(names, list) and bool(names) and all(isinstance(n, str) for n in names)
                and len(set(names)) == len(names), "class_names", names, "a list of distinct class names")
        require(number(self.epsilon) and 0 < self.epsilon <= 1, "epsilon", self.epsilon, "a bound in (0, 1]")
        require(isinstance(self.seeds, list) and all(whole(x) for x in self.seeds), "seeds", self.seeds,
                "a list of whole numbers")
        require(isinstance(self.flip_rates, dict) and bool(self.flip_rates) and set(self.flip_rates) <= set(names),
                "flip_rates", self.flip_rates, "a record of some of its classes")
        names = list(self.flip_rates)  # the classes it measured: every record below covers exactly these
        rates("flip_rates", self.flip_rates, names)
        require(isinstance(self.per_learner, list) and bool(self.per_learner), "per_learner", self.per_learner,
                "a non-empty list of learners")
        for i, learner in enumerate(self.per_learner):
            rates(f"per_learner[{i}]", learner, names)
        require(isinstance(self.faithful_loss, list) and len(self.faithful_loss) in (0, len(self.per_learner)),
                "faithful_loss", self.faithful_loss, "a list, one per learner")
        for i, losses in enumerate(self.faithful_loss):
            rates(f"faithful_loss[{i}]", losses, names, low=-1e6, high=1e6)
        require(isinstance(self.accuracies, list) and all(number(x) for x in self.accuracies), "accuracies",
                self.accuracies, "a list of numbers")
        require(whole(self.pool_size) and self.pool_size > 0, "pool_size", self.pool_size, "a positive whole number")
        require(number(self.holdout) and 0 < self.holdout < 1, "holdout", self.holdout, "a share in (0, 1)")
        for name in ("task", "tune"):
            require(isinstance(getattr(self, name), dict), name, getattr(self, name), "a record")
        require(whole(self.scan_seeds) and 1 <= self.scan_seeds <= 16, "scan_seeds", self.scan_seeds,
                "a whole number of scan seeds per learner, 1 to 16")
        if self.fast is not None:
            _check_fast(self.fast, names)
        for family in QUICK_FAMILIES:
            measured = getattr(self, family)
            if measured is None:
                continue
            require(isinstance(measured, dict) and isinstance(measured.get("settings"), dict)
                    and isinstance(measured.get("per_learner"), list) and bool(measured["per_learner"]),
                    family, measured, "a record of settings and per-learner flip rates")
            for i, learner in enumerate(measured["per_learner"]):
                rates(f"{family}.per_learner[{i}]", learner, names)
        if self.transfer is not None:
            _check_transfer(self.transfer, names, self.seeds)
        entries = len(self.seeds) * self.scan_seeds  # one fast and one family entry per learner and scan seed
        counted = [("fast.held_out", (self.fast or {}).get("held_out"))] + [
            (f"{family}.per_learner", (getattr(self, family) or {}).get("per_learner")) for family in QUICK_FAMILIES]
        for name, entries_of in counted:
            require(entries_of is None or len(entries_of) == entries, name, entries_of,
                    f"{entries} entries ({len(self.seeds)} learners x {self.scan_seeds} scan seeds)")

    def mismatch(self, model: PromptedCLIP, config: ScanConfig, pool: ImagePool) -> str | None:
        """Why this reference does not apply to a scan of ``model`` on ``pool`` with ``config`` (None: it does)."""
        bb = model.backbone
        epsilon = config.for_input(bb.image_size).epsilon
        assert epsilon is not None
        fast = self.fast or {}
        rounds = config.fast_rounds or config.fast_defaults(reference=True).rounds  # the plan a scan with it runs
        plan = (fast_steps(replace(config, fast_rounds=rounds), len(pool.pixels)), config.fast_lr,
                config.fast_batch_size)
        built = (fast.get("steps"), fast.get("lr"), fast.get("batch_size"))
        checks = [(self.class_names == list(model.class_names),
                   f"the model's classes are not the task's the reference was built on "
                   f"({_task_name(self.task)}: {_names(self.class_names)}; model: {_names(model.class_names)})"),
                  (self.kind == model.kind, f"learner kind {model.kind} (reference: {self.kind})"),
                  (self.arch == bb.arch and (self.pretrained == bb.pretrained or self.reweighted(bb)),
                   f"backbone {bb.arch}/{bb.pretrained} (reference: {self.arch}/{self.pretrained})"),
                  (abs(self.epsilon - epsilon) <= EPSILON_TOLERANCE,
                   f"epsilon {epsilon * 255:.1f}/255 (reference: {self.epsilon * 255:.1f}/255)"),
                  (self.pool == pool.fingerprint,
                   f"OOD pool {pool.source} (the reference was measured on {self.pool_source}"
                   + ("" if self.pool_source == "shipped" else f", {self.pool}") + ")"),
                  ((config.pool_size, config.holdout) == (self.pool_size, self.holdout),
                   f"pool size {config.pool_size} / held-out share {config.holdout} "
                   f"(reference: {self.pool_size} / {self.holdout})"),
                  (config.objective == "margin", f"inversion loss {config.objective} (reference: margin)"),
                  (config.schedule != "fast" or bool(fast), "the reference has no fast-schedule measurements"),
                  (config.schedule != "fast" or plan == built,
                   f"fast plan of {plan[0]} steps at lr {plan[1]}, batch {plan[2]} "
                   f"(reference: {built[0]} steps at lr {built[1]}, batch {built[2]})")]
        return next((why for ok, why in checks if not ok), None)

    def reweighted(self, backbone: Backbone) -> bool:
        """Whether ``backbone`` is this reference's architecture with weights from a file, as a provider who delivers
        its own fine-tune of the original CLIP does: the original weights' clean learners then stand for what the
        task's natural attractors are (an encoder whose backdoor makes a class far easier to reach still stands out).
        Chosen on the dev draws of benchmarks/encoder_backdoors.md, where raw flip rates left the attractors (*file
        icon* at 78-82%) above or beside the encoders' targets."""
        return backbone.pretrained.startswith("file:") and self.pretrained != backbone.pretrained

    def describe(self) -> str:
        """Where the reference comes from, in one line (for the report and the page)."""
        recipes = " with varied recipes" if self.tune.get("varied") else ""
        seeded = f", each scanned with {self.scan_seeds} seeds" if self.scan_seeds > 1 else ""
        return (f"{len(self.seeds)} clean {self.kind} learners tuned{recipes} on {_task_name(self.task)} "
                f"(seeds {', '.join(map(str, self.seeds))}{seeded})")

    def baseline(self, config: ScanConfig, path: Path | None = None) -> Baseline:
        """The clean learners' values for a scan with ``config``'s schedule; with the reference file's ``path``, the
        transfer check's too, when its learner files are beside it (``<name>.transfer/``)."""
        families = {family: values for family in QUICK_FAMILIES if (values := self.family_values(config, family))}
        return replace(self._baseline(config, families), **self.transfer_values(path))

    def transfer_values(self, path: Path | None) -> dict[str, Any]:
        """The transfer check's part of a ``Baseline``: per class each measured learner's gap, the learner files and
        the settings (nothing without the check or its files)."""
        seeds = (self.transfer or {}).get("learners", [])
        files = [path.with_suffix(".transfer") / f"{self.kind}_s{seed}.safetensors" for seed in seeds] if path else []
        if not self.transfer or not files or not all(f.is_file() for f in files):
            return {}
        per_learner = self.transfer["per_learner"]
        return {"transfer": {c: [float(p[c]) for p in per_learner] for c in per_learner[0]},
                "transfer_learners": tuple(str(f) for f in files), "transfer_settings": dict(self.transfer["settings"])}

    def _baseline(self, config: ScanConfig, families: dict[str, dict[str, list[float]]]) -> Baseline:
        if config.schedule == "fast" and self.fast:
            names = list(self.fast["held_out"][0])
            return Baseline(held_out={c: [h[c] for h in self.fast["held_out"]] for c in names},
                            curves={c: [curves[c] for curves in self.fast["curves"]] for c in names},
                            window=config.fast_window, held_out_steps=int(self.fast["steps"]), families=families,
                            held_out_loss={c: [h[c] for h in self.fast["held_out_loss"]] for c in names}
                            if self.fast.get("held_out_loss") else {})
        return Baseline(held_out={c: [p[c] for p in self.per_learner] for c in self.per_learner[0]},
                        families=families,
                        held_out_loss={c: [p[c] for p in self.faithful_loss] for c in self.per_learner[0]}
                        if self.faithful_loss else {})

    def family_values(self, config: ScanConfig, family: str) -> dict[str, list[float]]:
        """Per class, each clean learner's flip rate of the quick ``family``, when measured with this scan's
        settings of it."""
        measured = getattr(self, family)
        if (not measured or getattr(config, family) is False or config.method != "inspector"
                or measured.get("settings") != config.family_settings(family)):
            return {}
        per_learner = measured["per_learner"]
        return {c: [float(p[c]) for p in per_learner] for c in per_learner[0]}


def _check_fast(fast: Any, names: list[str]) -> None:
    """The fast schedule's measurements: lr, batch, steps, and per learner held-out rates, fresh-batch curves of
    [flips, eligible, margin loss] and (optionally) held-out margin losses."""
    require(isinstance(fast, dict), "fast", fast, "a record")
    require(number(fast.get("lr")) and fast["lr"] > 0, "fast.lr", fast.get("lr"), "a positive number")
    for key in ("batch_size", "steps"):
        require(whole(fast.get(key)) and fast[key] > 0, f"fast.{key}", fast.get(key), "a positive whole number")
    held = fast.get("held_out")
    require(isinstance(held, list) and bool(held), "fast.held_out", held, "a non-empty list of learners")
    for i, learner in enumerate(held):
        rates(f"fast.held_out[{i}]", learner, names)
    curves = fast.get("curves")
    require(isinstance(curves, list) and len(curves) == len(held), "fast.curves", curves, "a list, one per learner")
    for i, per_class in enumerate(curves):
        require(isinstance(per_class, dict) and set(per_class) == set(names), f"fast.curves[{i}]", per_class,
                "a record of every class of the reference")
        for name, curve in per_class.items():
            good = isinstance(curve, list) and len(curve) == fast["steps"] and all(
                isinstance(step, list) and len(step) in (2, 3) and whole(step[0]) and whole(step[1])
                and 0 <= step[0] <= step[1] and (len(step) == 2 or number(step[2])) for step in curve)
            require(good, f"fast.curves[{i}][{shown(name)}]", curve,
                    f"a list of {fast['steps']} [flips, eligible, margin loss] steps")
    losses = fast.get("held_out_loss")
    if losses is not None:
        require(isinstance(losses, list) and len(losses) == len(held), "fast.held_out_loss", losses,
                "a list, one per learner")
        for i, values in enumerate(losses):
            rates(f"fast.held_out_loss[{i}]", values, names, low=-1e6, high=1e6)


def _check_transfer(transfer: Any, names: list[str], seeds: list[int]) -> None:
    require(isinstance(transfer, dict) and isinstance(transfer.get("settings"), dict), "transfer", transfer,
            "a record of settings, learners and per-learner gaps")
    for key in ("learners", "measured"):
        value = transfer.get(key)
        require(isinstance(value, list) and bool(value) and all(whole(x) and x in seeds for x in value),
                f"transfer.{key}", value, "a non-empty list of the reference's seeds")
    per_learner = transfer.get("per_learner")
    require(isinstance(per_learner, list) and len(per_learner) == len(transfer["measured"]), "transfer.per_learner",
            per_learner, "one record of gaps per measured learner")
    for i, gaps in enumerate(per_learner):
        rates(f"transfer.per_learner[{i}]", gaps, names, low=-1.0, high=1.0)


def shipped_reference_path(arch: str, kind: str) -> Path:
    return REFERENCE_DIR / f"{arch}-{kind}.json"


def _task_name(task: dict[str, Any]) -> str:
    source = task.get("source", "shipped")
    return "the shipped pocket task" if source == "shipped" else f"task {source}"


def _names(names: list[str] | tuple[str, ...], shown: int = 4) -> str:
    listed = ", ".join(repr(n[:40]) for n in list(names)[:shown])
    return f"{len(names)} classes, {listed}" + (" …" if len(names) > shown else "")


def reference_for(model: PromptedCLIP, config: ScanConfig, pool: ImagePool,
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
        path = Path(choice)
        reference = Reference.read(path)
        why = reference.mismatch(model, config, pool)
        if why:
            raise InputError(f"reference {choice} does not fit this scan: {why}",
                             hint="build a reference for this model's task, kind, backbone, OOD pool and scan "
                                  "settings (`python -m inspector reference build`), or pass --reference none")
    baseline = reference.baseline(config, path)
    unmeasured = [family for family in QUICK_FAMILIES if getattr(config, family) is True
                  and family not in baseline.families]
    note = "".join(f"; its learners were not measured with the {family} family, so {family} flip rates are compared "
                   "with no clean learner" for family in unmeasured)
    if reference.reweighted(model.backbone):
        note += (f"; its learners ran on the original {reference.arch} weights ({reference.pretrained}), this model's "
                 f"CLIP is a weights file ({model.backbone.pretrained}): the original's clean attractors. A backdoor "
                 "in the image encoder itself whose trigger is a sparse shape blended over the image (a triangle, a "
                 "text stamp) is not reconstructed by the scan's trigger families and may go unflagged "
                 "(benchmarks/encoder_backdoors.md)")
        baseline = replace(baseline, transfer={}, transfer_learners=())  # its learners do not run on this CLIP
    elif replace(config, reference=baseline).runs_transfer():
        note += f"; with the transfer check ({len(baseline.transfer_learners)} learners to carry triggers over to)"
    if config.transfer is True and not replace(config, reference=baseline).runs_transfer():
        note += ("; the transfer check was asked for, but this reference does not carry it for this scan (add it "
                 "with `reference transfer`)")
    return baseline, reference.describe() + note


def decide_with_reference(records: list[dict[str, Any]], reference: Reference, schedule: str,
                          window: int = ScanConfig.fast_window, spread: Spread = DEFAULT_SPREAD,
                          evidence: Evidence = DEFAULT_EVIDENCE, loss_floor: float = LOSS_SPREAD_FLOOR,
                          settings: ScanConfig | None = None,
                          corroboration: tuple[float, float] | None = (CORROBORATED_THRESHOLD, CORROBORATED_GATE),
                          gate_first: bool = GATE_FIRST) -> tuple[list[dict[str, Any]], Verdict]:
    """Saved per-class records of a scan made with ``schedule``, decided as a scan given ``reference`` decides
    (the reference changes the decision, not the inversion): for replaying cached scans in benchmarks. Records
    with a quick family's flip rates (measured with ``settings``' values for it, default: the defaults) are
    compared with the reference's, when it measured them with the same."""
    ran = {family: all(f"{family}_flip_rate" in r for r in records) for family in QUICK_FAMILIES}
    config = replace(settings or ScanConfig(), schedule=schedule, fast_window=window, **ran)  # type: ignore[arg-type]
    baseline = reference.baseline(config)
    compared = {"reference_flip_rate", "excess_flip_rate", "reference_spread", "reference_loss", "loss_excess",
                "loss_spread", *(key for family in QUICK_FAMILIES for key in
                                 (f"reference_{family}_flip_rate", f"{family}_excess", f"{family}_reference_spread"))}
    plain = [{k: v for k, v in r.items() if k not in compared} for r in records]
    records = [with_loss_baseline(with_baseline(r, baseline.learner_values(r)), baseline.learner_losses(r))
               for r in plain]
    for family, values in baseline.families.items():
        records = [with_family_baseline(r, family, values[r["name"]]) for r in records]
    return records, decide(records, "excess_flip_rate", spread=spread, evidence=evidence,
                           loss_floor=loss_floor, corroboration=corroboration, gate_first=gate_first)


# A defender does not know the provider's recipe, so a "varied" reference spreads its clean learners over the
# recipes a provider might use (one axis or two at a time): context length 4 / 8 / 16, word or random start,
# AdamW or SGD, learning rate and epochs around the kind's default. Learner i takes recipe i (cycling).
VARIED_RECIPES: tuple[dict[str, Any], ...] = (
    {},
    {"n_ctx": 16, "ctx_init": None},
    {"optimizer": "sgd", "lr_scale": 50.0},
    {"n_ctx": 8, "ctx_init": None, "lr_scale": 2.0},
    {"epochs_scale": 0.5},
    {"ctx_init": None, "lr_scale": 0.5, "epochs_scale": 1.5},
    {"n_ctx": 16, "ctx_init": None, "optimizer": "sgd", "lr_scale": 25.0, "epochs_scale": 1.5},
    {"n_ctx": 8, "ctx_init": None, "lr_scale": 2.0, "epochs_scale": 0.5},
    # the corners the first eight leave open: hot and short SGD, the least-tuned AdamW run, SGD at every length
    {"n_ctx": 8, "ctx_init": None, "optimizer": "sgd", "lr_scale": 100.0, "epochs_scale": 0.5},
    {"n_ctx": 8, "ctx_init": None, "lr_scale": 0.5, "epochs_scale": 0.5},
    {"n_ctx": 4, "ctx_init": None, "optimizer": "sgd", "lr_scale": 100.0},
    {"n_ctx": 16, "ctx_init": None, "optimizer": "sgd", "lr_scale": 50.0, "epochs_scale": 0.5},
)


def learner_recipe(kind: Kind, position: int, varied: bool, epochs: int | None = None
                   ) -> tuple[dict[str, Any], TuneConfig]:
    """The ``position``-th reference learner's prompt shape (n_ctx, ctx_init) and tuning recipe."""
    base = TuneConfig.for_kind(kind, epochs=epochs)
    if not varied:
        return {}, base
    recipe = VARIED_RECIPES[position % len(VARIED_RECIPES)]
    shape = {key: recipe[key] for key in ("n_ctx", "ctx_init") if key in recipe}
    tune = replace(base, optimizer=recipe.get("optimizer", base.optimizer),
                   lr=round(base.lr * recipe.get("lr_scale", 1.0), 6),
                   epochs=max(1, round(base.epochs * recipe.get("epochs_scale", 1.0))))
    return shape, tune


@dataclass
class ReferenceStarted:
    kind: str
    seeds: list[int]
    total_units: int  # tuning steps + inversion steps of the whole build, for a progress bar


@dataclass
class ReferenceProgress:
    seed: int
    learner: int  # 1-based position of this learner
    learners: int
    stage: str  # "tuning", "published schedule", "fast schedule"
    done_units: int
    total_units: int


@dataclass
class LearnerMeasured:
    seed: int
    accuracy: float | None  # on the task's test split (None without one)
    top_class: str
    top_flip_rate: float
    reused: bool  # read back from the learners folder of an interrupted build

    def line(self) -> str:
        accuracy = f"accuracy {self.accuracy:.1%}, " if self.accuracy is not None else ""
        return (f"clean learner seed {self.seed}: {accuracy}highest flip rate {self.top_flip_rate:.1%} "
                f"({self.top_class})" + (" [kept from an earlier run]" if self.reused else ""))


@dataclass
class ReferenceBuilt:
    reference: Reference
    seconds: float


@dataclass
class ReferenceStopped:
    measured: int  # learners finished (kept in the learners folder, reused by the next build)
    seconds: float


ReferenceEvent = ReferenceStarted | ReferenceProgress | LearnerMeasured | ReferenceBuilt | ReferenceStopped


def reference_build(kind: Kind, backbone: Backbone, task: Task, pool: ImagePool, seeds: list[int],
                    config: ScanConfig | None = None, epochs: int | None = None, learners: Path | None = None,
                    should_stop: Callable[[], bool] | None = None, varied: bool = False,
                    scan_seeds: int = 1) -> Iterator[ReferenceEvent]:
    """Tune one clean learner per seed on the task's train split and scan it with both schedules: the
    published faithful one, and the fast one with every class run to the end (``invert.class_curves``).
    ``varied``: learner i is tuned with ``VARIED_RECIPES[i]`` instead of the kind's default recipe.
    ``scan_seeds``: the fast schedule (and the quick families) measured with that many scan seeds per learner
    (``config.seed``, ``config.seed + 1``, ...), each an entry of the reference's fast measurements, so that the
    spread a scan is compared with holds the inversion's own noise (its images, batches and starting trigger) as
    well as the differences between learners.

    ``learners``: a folder where each tuned learner (``<kind>_s<seed>.safetensors``) and its measurements
    (``.json``, valid for these scan settings and this pool) are kept, so an interrupted build resumes.
    """
    from inspector.evaluate import accuracy

    started = time.time()
    config = config or ScanConfig()
    steps = sum(config.fast_rounds or config.fast_defaults(reference=True).rounds)  # the plan a scan with it runs
    config = replace(config.for_input(backbone.image_size), reference=None,  # families measured unless told not to
                     colour=True if config.colour is None else config.colour,
                     **{family: True if getattr(config, family) is None else getattr(config, family)
                        for family in OPTIONAL_FAMILIES})
    recipe = TuneConfig.for_kind(kind, epochs=epochs)
    names = list(task.class_names)
    used = min(len(pool.pixels), config.pool_size)
    fit = used - held_out_count(used, config.holdout)
    faithful_steps = len(names) * math.ceil(fit / config.batch_size) * config.epochs
    curve_steps = len(names) * fast_steps(replace(config, fast_rounds=(steps,)), len(pool.pixels))
    curve_steps += config.quick_total_steps(len(names), math.ceil(fit / config.fast_batch_size) * config.epochs)
    recipes = [learner_recipe(kind, position, varied, epochs) for position in range(len(seeds))]
    batches = max(1, len(task.train_labels) // min(recipe.batch_size, len(task.train_labels)))
    units = [tune.epochs * batches + faithful_steps + curve_steps * scan_seeds for _, tune in recipes]
    total = sum(units)
    key = {"epsilon": config.epsilon, "pool": pool.fingerprint, "pool_size": config.pool_size,
           "holdout": config.holdout, "seed": config.seed, "fast": [config.fast_lr, config.fast_batch_size, steps],
           "task": task.fingerprint, "tune": asdict(replace(recipe, seed=0))}
    yield ReferenceStarted(kind, list(seeds), total)
    measured: list[dict[str, Any]] = []
    extra_seeds = [config.seed + offset for offset in range(1, scan_seeds)]
    for position, seed in enumerate(seeds):
        base = sum(units[:position])
        shape, learner_tune = recipes[position]
        tune_steps = learner_tune.epochs * batches
        key = {**key, "tune": asdict(replace(learner_tune, seed=0)), **({"shape": shape} if varied else {})}

        def progress(stage: str, done: int, seed: int = seed, position: int = position,
                     base: int = base) -> ReferenceProgress:
            return ReferenceProgress(seed, position + 1, len(seeds), stage, base + done, total)

        kept = _kept_measurement(learners, kind, seed, key)
        model = None
        kept_model = learners / f"{kind}_s{seed}.safetensors" if learners is not None else None
        if kept_model is not None and kept_model.is_file() and _same_recipe(kept_model, key):
            model = load_learner(kept_model, backbone)
        extras_kept = [_kept_measurement(learners, kind, seed, {**key, "seed": s}, scan_seed=s) for s in extra_seeds]
        extras_kept = [m if m is not None and all(_has_family(m, config, f) for f in QUICK_FAMILIES) else None
                       for m in extras_kept]
        seeded_at = tune_steps + faithful_steps + curve_steps  # progress units before this learner's extra scans

        def extras(model: PromptedCLIP | None, seed: int = seed, key: dict[str, Any] = key,
                   kept: list[dict[str, Any] | None] = extras_kept, done: int = seeded_at,
                   progress: Callable[[str, int], ReferenceProgress] = progress
                   ) -> Generator[ReferenceProgress | ReferenceStopped, None, list[dict[str, Any]] | None]:
            return _extra_scans(model, pool, config, steps, kept, extra_seeds, should_stop, len(measured), started,
                                progress, done, curve_steps,
                                keep=learners / f"{kind}_s{seed}" if learners is not None else None,
                                record={"seed": seed, "key": key})

        if kept is not None and _has_margins(kept) and (model is not None or None not in extras_kept):
            missing = [family for family in QUICK_FAMILIES if not _has_family(kept, config, family)]
            if model is not None and missing:  # measured without these quick families' settings: add them
                for family in missing:
                    kept = {**kept, family: family_flip_rates(model, pool.pixels, config, family),
                            f"{family}_settings": config.family_settings(family)}
            remeasure = model is not None and "faithful_loss" not in kept  # kept before faithful margins were
            if remeasure:
                result = yield from _published(model, pool, config, should_stop, len(measured), started, progress,
                                               tune_steps)
                if result is None:
                    return
                kept = {**kept, **_faithful_measures(result)}
            if learners is not None and model is not None and (missing or remeasure):
                _write_json(learners / f"{kind}_s{seed}.json", kept)
            seeded = yield from extras(model)
            if seeded is None:
                return
            measured.append({**kept, "extra_scans": seeded})
            yield _learner_event(kept, reused=True)
            continue
        if model is None:
            model = build_learner(kind, backbone, names, seed=seed, **shape)
            for event in tuning(model, task.train_pixels, task.train_labels, replace(learner_tune, seed=seed)):
                if should_stop is not None and should_stop():
                    yield ReferenceStopped(len(measured), round(time.time() - started, 2))
                    return
                if event.step % 10 == 0 or event.step == event.total_steps:
                    yield progress("tuning", event.step)
            if kept_model is not None:
                kept_model.parent.mkdir(parents=True, exist_ok=True)
                save_learner(model, kept_model, extra={"seed": seed, "reference_key": key})
        if kept is not None and "faithful_loss" in kept:  # measured without fast margins: curves redone
            published = {key: kept[key] for key in ("faithful", "faithful_loss")}
            learner_accuracy = kept["accuracy"]
        else:
            result = yield from _published(model, pool, config, should_stop, len(measured), started, progress,
                                           tune_steps)
            if result is None:
                return
            published = _faithful_measures(result)
            learner_accuracy = (kept["accuracy"] if kept is not None
                                else round(accuracy(model, task), 4) if task.has_test else None)
        fast = yield from _fast_measures(model, pool, config, steps, should_stop, len(measured), started, progress,
                                         tune_steps + faithful_steps)
        if fast is None:
            return
        record = {"seed": seed, "key": key,
                  "recipe": {"n_ctx": shape.get("n_ctx", 4), "ctx_init": shape.get("ctx_init", DEFAULT_CTX_INIT),
                             **asdict(learner_tune)},
                  "accuracy": learner_accuracy, **published, **fast}
        if learners is not None:
            _write_json(learners / f"{kind}_s{seed}.json", record)
        seeded = yield from extras(model)
        if seeded is None:
            return
        measured.append({**record, "extra_scans": seeded})
        yield _learner_event(record, reused=False)
    yield ReferenceBuilt(_assemble(kind, backbone, task, pool, config, recipe, measured, varied),
                         round(time.time() - started, 2))


def _published(model: PromptedCLIP, pool: ImagePool, config: ScanConfig, should_stop: Callable[[], bool] | None,
               finished: int, started: float, progress: Callable[[str, int], ReferenceProgress], tune_steps: int
               ) -> Generator[ReferenceProgress | ReferenceStopped, None, Any]:
    """The learner scanned with the published schedule (additive family only, as its flip rates are compared);
    its result, or None once a ``ReferenceStopped`` has been yielded (``finished`` learners kept, the build begun
    at ``started``)."""
    for event in scan(model, pool.pixels, replace(config, schedule="faithful", colour=False), should_stop=should_stop):
        if isinstance(event, ScanStopped):
            yield ReferenceStopped(finished, round(time.time() - started, 2))
            return None
        if isinstance(event, TriggerSnapshot):
            yield progress("published schedule", tune_steps + event.scan_step)
        elif isinstance(event, ScanFinished):
            return event.result
    raise RuntimeError("the published scan ended without a result")


def _extra_scans(model: PromptedCLIP | None, pool: ImagePool, config: ScanConfig, steps: int,
                 kept: list[dict[str, Any] | None], scan_seeds: list[int], should_stop: Callable[[], bool] | None,
                 finished: int, started: float, progress: Callable[[str, int], ReferenceProgress], done: int,
                 per_scan: int, keep: Path | None, record: dict[str, Any]
                 ) -> Generator[ReferenceProgress | ReferenceStopped, None, list[dict[str, Any]] | None]:
    """A learner's fast measurements with each further scan seed, kept ones read back and the rest measured (and
    written to ``<keep>_scan<seed>.json``); None once a ``ReferenceStopped`` was yielded."""
    measured = []
    for i, (scan_seed, entry) in enumerate(zip(scan_seeds, kept, strict=True)):
        if entry is None:
            assert model is not None, "a learner's further scans need the learner"
            fast = yield from _fast_measures(model, pool, replace(config, seed=scan_seed), steps, should_stop,
                                             finished, started, progress, done + i * per_scan)
            if fast is None:
                return None
            entry = {**record, "scan_seed": scan_seed, "key": {**record["key"], "seed": scan_seed}, **fast}
            if keep is not None:
                _write_json(keep.with_name(f"{keep.name}_scan{scan_seed}.json"), entry)
        measured.append(entry)
    return measured


def _fast_measures(model: PromptedCLIP, pool: ImagePool, config: ScanConfig, steps: int,
                   should_stop: Callable[[], bool] | None, finished: int, started: float,
                   progress: Callable[[str, int], ReferenceProgress], done: int
                   ) -> Generator[ReferenceProgress | ReferenceStopped, None, dict[str, Any] | None]:
    """The learner's every class run through the fast schedule to its end with ``config``'s scan seed, and the quick
    families' flip rates: a reference entry's fast measurements (None once a ``ReferenceStopped`` was yielded)."""
    curves: list[dict[str, Any]] = []
    for event in class_curve_steps(model, pool.pixels, config, config.fast_lr, config.fast_batch_size, steps,
                                   out=curves):
        if should_stop is not None and should_stop():
            yield ReferenceStopped(finished, round(time.time() - started, 2))
            return None
        if event.done % 4 == 0 or event.done == event.total:
            yield progress("fast schedule", done + event.done)
    done_steps = len(curves[0]["curve"])  # fewer when the pool has fewer batches
    return {"steps": done_steps,
            "fast_held_out": {c["name"]: float(c["held_out"][done_steps]["flip_rate"]) for c in curves},
            "fast_held_out_loss": {c["name"]: float(c["held_out"][done_steps]["loss"]) for c in curves},
            "fast_curves": {c["name"]: [[int(f), int(e), round(float(m), 4)] for f, e, m in c["curve"]]
                            for c in curves},
            **{key: value for family in QUICK_FAMILIES for key, value in (
                (family, {c["name"]: float(c[f"{family}_flip_rate"]) for c in curves if f"{family}_flip_rate" in c}),
                (f"{family}_settings", config.family_settings(family)))}}


def _faithful_measures(result: ScanResult) -> dict[str, dict[str, float]]:
    """Each class's held-out flip rate and margin loss under the published schedule."""
    return {"faithful": {c["name"]: float(c["flip_rate"]) for c in result.classes},
            "faithful_loss": {c["name"]: round(float(c["loss"]), 4) for c in result.classes}}


def _learner_event(record: dict[str, Any], reused: bool) -> LearnerMeasured:
    top = max(record["faithful"], key=record["faithful"].get)
    return LearnerMeasured(record["seed"], record["accuracy"], top, record["faithful"][top], reused)


def _kept_measurement(folder: Path | None, kind: str, seed: int, key: dict[str, Any],
                      scan_seed: int | None = None) -> dict[str, Any] | None:
    """A learner measured by an earlier, interrupted build with the same settings (None: measure it);
    ``scan_seed``: its fast measurements with another scan seed."""
    name = f"{kind}_s{seed}" + (f"_scan{scan_seed}" if scan_seed is not None else "")
    path = folder / f"{name}.json" if folder is not None else None
    if path is None or not path.is_file():
        return None
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(record, dict) or not isinstance(record.get("key"), dict):
        return None
    # older builds keyed a learner on the colour family's settings too; each quick family is now checked on its own
    # (``_has_family``), so that a family measured otherwise is measured again without tuning the learner again
    kept_key = {name: value for name, value in record["key"].items() if name != "colour"}
    return record if kept_key == json.loads(json.dumps(key)) else None


def _has_family(record: dict[str, Any], config: ScanConfig, family: str) -> bool:
    """Whether a kept measurement has a quick family's flip rates with this build's settings (or needs none)."""
    settings = record.get(f"{family}_settings", record["key"].get("colour") if family == "colour" else None)
    return not config.runs(family) or (bool(record.get(family)) and settings == config.family_settings(family))


def _has_margins(record: dict[str, Any]) -> bool:
    """Whether a kept measurement has each fast step's margin loss (older builds kept flips and images only)."""
    return "fast_held_out_loss" in record


def _same_recipe(path: Path, key: dict[str, Any]) -> bool:
    from inspector.prompts import read_header

    kept = read_header(path).get("reference_key") or {}
    return (kept.get("task") == key["task"] and kept.get("tune") == json.loads(json.dumps(key["tune"]))
            and kept.get("shape", {}) == json.loads(json.dumps(key.get("shape", {}))))


def _write_json(path: Path, data: dict[str, Any]) -> None:
    """Written whole or not at all (a build killed mid-write must not leave half a file to resume from)."""
    with atomic_file(path) as staging:
        staging.write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")


def _assemble(kind: str, backbone: Backbone, task: Task, pool: ImagePool, config: ScanConfig, recipe: TuneConfig,
              measured: list[dict[str, Any]], varied: bool = False) -> Reference:
    per_learner = [m["faithful"] for m in measured]
    faithful_loss = [m["faithful_loss"] for m in measured] if all("faithful_loss" in m for m in measured) else []
    means = {name: round(sum(p[name] for p in per_learner) / len(per_learner), 4) for name in per_learner[0]}
    assert config.epsilon is not None
    scans = [entry for m in measured for entry in [m, *m.get("extra_scans", [])]]  # each learner, each scan seed
    fast = {"lr": config.fast_lr, "batch_size": config.fast_batch_size, "steps": measured[0]["steps"],
            "held_out": [m["fast_held_out"] for m in scans], "curves": [m["fast_curves"] for m in scans],
            "held_out_loss": [m["fast_held_out_loss"] for m in scans]}
    families = {family: ({"settings": config.family_settings(family), "per_learner": [m[family] for m in scans]}
                         if all(_has_family(m, config, family) for m in scans) and config.runs(family) else None)
                for family in QUICK_FAMILIES}
    return Reference(kind=kind, arch=backbone.arch, pretrained=str(backbone.pretrained),
                     image_size=backbone.image_size, class_names=list(task.class_names), epsilon=config.epsilon,
                     pool=pool.fingerprint, seeds=[int(m["seed"]) for m in measured], flip_rates=means,
                     scan_seeds=len(scans) // len(measured),
                     per_learner=per_learner, faithful_loss=faithful_loss,
                     accuracies=[m["accuracy"] for m in measured if m["accuracy"] is not None],
                     pool_size=config.pool_size, holdout=config.holdout, fast=fast, pool_source=pool.source,
                     task={"source": task.source, "fingerprint": task.fingerprint,
                           "train_images": len(task.train_labels)},
                     tune=({"recipes": [m.get("recipe") for m in measured], "varied": True} if varied
                           else {**asdict(replace(recipe, seed=0)), "seeds": "one per learner"}), **families)


def build_reference(kind: Kind, backbone: Backbone, task: Task, pool: ImagePool, seeds: list[int],
                    config: ScanConfig | None = None, progress: Callable[[str], None] = print,
                    epochs: int | None = None, learners: Path | None = None, varied: bool = False,
                    scan_seeds: int = 1) -> Reference:
    """``reference_build`` run to its end, each learner's line sent to ``progress``."""
    for event in reference_build(kind, backbone, task, pool, seeds, config, epochs, learners, varied=varied,
                                 scan_seeds=scan_seeds):
        if isinstance(event, LearnerMeasured):
            progress(event.line())
        elif isinstance(event, ReferenceBuilt):
            return event.reference
    raise RuntimeError("reference build ended without a reference")
