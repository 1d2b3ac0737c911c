"""The transfer check: does a suspect's trigger carry over to clean learners of the same CLIP?

Why: a Blended backdoor can hide from the indices. Its target is reached by a pattern blended over the image, which
the additive trigger cannot paint and the quick families find only partly in a few steps; stepped longer, a blend
trigger reaches the target on most images, but so does it reach natural attractors of a clean learner
(benchmarks/blend_choice.md, confirmation_choice.md). What tells them apart is where the pattern works: a trigger
that reaches a class through what CLIP itself has learnt moves clean learners of the same CLIP too, while one that
reaches it through the delivered prompt's backdoor does not (benchmarks/transfer_choice.md, dev zoo).

So, for the classes an unflagged scan points at (``detect.transfer_candidates``): a blend trigger is stepped
``transfer_steps`` times on the delivered model (the blend family's arm and steps, on the scan's batches), measured
on the held-out images once by the delivered model and once by each of the reference's clean transfer learners. The
class's *transfer gap* is the first flip rate minus the learners' mean, and its index is how far that gap lies above
the gaps of other clean learners measured the same way (the reference keeps them per class,
``detect.transfer_index``); ``detect.confirmed_by_transfer`` decides.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Generator, Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch

from inspector.backbone import Backbone
from inspector.detect import transfer_index
from inspector.errors import InputError
from inspector.invert import (
    ClassInversion,
    CleanPredictions,
    Logits,
    ScanConfig,
    TriggerSnapshot,
    _measure,
    candidate_classes,
    family_arm,
    family_batches_of,
    frozen_learner,
    split_pool,
    step_family_arm,
)
from inspector.pools import ImagePool
from inspector.prompts import PromptedCLIP, load_learner
from inspector.reference import Reference
from inspector.runs import atomic_file


@dataclass
class TransferMeasured:
    """One class of the transfer check, measured (``record``: position, index, name, delivered, clean, gap,
    reference_gap, transfer_index)."""

    record: dict[str, Any]


def blend_settings(config: ScanConfig) -> ScanConfig:
    """The scan's settings with the blend family's arm set as the transfer check steps it."""
    return replace(config, blend_alpha=config.transfer_alpha, blend_lr=config.transfer_lr,
                   blend_batch_size=config.transfer_images)


class CleanReaders:
    """The transfer learners, each with its predictions on the clean held-out images (computed once)."""

    def __init__(self, learners: Sequence[PromptedCLIP], held: torch.Tensor) -> None:
        self.readers = []
        for learner in learners:
            logits_of = Logits(learner)
            self.readers.append((logits_of, logits_of.predict(held)))

    @classmethod
    def of_files(cls, files: Sequence[str], model: PromptedCLIP, held: torch.Tensor) -> CleanReaders:
        """The reference's transfer learner files, on ``model``'s CLIP."""
        return cls([load_learner(Path(f), model.backbone) for f in files], held)

    def flip_rates(self, arm: ClassInversion, held: torch.Tensor) -> list[float]:
        return [_measure(logits_of, arm.trigger, arm.k, arm.name, held, clean)["flip_rate"]
                for logits_of, clean in self.readers]


def stepped_arm(model: PromptedCLIP, k: int, logits_of: Logits, fit: torch.Tensor, batches: list[torch.Tensor],
                clean_fit: CleanPredictions, config: ScanConfig) -> Iterator[tuple[int, ClassInversion]]:
    """Class ``k``'s blend trigger from mid-grey, after each of the check's steps."""
    settings = blend_settings(config)
    device = model.backbone.device
    arm = family_arm("blend", k, model.class_names[k], settings, device, model.backbone.image_size)
    steps = min(config.transfer_steps, len(batches))
    for t in step_family_arm(arm, "blend", logits_of, fit, batches, clean_fit, steps, settings, device):
        yield t, arm


def gap(model: PromptedCLIP, k: int, logits_of: Logits, fit: torch.Tensor, batches: list[torch.Tensor],
        clean_fit: CleanPredictions, held: torch.Tensor, clean_held: torch.Tensor, readers: CleanReaders,
        config: ScanConfig, shown: tuple[int, int] | None = None
        ) -> Generator[TriggerSnapshot, None, tuple[ClassInversion, dict[str, float]]]:
    """Class ``k``'s transfer gap: (its stepped arm, {delivered, clean, gap}); with ``shown`` (the class's position in
    the scan, the scan's steps so far) a snapshot of the trigger every ``snapshot_every`` steps."""
    arm = None
    for t, arm in stepped_arm(model, k, logits_of, fit, batches, clean_fit, config):
        if shown is not None and (t == 1 or t % config.snapshot_every == 0):
            yield arm.snapshot(shown[0], config.transfer_steps, shown[1])
    assert arm is not None
    delivered = _measure(logits_of, arm.trigger, k, arm.name, held, clean_held)["flip_rate"]
    carried = readers.flip_rates(arm, held)
    clean = sum(carried) / len(carried)
    return arm, {"delivered": delivered, "clean": round(clean, 4), "gap": round(delivered - clean, 4)}


def check(model: PromptedCLIP, positions: Sequence[int], records: Sequence[dict[str, Any]], logits_of: Logits,
          fit: torch.Tensor, batches: list[torch.Tensor], clean_fit: CleanPredictions, held: torch.Tensor,
          clean_held: torch.Tensor, config: ScanConfig, scan_steps: int = 0
          ) -> Generator[TriggerSnapshot | TransferMeasured, None, tuple[list[dict[str, Any]], dict[int, Any]]]:
    """The transfer check of the classes at ``positions`` of a scan's ``records``: their records (``TransferMeasured``)
    and their blend triggers' tensors by class index."""
    assert config.reference is not None
    readers = CleanReaders.of_files(config.reference.transfer_learners, model, held)
    checked, tensors = [], {}
    for position in positions:
        record = records[position]
        k = int(record["index"])
        arm, measured = yield from gap(model, k, logits_of, fit, batches, clean_fit, held, clean_held, readers,
                                       config, shown=(position, scan_steps))
        row = checked_class(position, record, measured, config.reference.transfer[str(record["name"])])
        checked.append(row)
        tensors[k] = arm.trigger.tensors()
        yield TransferMeasured(row)
    return checked, tensors


def checked_class(position: int, record: dict[str, Any], measured: dict[str, float],
                  reference_gaps: Sequence[float]) -> dict[str, Any]:
    """A checked class's row: its measurement, the clean learners' mean gap for it and the gap's index."""
    return {"position": position, "index": int(record["index"]), "name": record["name"], **measured,
            "reference_gap": round(sum(reference_gaps) / len(reference_gaps), 4),
            "transfer_index": round(transfer_index(measured["gap"], reference_gaps), 4)}


def class_gaps(model: PromptedCLIP, learners: Sequence[PromptedCLIP], pool: torch.Tensor,
               config: ScanConfig, classes: Sequence[int] | None = None,
               triggers: dict[int, dict[str, torch.Tensor]] | None = None) -> dict[str, dict[str, float]]:
    """The transfer gap ({delivered, clean, gap}) of each of ``classes`` (default: every candidate class) of
    ``model`` against ``learners``, as a scan measures it: for a reference's clean learners, and for scans recorded
    before the check; ``triggers`` gets each class's blend trigger tensors."""
    config = config.for_input(model.backbone.image_size)
    fit, held = split_pool(pool, config.pool_size, config.holdout, config.seed)
    batches = family_batches_of(len(fit), config)
    out: dict[str, dict[str, float]] = {}
    with frozen_learner(model):
        logits_of = Logits(model)
        clean_fit = CleanPredictions(logits_of, fit, batches)
        clean_held = logits_of.predict(held)
        readers = CleanReaders(learners, held)
        for k in candidate_classes(config, len(model.class_names)) if classes is None else classes:
            arm, out[model.class_names[k]] = returned(gap(model, k, logits_of, fit, batches, clean_fit, held,
                                                          clean_held, readers, config))
            if triggers is not None:
                triggers[k] = arm.trigger.tensors()
    return out


def returned(events: Generator[Any, None, Any]) -> Any:
    """What a generator returns, its events left unread."""
    while True:
        try:
            next(events)
        except StopIteration as done:
            return done.value


# ---------------------------------------------------------------- the reference's part

CARRIERS = 3  # clean learners a delivered model's triggers are carried over to


@dataclass
class GapsMeasured:
    """One more clean learner of a reference measured as if delivered (its every class's transfer gap)."""

    seed: int
    done: int
    total: int
    reused: bool  # read back from the learners folder
    top: str  # its class with the largest gap
    seconds: float

    def line(self) -> str:
        how = "kept from an earlier run" if self.reused else f"{self.seconds:.0f} s"
        return f"learner {self.done}/{self.total} (seed {self.seed}): largest gap on {self.top!r} ({how})"


def evenly_spread(seeds: Sequence[int], n: int = CARRIERS) -> list[int]:
    """``n`` of a reference's learners, spread over its list (whose recipes vary along it)."""
    if len(seeds) < n + 2:
        raise InputError(f"the reference has {len(seeds)} learners; the transfer check needs {n} to carry triggers "
                         "over to and at least 2 more to measure", hint="build a reference with more learners")
    step = -(-len(seeds) // n)
    return list(seeds[::step][:n])


def carriers_folder(reference_path: Path) -> Path:
    """Where a reference keeps its transfer learners' files: beside it, ``<name>.transfer/``."""
    return reference_path.with_suffix(".transfer")


def reference_transfer(reference: Reference, path: Path, keep: Path, backbone: Backbone, pool: ImagePool,
                       config: ScanConfig, carriers: Sequence[int] | None = None
                       ) -> Generator[GapsMeasured, None, Reference]:
    """Add the transfer check to the reference at ``path``: its learners kept in ``keep`` (the folder a build kept
    them in), ``carriers`` of them (default: ``evenly_spread``) to carry triggers over to, every other one measured
    as if delivered (cached in ``keep``, so an interrupted run resumes); the carriers' files are copied beside the
    reference and the file is written again with the ``transfer`` record."""
    carriers = list(carriers) if carriers else evenly_spread(reference.seeds)
    unknown = [s for s in carriers if s not in reference.seeds]
    if unknown:
        raise InputError(f"seed {unknown[0]} is not one of the reference's learners",
                         hint="its seeds: " + ", ".join(map(str, reference.seeds)))
    files = {seed: keep / f"{reference.kind}_s{seed}.safetensors" for seed in reference.seeds}
    missing = [f for f in files.values() if not f.is_file()]
    if missing:
        raise InputError(f"the learner file {missing[0]} is missing",
                         hint="pass the folder the reference build kept its learners in (--keep)")
    config = replace(config, pool_size=reference.pool_size, holdout=reference.holdout, epsilon=reference.epsilon)
    carried = [load_learner(files[seed], backbone) for seed in carriers]
    measured = [seed for seed in reference.seeds if seed not in carriers]
    key = {"settings": config.transfer_settings(), "carriers": carriers, "pool": pool.fingerprint}
    per_learner = []
    for i, seed in enumerate(measured):
        cache = keep / f"{reference.kind}_s{seed}_transfer.json"
        kept = json.loads(cache.read_text(encoding="utf-8")) if cache.is_file() else {}
        started = time.time()
        if kept.get("key") == key:
            gaps = {str(c): float(g) for c, g in kept["gaps"].items()}
        else:
            gaps = {c: m["gap"] for c, m in class_gaps(load_learner(files[seed], backbone), carried, pool.pixels,
                                                          config).items()}
            with atomic_file(cache) as staging:
                staging.write_text(json.dumps({"key": key, "gaps": gaps}, indent=1) + "\n", encoding="utf-8")
        per_learner.append(gaps)
        yield GapsMeasured(seed, i + 1, len(measured), bool(kept.get("key") == key), max(gaps, key=gaps.get),
                           round(time.time() - started, 1))
    folder = carriers_folder(path)
    folder.mkdir(parents=True, exist_ok=True)
    for seed in carriers:
        shutil.copyfile(files[seed], folder / files[seed].name)
    updated = replace(reference, transfer={"settings": config.transfer_settings(), "learners": carriers,
                                           "measured": measured, "per_learner": per_learner})
    updated.check()
    with atomic_file(path) as staging:
        staging.write_text(json.dumps(updated.as_dict(), indent=1) + "\n", encoding="utf-8")
    return updated
