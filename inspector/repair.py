"""Repair: unlearn the backdoor by fine-tuning the prompt learner on triggered copies of labelled images.

DESIGN §1: stamp the reconstructed trigger onto a small labelled clean set, mix the triggered copies
with the clean ones (true labels), fine-tune the learnable prompt parts only (context, and the meta-net
for CoCoOp). By default every family's trigger of the class is used and the triggered copies are only
pushed off the suspect class (``triggered_loss``): teaching them their true class as well (DESIGN's
recipe, ``"labels"``) also teaches the model to see through the whole transform, which cost colour
triggers' repairs up to 6 accuracy points on the dev zoo (benchmarks/repair_recipes_dev.md).
A generator of typed events (loss every step; clean accuracy and the trigger's flip rate every
``eval_every`` steps) so the app can draw live curves. A measurement runs the text tower once per image on
CoCoOp, so those between the first and the last read a fixed sample of ``eval_sample`` test and OOD images:
measured on every image each time, they took two fifths of a CoCoOp repair; the before/after figures use all.

The encoders are frozen and the trigger fixed, so every augmented view a step will read is encoded once, clean
and triggered (by one family's trigger each), and the evaluation sets too: a step costs only the prompt learner and
the text tower.
The caller's model is trained in place; writing it to a *new* file is the caller's job.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F

from inspector.prompts import (
    PromptedCLIP,
    encode_transformed_views,
    iter_transformed_views,
    predict_features,
    stack_views,
)

Stamp = Callable[[torch.Tensor], torch.Tensor]
FAMILY_CHOICES = ("indexed", "both", "additive")
TRIGGERED_LOSSES = ("labels", "suppress")
MEASUREMENT_SETTINGS = ("eval_every", "eval_sample")  # when and on what a repair is measured, not how it trains


def recipe_of(settings: dict[str, Any]) -> dict[str, Any]:
    """A repair's settings (``RepairConfig.as_dict``, as recorded) less those that do not change the repaired model."""
    return {key: value for key, value in settings.items() if key not in MEASUREMENT_SETTINGS}


@dataclass
class RepairConfig:
    """The repair recipe: the triggers, their loss, the epochs and lr chosen on the dev zoo
    (benchmarks/repair_recipes_dev.md; the rest on the benchmark zoo, benchmarks/repair_recipes.md)."""

    # dev zoo, 27 backdoors: 40 epochs at 5e-3 left ASR 8.8%, 20 at 1e-2 6.7% (25 at 7.5e-3: 8.3%), no model
    # losing more than 1 accuracy point with any: half the text-tower passes, so a CoCoOp repair takes under a minute
    epochs: int = 20
    lr: float = 1e-2
    batch_size: int = 32  # clean images per step; each comes with its triggered copy
    views: int = 8
    weight_decay: float = 1e-4
    eval_every: int = 20  # steps between measurements
    eval_sample: int = 96  # test and OOD images each measurement between the first and the last reads (0: all)
    seed: int = 0
    refresh_every: int = 0  # epochs between re-inversions of the trigger against the model being repaired (0: never)
    refresh_steps: int = 8  # Adam steps of each re-inversion, on OOD images, from the current trigger
    label_weight: float = 1.0  # cross-entropy of the clean copies against their labels
    anchor: float = 0.0  # KL of the clean copies' predictions to the delivered model's: keeps what it did right
    triggered: bool = True  # False: clean-only fine-tuning, the control that shows the trigger does the repair
    # "indexed": the trigger of the family that gave the class its anomaly index; "both": every family the scan
    # reconstructed for it, each triggered copy drawn from one of them (a filter's colour path and the additive one);
    # "additive": the additive trigger whichever family gave the index
    families: str = "both"
    colour_scale: float = 1.0  # a colour trigger's strength in repair, as a fraction of the reconstructed one
    # what the triggered copies are taught: "labels", their true class; "suppress", only that they are not the
    # target (-log(1 - p_target) on non-target images), which leaves the rest of what the trigger does alone
    triggered_loss: str = "suppress"

    def __post_init__(self) -> None:
        if self.families not in FAMILY_CHOICES:
            raise ValueError(f"families must be one of {FAMILY_CHOICES}, not {self.families!r}")
        if self.triggered_loss not in TRIGGERED_LOSSES:
            raise ValueError(f"triggered_loss must be one of {TRIGGERED_LOSSES}, not {self.triggered_loss!r}")

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class RepairStarted:
    total_steps: int
    target: int
    settings: dict[str, Any]


@dataclass
class RepairEncoding:
    """Before the first step: the labelled images' augmented views encoded so far, clean and triggered."""

    view: int
    views: int
    images: int
    seconds: float


@dataclass
class RepairStep:
    step: int
    total_steps: int
    loss: float


@dataclass
class RepairMeasured:
    """Clean accuracy and the reconstructed trigger's flip rate at ``step`` (0 = before repair)."""

    step: int
    total_steps: int
    accuracy: float
    flip_rate: float  # non-target test images the reconstructed trigger sends to the target
    ood_flip_rate: float  # the same on the OOD images (already-target ones excluded)
    test_images: int  # how many test and OOD images this measurement read (a sample between the ends)
    ood_images: int


@dataclass
class RepairFinished:
    before: RepairMeasured
    after: RepairMeasured
    seconds: float


RepairEvent = RepairStarted | RepairEncoding | RepairStep | RepairMeasured | RepairFinished


class _Probe:
    """Precomputed features of the evaluation images, clean and stamped; measures the model on them, on every
    image or on a fixed seeded sample of ``sample`` test and OOD images."""

    def __init__(self, model: PromptedCLIP, stamp: Stamp, target: int, test_pixels: torch.Tensor,
                 test_labels: torch.Tensor, ood_pixels: torch.Tensor, sample: int = 0, seed: int = 0) -> None:
        self.model, self.target = model, target
        both = {"clean": None, "stamped": stamp}
        self.test = encode_transformed_views(model.backbone, test_pixels, 1, 0, both)
        self.ood = encode_transformed_views(model.backbone, ood_pixels, 1, 0, both)
        self.labels = test_labels.to(self.test["clean"].device).long()
        generator = torch.Generator().manual_seed(seed)
        self.sample = {"test": torch.randperm(len(self.labels), generator=generator)[:sample] if sample else None,
                       "ood": torch.randperm(len(ood_pixels), generator=generator)[:sample] if sample else None}

    def _predict(self, features: torch.Tensor) -> torch.Tensor:
        return predict_features(self.model, features, batch_size=256)

    def measure(self, step: int, total: int, sampled: bool = False) -> RepairMeasured:
        """Every image, or the fixed sample (``sampled``) when there is one."""
        test, ood = (self.sample["test"], self.sample["ood"]) if sampled else (None, None)

        def rows(features: torch.Tensor, picked: torch.Tensor | None) -> torch.Tensor:
            return features if picked is None else features[picked.to(features.device)]

        labels = rows(self.labels, test)
        was_training = self.model.learner.training
        self.model.learner.eval()
        clean = self._predict(rows(self.test["clean"][0], test))
        stamped = self._predict(rows(self.test["stamped"][0], test))
        ood_clean = self._predict(rows(self.ood["clean"][0], ood))
        ood_stamped = self._predict(rows(self.ood["stamped"][0], ood))
        self.model.learner.train(was_training)
        non_target = labels != self.target
        ood_eligible = ood_clean != self.target
        return RepairMeasured(step, total, _share(clean == labels), _share((stamped == self.target)[non_target]),
                              _share((ood_stamped == self.target)[ood_eligible]), len(labels), len(ood_clean))


class NoiseStamp:
    """Random ℓ∞ noise in place of a trigger: every call draws its own uniform noise in [-epsilon, epsilon]
    (a fresh draw per triggered copy), the repair ablation's control that a perturbation of the trigger's size
    but not its direction does not unlearn the backdoor (the paper's random-noise row)."""

    def __init__(self, epsilon: float, seed: int = 0) -> None:
        self.epsilon = epsilon
        self.generator = torch.Generator().manual_seed(seed)

    def __call__(self, pixels: torch.Tensor) -> torch.Tensor:
        noise = torch.rand(pixels.shape, generator=self.generator).to(pixels) * 2 - 1
        return (pixels + self.epsilon * noise).clamp(0, 1)


def _share(mask: torch.Tensor) -> float:
    return round(float(mask.float().mean()), 4) if mask.numel() else float("nan")


def repair(model: PromptedCLIP, stamp: Stamp, target: int, train_pixels: torch.Tensor,
           train_labels: torch.Tensor, test_pixels: torch.Tensor, test_labels: torch.Tensor,
           ood_pixels: torch.Tensor, config: RepairConfig | None = None,
           invert_pixels: torch.Tensor | None = None, also: tuple[Stamp, ...] = ()) -> Iterator[RepairEvent]:
    """Fine-tune ``model``'s learner so that ``stamp``-ed images keep their true labels; yields events.

    ``stamp`` is the reconstructed trigger (pixels -> pixels), ``target`` the class it pointed to; ``also``:
    the class's triggers of other families, each triggered copy then stamped by one of them (drawn per view and
    image; the flip rate is still measured with ``stamp``).
    With ``config.refresh_every`` and OOD ``invert_pixels``, the trigger is re-inverted against the
    model being repaired every few epochs (from where it was), so that the repair also closes the routes
    to the target that the first trigger did not take; the train copies are then stamped anew.
    (A re-inversion refreshes ``stamp`` alone, and every triggered copy is then stamped with it.)
    Stopping early (no longer iterating) leaves the learner at the last finished step.
    """
    config = config or RepairConfig()
    started = time.time()
    torch.manual_seed(config.seed)
    n = len(train_labels)
    batch = min(config.batch_size, n)
    steps_per_epoch = max(1, n // batch)
    total = config.epochs * steps_per_epoch
    yield RepairStarted(total, target, config.as_dict())
    stamps = {"clean": None, "stamped": stamp, **{f"also{i}": other for i, other in enumerate(also)}}
    draws = draw_batches(n, config.views, config.epochs, config.seed)
    needed = views_needed(draws, batch, config.views, len(also), config.seed)
    encoded = []
    for view in iter_transformed_views(model.backbone, train_pixels, config.views, config.seed, stamps,
                                       needed=needed):
        encoded.append(view)
        yield RepairEncoding(len(encoded), config.views, n, round(time.time() - started, 2))
    features = stack_views(encoded)
    del encoded
    if also:
        features["stamped"] = mix_families(features, len(also), config.seed)
    labels = train_labels.to(features["clean"].device).long()
    probe = _Probe(model, stamp, target, test_pixels, test_labels, ood_pixels, config.eval_sample, config.seed)
    before = probe.measure(0, total)
    yield before
    anchor = anchor_log_probs(model, features["clean"]) if config.anchor else None
    params = [p for p in model.learner.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, total)
    model.learner.train()
    step = 0
    last = before
    current = stamp
    try:
        for epoch in range(config.epochs):
            if config.refresh_every and invert_pixels is not None and epoch and epoch % config.refresh_every == 0:
                current = reinvert(model, current, target, invert_pixels, config.refresh_steps, config.seed + epoch)
                features["stamped"] = encode_transformed_views(model.backbone, train_pixels, config.views,
                                                               config.seed, {"stamped": current})["stamped"]
                model.learner.train()
            order, view = draws[epoch]
            for start in range(0, n - batch + 1, batch):
                idx = order[start:start + batch]
                loss = repair_loss(model, features, labels, anchor, view[idx], idx, config, target)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                scheduler.step()
                step += 1
                yield RepairStep(step, total, round(loss.item(), 4))
                if step % config.eval_every == 0 or step == total:
                    last = probe.measure(step, total, sampled=step < total)
                    yield last
    finally:
        model.learner.eval()
    yield RepairFinished(before, last, round(time.time() - started, 2))


def draw_batches(n: int, views: int, epochs: int, seed: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Every epoch's image order and augmented view per image, drawn up front in the order the steps read them."""
    generator = torch.Generator().manual_seed(seed)
    return [(torch.randperm(n, generator=generator), torch.randint(0, views, (n,), generator=generator))
            for _ in range(epochs)]


def views_needed(draws: list[tuple[torch.Tensor, torch.Tensor]], batch: int, views: int, extra: int,
                 seed: int) -> dict[str, torch.Tensor]:
    """(V, N) masks of the (view, image) pairs some step reads, per stamp: a short repair draws few of an image's
    views, and each triggered copy comes from one family only, so the rest need never be encoded."""
    n = len(draws[0][0]) if draws else 0
    read = torch.zeros(views, n, dtype=torch.bool)
    for order, view in draws:
        idx = order[:(n // batch) * batch]  # the images of full batches: a last partial one is never a step
        read[view[idx], idx] = True
    choice = family_choice(views, n, extra, seed)
    return {"clean": read, "stamped": read & (choice == 0), **{f"also{i}": read & (choice == i + 1)
                                                               for i in range(extra)}}


def family_choice(views: int, n: int, extra: int, seed: int) -> torch.Tensor:
    """(V, N) which family stamps each triggered copy: 0 the class's trigger, i + 1 its ``also{i}``."""
    return torch.randint(0, 1 + extra, (views, n), generator=torch.Generator().manual_seed(seed))


def mix_families(features: dict[str, torch.Tensor], extra: int, seed: int) -> torch.Tensor:
    """(V, N, D) triggered features, each (view, image) taken from ``stamped`` or one of the ``extra`` other
    families' (``also0``, ...) as ``family_choice`` draws them; the other families' entries are removed."""
    stacked = torch.stack([features["stamped"], *(features.pop(f"also{i}") for i in range(extra))])
    choice = family_choice(stacked.shape[1], stacked.shape[2], extra, seed)
    views, images = torch.meshgrid(torch.arange(stacked.shape[1]), torch.arange(stacked.shape[2]), indexing="ij")
    return stacked[choice.to(stacked.device), views.to(stacked.device), images.to(stacked.device)]


def anchor_log_probs(model: PromptedCLIP, clean: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    """The delivered model's log-probabilities on every clean view, (views, n, classes), before any step."""
    model.learner.eval()
    with torch.no_grad():
        return torch.stack([torch.cat([model.logits_from_features(view[i:i + batch_size]).log_softmax(1)
                                       for i in range(0, len(view), batch_size)]) for view in clean])


def repair_loss(model: PromptedCLIP, features: dict[str, torch.Tensor], labels: torch.Tensor,
                anchor: torch.Tensor | None, views: torch.Tensor, idx: torch.Tensor,
                config: RepairConfig, target: int | None = None) -> torch.Tensor:
    """The stamped copies: their true labels, or with ``triggered_loss`` "suppress" only away from ``target``;
    the clean ones: labels and/or the delivered model's own answers.

    The two halves are averaged (one mean over the 2B copies, as with ``label_weight`` 1).
    """
    clean = features["clean"][views, idx]
    stamped = features["stamped"][views, idx] if config.triggered else features["clean"][views, idx]
    logits = model.logits_from_features(torch.cat([clean, stamped]))
    clean_logits, stamped_logits = logits[:len(idx)], logits[len(idx):]
    if config.triggered and config.triggered_loss == "suppress":
        if target is None:
            raise ValueError("the suppress loss needs the class the trigger points to (target)")
        loss = 0.5 * suppression_loss(stamped_logits, labels[idx], target)
    else:
        loss = 0.5 * F.cross_entropy(stamped_logits, labels[idx])
    if config.label_weight:
        loss = loss + 0.5 * config.label_weight * F.cross_entropy(clean_logits, labels[idx])
    if anchor is not None:
        loss = loss + config.anchor * F.kl_div(clean_logits.log_softmax(1), anchor[views, idx],
                                               log_target=True, reduction="batchmean")
    return loss


def suppression_loss(logits: torch.Tensor, labels: torch.Tensor, target: int) -> torch.Tensor:
    """-log(1 - p_target) on the copies whose true class is not ``target``, cross-entropy on those that are:
    the trigger must stop pointing to the target, and nothing else is asked of how it moves the image."""
    log_probs = logits.log_softmax(1)
    is_target = labels == target
    away = -torch.log1p(-log_probs[:, target].exp().clamp(max=1 - 1e-6))
    kept = F.nll_loss(log_probs, labels, reduction="none")
    return torch.where(is_target, kept, away).mean()


def reinvert(model: PromptedCLIP, stamp: Stamp, target: int, pixels: torch.Tensor, steps: int,
             seed: int, batch_size: int = 32) -> Stamp:
    """A few more inversion steps of ``stamp`` (a scan's candidate trigger) against the model as it is now."""
    from inspector.candidates import CandidateTrigger, candidate_from_tensors
    from inspector.invert import ClassInversion, Logits, frozen_learner

    if not isinstance(stamp, CandidateTrigger):
        return stamp
    epsilon = getattr(stamp, "epsilon", 0.0)
    family = getattr(stamp, "family", "additive")
    trigger = candidate_from_tensors(stamp.method, stamp.tensors(), epsilon, family).requires_grad_(True)
    trigger = trigger.to(model.backbone.device)
    arm = ClassInversion(target, model.class_names[target], trigger, stamp.method, lr=0.1)
    order = torch.randperm(len(pixels), generator=torch.Generator().manual_seed(seed))
    with frozen_learner(model):
        logits_of = Logits(model)
        for step in range(steps):
            idx = order[(step * batch_size) % len(pixels):][:batch_size]
            batch = pixels[idx].to(model.backbone.device)
            arm.step(logits_of, batch, torch.full((len(batch),), -1))
    return trigger.requires_grad_(False)


def run_repair(model: PromptedCLIP, stamp: Stamp, target: int, train_pixels: torch.Tensor,
               train_labels: torch.Tensor, test_pixels: torch.Tensor, test_labels: torch.Tensor,
               ood_pixels: torch.Tensor, config: RepairConfig | None = None,
               on_event: Callable[[RepairEvent], None] | None = None,
               invert_pixels: torch.Tensor | None = None, also: tuple[Stamp, ...] = ()) -> RepairFinished:
    """Drive ``repair`` to its end (CLI, benchmarks, tests)."""
    for event in repair(model, stamp, target, train_pixels, train_labels, test_pixels, test_labels, ood_pixels,
                        config, invert_pixels, also):
        if on_event is not None:
            on_event(event)
        if isinstance(event, RepairFinished):
            return event
    raise RuntimeError("repair ended without finishing")
