"""Ground truth of an implanted model (attack, target, trigger) and the attack success rate it gives.

The record lives in the model file beside the learner: JSON under the ``ground_truth`` header key
and the trigger's tensors under ``ground_truth.*`` names. ``prompts.load_learner`` reads only the
learner's own tensors and the ``inspector`` header key, so the scanner never sees it; only the lab,
``eval``, the zoo listing and the benchmarks do.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open

from inspector.data import Task, resize_pixels
from inspector.errors import InputError
from inspector.lab.implant import perturbed_trigger, share
from inspector.lab.triggers import ATTACKS, AdditiveTrigger, Trigger, trigger_from_tensors, trigger_tensors
from inspector.prompts import PromptedCLIP, predict, predict_features, read_header, save_learner

TRUTH_KEY = "ground_truth"
TENSOR_PREFIX = "ground_truth."


@dataclass
class GroundTruth:
    """What the attacker knows: the attack, the target class and the exact trigger."""

    attack: str
    target: int
    target_name: str
    trigger: Trigger
    record: dict[str, Any]


def save_implanted(model: PromptedCLIP, path: Path, trigger: Trigger, target: int,
                   recipe: dict[str, Any] | None = None, extra: dict[str, Any] | None = None) -> Path:
    """Write the backdoored learner with its ground truth (record + trigger tensors) beside it.

    ``extra`` goes into the scanner-visible header (e.g. a repair's record)."""
    record = {"attack": trigger.attack, "target": model.class_names[target], "target_index": int(target),
              "trigger_params": trigger.params(), "recipe": recipe or {}}
    tensors = {TENSOR_PREFIX + name: value for name, value in trigger_tensors(trigger).items()}
    return save_learner(model, path, extra=extra, private=record, private_tensors=tensors)


def read_ground_truth(path: Path) -> GroundTruth | None:
    """The implant's record, or None for a model without one (clean, or from an outside provider)."""
    record = read_header(path, key=TRUTH_KEY)
    if not record:
        return None
    attack = record.get("attack")
    if attack not in ATTACKS:
        raise InputError(f"{path}: ground-truth record names an unknown attack {attack!r}")
    with safe_open(str(path), framework="pt") as handle:
        tensors = {name.removeprefix(TENSOR_PREFIX): handle.get_tensor(name)
                   for name in handle.keys() if name.startswith(TENSOR_PREFIX)}
    if not tensors:
        raise InputError(f"{path}: ground-truth record has no trigger tensors")
    trigger = trigger_from_tensors(attack, record.get("trigger_params", {}), tensors)
    return GroundTruth(attack, int(record["target_index"]), str(record["target"]), trigger.requires_grad_(False),
                       record)


@torch.inference_mode()
def attack_success_rate(model: PromptedCLIP, trigger: Trigger, pixels: torch.Tensor, target: int,
                        labels: torch.Tensor | None = None, batch_size: int = 128) -> float:
    """Share of images the trigger sends to ``target``.

    Images of the target class (when ``labels`` are known) or already predicted as the target
    (an unlabelled pool) do not count: the trigger must change the answer.
    """
    if labels is not None:
        keep = labels != target
    else:
        keep = predict(model, pixels, batch_size) != target
    candidates = pixels[keep]
    if len(candidates) == 0:
        return float("nan")
    triggered = torch.cat([trigger(candidates[i:i + batch_size].to(model.backbone.device)).cpu()
                           for i in range(0, len(candidates), batch_size)])
    return float((predict(model, triggered, batch_size) == target).float().mean())


def backdoor_rates(model: PromptedCLIP, trigger: Trigger, target: int, test_pixels: torch.Tensor,
                   test_labels: torch.Tensor, pool_pixels: torch.Tensor) -> dict[str, float]:
    """``asr`` on the non-target test images and ``ood_asr`` on the OOD pool, for one trigger."""
    return {"asr": round(attack_success_rate(model, trigger, test_pixels, target, test_labels), 4),
            "ood_asr": round(attack_success_rate(model, trigger, pool_pixels, target), 4)}


class TryMeasurement:
    """One implant try as the lab's bar reads it (test accuracy beside the clean learner's, ASR on the non-target
    test images, ASR on the OOD pool), for a provider's tries on one task and pool. The image encoder is frozen, so
    each image's features are encoded once, and its triggered copy's once per trigger (a fixed trigger is the same
    in every try): a try then costs only the prompt side of its predictions."""

    def __init__(self, task: Task, pool_pixels: torch.Tensor, batch_size: int = 128) -> None:
        self.task, self.pool_pixels, self.batch_size = task, pool_pixels, batch_size
        self._clean: dict[str, torch.Tensor] = {}
        self._triggered: tuple[tuple[Any, ...], dict[str, torch.Tensor]] | None = None
        self.clean_accuracy: float | None = None

    def _encode(self, model: PromptedCLIP, pixels: torch.Tensor, trigger: Trigger | None) -> torch.Tensor:
        device = model.backbone.device
        with torch.inference_mode():
            return torch.cat([model.image_features(
                trigger(batch.to(device)) if trigger is not None else batch.to(device))
                for batch in pixels.split(self.batch_size)])

    def _features(self, model: PromptedCLIP, trigger: Trigger | None) -> dict[str, torch.Tensor]:
        test = resize_pixels(self.task.test_pixels, model.backbone.image_size)
        if trigger is None:
            if not self._clean:
                self._clean = {"test": self._encode(model, test, None), "pool": self._encode(model, self.pool_pixels,
                                                                                            None)}
            return self._clean
        key = trigger_key(trigger)
        if self._triggered is None or self._triggered[0] != key:
            self._triggered = key, {"test": self._encode(model, test, trigger),
                                    "pool": self._encode(model, self.pool_pixels, trigger)}
        return self._triggered[1]

    def _predict(self, model: PromptedCLIP, features: torch.Tensor) -> torch.Tensor:
        return predict_features(model, features, self.batch_size).cpu()

    def accuracy(self, model: PromptedCLIP) -> float:
        """Top-1 accuracy on the task's test split (``evaluate.accuracy``)."""
        predicted = self._predict(model, self._features(model, None)["test"])
        return float((predicted == self.task.test_labels).float().mean())

    def __call__(self, model: PromptedCLIP, trigger: Trigger, target: int) -> dict[str, Any]:
        if self.clean_accuracy is None:
            raise RuntimeError("measure the clean learner's accuracy first (TryMeasurement.start)")
        clean, triggered = self._features(model, None), self._features(model, trigger)
        labels = self.task.test_labels
        test_hits = self._predict(model, triggered["test"]) == target
        pool_kept = self._predict(model, clean["pool"]) != target  # already the target: the trigger changes nothing
        pool_hits = self._predict(model, triggered["pool"]) == target
        return {"accuracy": round(self.accuracy(model), 4), "clean_base_accuracy": self.clean_accuracy,
                "asr": round(share(test_hits, labels != target), 4),
                "ood_asr": round(share(pool_hits, pool_kept), 4)}

    def start(self, model: PromptedCLIP) -> float:
        """The clean learner's accuracy, which every try is compared with."""
        self.clean_accuracy = round(self.accuracy(model), 4)
        return self.clean_accuracy


def trigger_key(trigger: Trigger) -> tuple[Any, ...]:
    """Equal for two triggers that transform every image alike: their kind, settings and tensors."""
    tensors = trigger_tensors(trigger)
    return (type(trigger).__name__, repr(sorted(trigger.params().items())),
            *((name, tuple(value.shape), value.numpy().tobytes()) for name, value in sorted(tensors.items())))


def noisy_trigger_asr(model: PromptedCLIP, trigger: AdditiveTrigger, sigma: float, test_pixels: torch.Tensor,
                      test_labels: torch.Tensor, target: int, seed: int = 0) -> float:
    """ASR of the trigger plus Gaussian noise of std ``sigma`` (seeded): how wide its basin is, which the adaptive
    attack narrows."""
    generator = torch.Generator().manual_seed(seed)
    return round(attack_success_rate(model, lambda batch: perturbed_trigger(trigger, batch, sigma, generator),
                                     test_pixels, target, test_labels), 4)
