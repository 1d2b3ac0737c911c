"""The workflows end to end, each assembled once, as a generator of typed events (DESIGN §2).

- ``scan_job``: delivered model + OOD pool + clean reference -> scan -> report folder;
- ``repair_job``: delivered model + its scan + labelled task -> trigger, held-out images -> repair ->
  ground-truth ASR (lab models) -> a new learner file;
- ``reference_job``: labelled task + OOD pool -> clean learners tuned and scanned -> reference file;
- ``tune_job`` and ``implant_job``: a clean learner, and the lab's backdoored one, on a labelled task.

The CLI turns the events into a progress bar and lines, the app's workspace into page updates, the
benchmarks and tests into numbers. Stopping: pass ``should_stop`` (checked between steps; the job then
yields a stopped event and writes nothing) or stop iterating. Every output is a new file or folder,
written whole or not at all; no input is ever written.
"""

from __future__ import annotations

import functools
import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch

from inspector.backbone import Backbone, file_sha256
from inspector.data import SHIPPED, ImagePool, Task, load_shipped_pool
from inspector.errors import InputError
from inspector.examples import before_after
from inspector.invert import ScanConfig, ScanEvent, ScanFinished, ScanResult, scan
from inspector.lab.encoder import EncoderImplantConfig
from inspector.lab.implant import (
    ImplantConfig,
    ImplantEvent,
    ImplantFinished,
    ImplantStarted,
    ImplantStep,
    ImplantTried,
    implant,
    provider_tries,
)
from inspector.lab.truth import (
    GroundTruth,
    TryMeasurement,
    attack_success_rate,
    backdoor_rates,
    read_ground_truth,
    save_implanted,
)
from inspector.pools import pool_summary, read_pool, require_images
from inspector.prompts import (
    Kind,
    PromptedCLIP,
    TuneConfig,
    TuneStep,
    build_learner,
    open_model,
    save_learner,
    tuning,
)
from inspector.reference import Reference, ReferenceBuilt, ReferenceEvent, reference_build, reference_for
from inspector.repair import RepairConfig, RepairEvent, RepairFinished, RepairMeasured, repair
from inspector.report import REPORT, SavedScan, read_report, write_report
from inspector.runs import atomic_file, check_output_folder, staged_folder
from inspector.tasks import for_model
from inspector.zoo import resolve_model

StopCheck = Callable[[], bool] | None


# --- inputs ---------------------------------------------------------------------------------------------
@dataclass
class Delivered:
    """A prompt-learner file opened for vetting, with where it came from; the file itself is never written."""

    label: str
    path: Path
    sha256: str
    model: PromptedCLIP
    truth: GroundTruth | None  # the lab's record (demo and teaching models); the scan never reads it
    stamp: tuple[int, int]  # size and mtime when opened
    weights: str | None = None

    def info(self) -> dict[str, Any]:
        """What a report says about the scanned model."""
        m = self.model
        return {"name": self.label, "path": str(self.path), "sha256": self.sha256, "kind": m.kind,
                "arch": m.backbone.arch, "pretrained": m.backbone.pretrained, "n_classes": len(m.class_names)}

    def unchanged(self, path: Path) -> bool:
        return self.path == path.resolve() and self.stamp == _stamp(path)

    def fresh_copy(self) -> PromptedCLIP:
        """The learner as delivered, again, on the same (frozen, shared) backbone: for a job that trains it."""
        return open_model(self.path, weights=self.weights, backbone_loader=lambda *a, **k: self.model.backbone)


def _stamp(path: Path) -> tuple[int, int]:
    info = path.stat()
    return info.st_size, info.st_mtime_ns


def open_delivered(source: str | Path, label: str | None = None, weights: str | None = None,
                   device: str | torch.device | None = None,
                   backbone_loader: Callable[..., Backbone] | None = None) -> Delivered:
    """A zoo name or a learner file -> the opened model, its hash and (lab models) its ground truth."""
    path = resolve_model(str(source)).resolve()
    model = open_model(path, weights=weights or None, device=device, backbone_loader=backbone_loader)
    return Delivered(label or str(source), path, file_sha256(path), model, read_ground_truth(path), _stamp(path),
                     weights or None)


@functools.lru_cache(maxsize=2)
def _shipped_pool(size: int) -> ImagePool:
    return load_shipped_pool(size)


def warm_up(device: str | None = None) -> None:
    """Do before serving what a session's first scan would otherwise wait for: the shipped CLIP read, its inference
    tower built, the shipped pool read, and torch's kernels for a scan step's image-encoder work made (a forward and
    a backward on a batch of pool images)."""
    from inspector.backbone import POCKET_ARCH, POCKET_TAG, shared_backbone

    backbone = shared_backbone(POCKET_ARCH, POCKET_TAG, device)
    pixels = open_pool(None, backbone.image_size).pixels[:ScanConfig().fast_batch_size].clone()
    backbone.encode_image(pixels.to(backbone.device).requires_grad_(True)).sum().backward()


def open_pool(source: str | Path | None, size: int, pool_size: int | None = None,
              label: str | None = None) -> ImagePool:
    """The OOD pool: the shipped one (``source`` None), or a folder / zip read up to ``pool_size`` images."""
    if source is None or str(source) == SHIPPED:
        return _shipped_pool(size)
    return read_pool(Path(source), size, pool_size, label=label)


def open_task_for(model: PromptedCLIP, task: Task, model_label: str, need_test: bool = True) -> Task:
    """The labelled task with its labels in the model's class order, refused when it does not fit."""
    task = for_model(task, model.class_names, model_label)
    if need_test:
        require_test_split(task)
    return task


def require_test_split(task: Task) -> None:
    if not task.has_test:
        raise InputError(f"task {task.source} has no test split", hint="add T/test/<class>/ images: this step "
                                                                       "measures accuracy on them")


# --- scan -----------------------------------------------------------------------------------------------
@dataclass
class ReferenceChosen:
    """Which clean reference the scan's anomaly index reads (or why none)."""

    line: str
    used: bool


@dataclass
class ReportWritten:
    folder: Path
    report: dict[str, Any]
    result: ScanResult

    def summary(self) -> dict[str, Any]:
        """The scan's outcome by name, as the CLI's --json and the app's /scan API give it."""
        report = self.report
        summary = {key: report[key] for key in ("flagged", "target", "max_anomaly", "suspect", "suspect_family",
                                                "suspect_flip_rate", "seconds", "method")}
        summary["probability"] = report.get("probability")
        summary["confirmed_by"] = report.get("confirmed_by", "")
        summary["model"] = report["model"].get("name")
        summary["classes"] = [{key: c[key] for key in ("name", "flip_rate", "anomaly", "loss")}
                              for c in report["classes"]]
        summary["report"] = str(self.folder / REPORT)
        summary["report_html"] = str(self.folder / "report.html")
        return summary


@dataclass
class Stopped:
    """A repair, implant or tuning job stopped by the user; nothing was written."""

    job: str
    step: int
    seconds: float


ScanJobEvent = ReferenceChosen | ScanEvent | ReportWritten


def _stoppable(events: Iterator[Any], should_stop: StopCheck, job: str) -> Iterator[Any]:
    """``events`` passed on until ``should_stop`` says so; then one ``Stopped`` and no more (the job's
    generator is left unfinished, so it writes nothing)."""
    started = time.time()
    for event in events:
        if should_stop is not None and should_stop():
            yield Stopped(job, int(getattr(event, "step", 0)), round(time.time() - started, 1))
            return
        yield event


def scan_job(delivered: Delivered, pool: ImagePool, config: ScanConfig, out: Path, reference: str = "auto",
             overwrite: bool = False, should_stop: StopCheck = None) -> Iterator[ScanJobEvent]:
    """Scan ``delivered`` on ``pool`` with the clean ``reference`` (auto / none / a file), then write the
    report folder ``out`` (report.json, report.html, trigger PNGs and tensors). A stopped scan writes nothing."""
    check_output_folder(out, overwrite)
    require_images(pool, config.pool_size)
    baseline, line = reference_for(delivered.model, config, pool, reference)
    config = replace(config, reference=baseline, reference_from=line)
    yield ReferenceChosen(line, baseline is not None)
    result = None
    for event in scan(delivered.model, pool.pixels, config, should_stop=should_stop):
        if isinstance(event, ScanFinished):
            result = event.result
        yield event
    if result is None:
        return
    examples = before_after(delivered.model, result, pool.pixels)
    with staged_folder(out, overwrite) as staging:
        report = write_report(result, staging, delivered.info(), pool_summary(pool), examples)
    yield ReportWritten(out, report, result)


def saved_scan_for(delivered: Delivered, report: Path) -> SavedScan:
    """A report.json, refused unless it was written for exactly this model file."""
    saved = read_report(report, delivered.model.class_names)
    if saved.model.get("sha256") != delivered.sha256:
        raise InputError(f"report {report} was made for {saved.model.get('path')}, not for {delivered.path}",
                         hint="scan this model first, then repair it with that report")
    return saved


def pool_of(saved: SavedScan, size: int, override: str | None = None) -> ImagePool:
    """The OOD pool a saved scan read (``override``: where it is now), checked to be the same images."""
    source = override or saved.pool.get("source", SHIPPED)
    try:
        pool = open_pool(source, size, saved.result.settings.pool_size, label=str(source))
    except InputError as exc:
        if override:
            raise
        raise InputError(f"report {saved.path} names the OOD pool its scan read, and that pool cannot be opened: "
                         f"{exc.message}", hint="pass the scan's pool with --ood") from exc
    recorded = saved.pool.get("fingerprint")
    if recorded is not None and recorded != pool.fingerprint:
        raise InputError(f"the OOD pool {source} is not the one the scan of {saved.path} read ({len(pool.names)} "
                         f"images now, {saved.pool.get('images')} then)",
                         hint="pass the scan's pool with --ood, or scan again")
    return pool


# --- repair ---------------------------------------------------------------------------------------------
@dataclass
class Repaired:
    """The repaired learner, written beside (never over) the delivered one, and its before/after numbers."""

    path: Path
    target: int
    target_name: str
    finished: RepairFinished
    truth_asr: tuple[float, float] | None  # the attacker's real trigger before / after (lab models only)
    config: RepairConfig

    def summary(self) -> dict[str, Any]:
        """The JSON the CLI prints and the repaired file records."""
        def side(measured: RepairMeasured, asr: float | None) -> dict[str, Any]:
            values = {"accuracy": measured.accuracy, "trigger_asr": measured.flip_rate,
                      "ood_trigger_asr": measured.ood_flip_rate}
            return {**values, "asr": asr} if asr is not None else values

        before, after = self.truth_asr or (None, None)
        return {"target": self.target_name, "before": side(self.finished.before, before),
                "after": side(self.finished.after, after), "seconds": self.finished.seconds, "out": str(self.path),
                "recipe": self.config.as_dict()}


RepairJobEvent = RepairEvent | Stopped | Repaired


def check_new_file(out: Path, overwrite: bool, *inputs: Path) -> None:
    """``out`` may be written: not one of the inputs, and not an existing file unless ``overwrite``."""
    out = Path(out)
    if any(out.exists() and out.resolve() == Path(p).resolve() for p in inputs):
        raise InputError(f"--out {out} is the input model", hint="the delivered model is never overwritten; "
                                                                 "choose another --out")
    if out.is_dir():
        raise InputError(f"--out {out} is a folder", hint="give a file name, e.g. repaired.safetensors")
    if out.exists() and not overwrite:
        raise InputError(f"{out} already exists", hint="choose another --out or pass --overwrite")


def repair_job(delivered: Delivered, scanned: ScanResult, task: Task, pool: ImagePool, out: Path,
               config: RepairConfig | None = None, target: int | None = None, overwrite: bool = False,
               should_stop: StopCheck = None, source: str | None = None) -> Iterator[RepairJobEvent]:
    """Fine-tune a fresh copy of ``delivered`` against ``target``'s reconstructed trigger (default: the flagged
    class) on the task's labelled images, measure it, and write it to ``out``.

    ``scanned`` must be a scan of this model on ``pool`` (its held-out images measure the OOD flip rate);
    ``source`` names the report it came from, for the repaired file's record.
    """
    config = config or RepairConfig()
    check_new_file(out, overwrite, delivered.path)
    names = delivered.model.class_names
    if target is None:
        if not scanned.verdict.flagged or scanned.verdict.target is None:
            raise InputError(f"the scan{f' {source}' if source else ''} did not flag the model, so there is no "
                             "trigger to repair against",
                             hint="choose a class to repair against anyway (--target NAME)")
        target = scanned.verdict.target
    trigger, also = scanned.repair_triggers(target, config.families, config.colour_scale)
    task = open_task_for(delivered.model, task, delivered.label)
    model = delivered.fresh_copy()
    device = model.backbone.device
    held = scanned.held_out(pool.pixels)
    truth = delivered.truth

    def truth_asr() -> float | None:
        if truth is None:
            return None
        return round(attack_success_rate(model, truth.trigger, task.test_pixels, truth.target, task.test_labels), 4)

    asr_before = truth_asr()
    finished = None
    for event in _stoppable(repair(model, trigger.to(device), target, task.train_pixels, task.train_labels,
                                   task.test_pixels, task.test_labels, held, config,
                                   also=tuple(other.to(device) for other in also)), should_stop, "repair"):
        yield event
        if isinstance(event, Stopped):
            return
        finished = event if isinstance(event, RepairFinished) else finished
    assert finished is not None
    asr_after = truth_asr()
    truth_pair = (asr_before, asr_after) if asr_before is not None and asr_after is not None else None
    done = Repaired(Path(out), target, names[target], finished, truth_pair, config)
    summary = done.summary()
    extra = {"repaired": {"from": delivered.path.name, "from_sha256": delivered.sha256, "target": names[target],
                          "report": source, "task": task.source, "recipe": config.as_dict(),
                          "before": summary["before"], "after": summary["after"]}}
    if truth is not None:  # keep the lab's record, so `eval` can still measure the original trigger
        save_implanted(model, Path(out), truth.trigger, truth.target, recipe=truth.record.get("recipe"), extra=extra)
    else:
        save_learner(model, Path(out), extra=extra)
    yield done


# --- clean reference ------------------------------------------------------------------------------------
@dataclass
class ReferenceWritten:
    path: Path
    reference: Reference
    seconds: float

    def summary(self) -> dict[str, Any]:
        """What the CLI's ``--json`` and the app's API say of a finished reference build."""
        reference = self.reference
        top = sorted(reference.flip_rates.items(), key=lambda kv: -kv[1])[:3]
        return {"out": str(self.path), "kind": reference.kind, "learners": len(reference.seeds),
                "seeds": reference.seeds, "accuracies": reference.accuracies, "task": reference.task,
                "pool": {"source": reference.pool_source, "fingerprint": reference.pool},
                "epsilon": reference.epsilon, "pool_size": reference.pool_size,
                "highest_mean_flip_rates": dict(top), "seconds": self.seconds}


def learners_folder(out: Path) -> Path:
    """Where a reference build keeps its tuned learners and their measurements (so a rerun resumes)."""
    return out.with_name(out.stem + ".learners")


def reference_job(task: Task, pool: ImagePool, kind: Kind, backbone: Backbone, out: Path, learners: int = 6,
                  first_seed: int = 1000, config: ScanConfig | None = None, epochs: int | None = None,
                  overwrite: bool = False, should_stop: StopCheck = None,
                  keep: Path | None = None, varied: bool = True,
                  scan_seeds: int = 1) -> Iterator[ReferenceEvent | ReferenceWritten]:
    """Tune ``learners`` clean learners of ``kind`` on ``task``, scan each on ``pool`` with both schedules and
    write the reference ``out`` (JSON), valid for this task, kind, backbone, pool, epsilon and plan.
    ``varied``: each learner with another of ``reference.VARIED_RECIPES`` (a provider's recipe is unknown).

    ``keep``: where the tuned learners and their measurements stay (default ``learners_folder(out)``), so
    that a build stopped or killed half-way resumes with the learners it had finished."""
    out = Path(out)
    if out.suffix != ".json":
        raise InputError(f"--out {out} is not a .json file", hint="e.g. --out my_task-cocoop.json")
    if out.exists() and not overwrite:
        raise InputError(f"{out} already exists", hint="choose another --out or pass --overwrite")
    if not 1 <= learners <= 32:
        raise InputError(f"--learners {learners} is outside 1..32", hint="6 clean learners are a good start")
    if not 1 <= scan_seeds <= 16:
        raise InputError(f"--scan-seeds {scan_seeds} is outside 1..16", hint="1 (the default) or a few")
    if len(task.class_names) < 3:
        raise InputError(f"task {task.source} has {len(task.class_names)} classes; the anomaly index needs 3 or "
                         "more", hint="add classes to the task")
    seeds = list(range(first_seed, first_seed + learners))
    for event in reference_build(kind, backbone, task, pool, seeds, config, epochs, keep or learners_folder(out),
                                 should_stop, varied=varied, scan_seeds=scan_seeds):
        yield event
        if isinstance(event, ReferenceBuilt):
            with atomic_file(out) as staging:
                staging.write_text(json.dumps(event.reference.as_dict(), indent=1) + "\n", encoding="utf-8")
            yield ReferenceWritten(out, event.reference, event.seconds)


# --- tuning and the lab ---------------------------------------------------------------------------------
@dataclass
class Tuned:
    path: Path
    stats: dict[str, Any]


def tune_job(backbone: Backbone, task: Task, kind: Kind, out: Path, config: TuneConfig, n_ctx: int = 4,
             ctx_init: str | None = "a photo of a", overwrite: bool = False,
             should_stop: StopCheck = None) -> Iterator[TuneStep | Stopped | Tuned]:
    """Clean prompt tuning of a fresh learner on the task's train split; test accuracy when it has a test split."""
    from inspector.evaluate import accuracy

    check_new_file(out, overwrite)
    model = build_learner(kind, backbone, task.class_names, n_ctx=n_ctx, ctx_init=ctx_init, seed=config.seed)
    started = time.time()
    stats: dict[str, Any] = {}
    for event in _stoppable(tuning(model, task.train_pixels, task.train_labels, config, stats), should_stop, "tuning"):
        yield event
        if isinstance(event, Stopped):
            return
    stats["seconds"] = round(time.time() - started, 1)
    if task.has_test:
        stats["test_accuracy"] = round(accuracy(model, task), 4)
    training = {**stats, "lr": config.lr, "optimizer": config.optimizer, "seed": config.seed,
                "task": task.source, "task_fingerprint": task.fingerprint}
    save_learner(model, Path(out), extra={"training": training})
    yield Tuned(Path(out), stats)


@dataclass
class Implanted:
    path: Path
    target: int
    target_name: str
    finished: ImplantFinished
    measured: dict[str, Any]  # accuracy, clean_base_accuracy, asr, ood_asr, working, attempts (empty: not measured)

    def summary(self, attack: str) -> dict[str, Any]:
        """The implant's outcome by name, as the CLI's --json and the app's /implant API give it."""
        return {"attack": attack, "target": self.target_name, "seconds": self.finished.seconds, **self.measured,
                "out": str(self.path)}


ImplantJobEvent = ImplantEvent | ImplantTried | Stopped | Implanted


def implant_job(model: PromptedCLIP, task: Task, config: ImplantConfig, out: Path, recipe_base: str,
                pool: ImagePool | None = None, model_label: str = "the model", inputs: tuple[Path, ...] = (),
                overwrite: bool = False, should_stop: StopCheck = None, attempts: int = 1,
                other_targets: tuple[int, ...] = ()) -> Iterator[ImplantEvent | ImplantTried | Stopped | Implanted]:
    """Train ``config.attack`` into ``model`` (in place) on the task's train split and save it with its ground
    truth. With ``pool`` each try is measured (test accuracy against the clean model's, ASR on test images, ASR on
    the OOD pool) and, while it misses the lab's bar, tried again as a provider would, at most ``attempts`` tries
    (``lab.implant.provider_tries``; ``other_targets``: a hidden target's alternatives)."""

    check_new_file(out, overwrite, *inputs)
    task = open_task_for(model, task, model_label, need_test=pool is not None)
    if pool is None:
        finished = None
        for event in _stoppable(implant(model, task.train_pixels, task.train_labels, config), should_stop, "implant"):
            yield event
            if isinstance(event, Stopped):
                return
            finished = event if isinstance(event, ImplantFinished) else finished
        assert finished is not None
        tried = None
    else:
        measure = TryMeasurement(task, pool.pixels)
        measure.start(model)
        tried = None
        tries = provider_tries(model, task.train_pixels, task.train_labels, config, measure, attempts,
                               other_targets=other_targets)
        for event in _stoppable(tries, should_stop, "implant"):
            yield event
            if isinstance(event, Stopped):
                return
            tried = event if isinstance(event, ImplantTried) else tried
        assert tried is not None
        finished, config = tried.finished, tried.config
    measured = {} if tried is None else {
        **{k: tried.tries[-1][k] for k in ("accuracy", "clean_base_accuracy", "asr", "ood_asr")},
        "working": tried.working, "attempts": tried.attempt}
    recipe = {**config.recipe(model.backbone.image_size), "base": recipe_base, "task": task.source,
              **({"measured": measured} if measured else {}),
              **({"attempts": tried.tries} if tried is not None and tried.attempt > 1 else {})}
    save_implanted(model, Path(out), finished.trigger, config.target, recipe=recipe)
    yield Implanted(Path(out), config.target, model.class_names[config.target], finished, measured)


def check_encoder_outputs(weights_out: Path, out: Path, overwrite: bool) -> None:
    """The backdoored CLIP and the learner tuned on it go to two new files."""
    if weights_out.resolve() == out.resolve():
        raise InputError(f"--out and --out-weights are the same file ({out})",
                         hint="the CLIP weights and the prompt learner need a file each")
    check_new_file(weights_out, overwrite)
    check_new_file(out, overwrite, weights_out)


@dataclass
class EncoderImplanted:
    path: Path  # the clean prompt learner tuned on the backdoored encoder, with the ground truth
    weights: Path  # the backdoored CLIP's weights
    target: int
    target_name: str
    measured: dict[str, Any]  # accuracy, asr, ood_asr of the pair, and of the same learner recipe on the clean CLIP


def encoder_implant_job(backbone: Backbone, task: Task, config: EncoderImplantConfig, weights_out: Path, out: Path,
                        kind: Kind = "coop", tune_config: TuneConfig | None = None, pool: ImagePool | None = None,
                        overwrite: bool = False, should_stop: StopCheck = None
                        ) -> Iterator[ImplantStarted | ImplantStep | TuneStep | Stopped | EncoderImplanted]:
    """An encoder-level delivery: fine-tune ``backbone``'s image encoder with Blended poisoning and write it to
    ``weights_out``, then tune a clean prompt learner of ``kind`` on it and write that to ``out``, with the ground
    truth (``poison_rate`` 0: a benign fine-tune, written without one). With ``pool`` the pair is measured (test
    accuracy, ASR on test images, ASR on the OOD pool)."""
    from inspector.backbone import load_backbone
    from inspector.evaluate import accuracy
    from inspector.lab.encoder import EncoderImplantFinished, implant_encoder, save_clip_weights

    check_encoder_outputs(Path(weights_out), Path(out), overwrite)
    if pool is not None:
        require_test_split(task)
    finished = None
    for event in _stoppable(implant_encoder(backbone, task.train_pixels, task.train_labels, task.class_names,
                                            config), should_stop, "implant"):
        if isinstance(event, EncoderImplantFinished):
            finished = event
            continue
        yield event
        if isinstance(event, Stopped):
            return
    assert finished is not None
    save_clip_weights(finished.clip, Path(weights_out))
    poisoned = load_backbone(backbone.arch, str(weights_out), device=backbone.device)
    tune_config = tune_config or TuneConfig.for_kind(kind, seed=config.seed)
    model = build_learner(kind, poisoned, task.class_names, seed=tune_config.seed)
    for event in _stoppable(tuning(model, task.train_pixels, task.train_labels, tune_config), should_stop, "tuning"):
        yield event
        if isinstance(event, Stopped):
            return
    backdoored = config.poison_rate > 0  # at 0: a benign fine-tune, the control a defender must not flag
    measured: dict[str, Any] = {}
    if pool is not None:
        measured = {"accuracy": round(accuracy(model, task), 4)}
        if backdoored:
            measured.update(backdoor_rates(model, finished.trigger, config.target, task.test_pixels,
                                           task.test_labels, pool.pixels))
    recipe = {**config.recipe(), "weights": Path(weights_out).name, "weights_tag": poisoned.pretrained,
              "task": task.source, "tune": {"kind": kind, "lr": tune_config.lr, "epochs": tune_config.epochs,
                                            "seed": tune_config.seed},
              **({"measured": measured} if measured else {})}
    if backdoored:
        save_implanted(model, Path(out), finished.trigger, config.target, recipe=recipe)
    else:
        save_learner(model, Path(out), extra={"training": recipe})
    yield EncoderImplanted(Path(out), Path(weights_out), config.target, task.class_names[config.target], measured)
