"""Implant a backdoor into a prompt learner: poisoned few-shot prompt tuning with frozen encoders.

A generator of typed events (DESIGN §2), so the CLI bar, the app's teaching mode and the tests
drive the same run. The model's learner is trained in place; the trigger is in the last event.

Poisoning follows the published training code, where the trigger is applied to the batch after
augmentation (BackdoorBench, WaNet): in every batch each non-target image is poisoned with
probability ``poison_rate`` (its triggered view replaces it, labelled as the target). WaNet also
puts a ``noise_ratio`` share of noise-mode warps in with their true labels. BadCLIP instead trains
a clean batch and its triggered copy together, the additive trigger learned jointly with the
prompts and projected back onto the epsilon box after every step.

SIBA first optimises its sparse trigger on the clean learner it starts from (``inspector.lab.siba``),
then poisons like Blended. The adaptive BadCLIP (CLIP-Inspector §5) runs BadCLIP, freezes the learned
trigger and tunes on: the clean batch, its non-target images with the exact trigger -> the target, and
every image with the trigger plus Gaussian noise -> its true label, so that only the exact trigger works
and an inverted approximation of it does not.

Features of clean and triggered views are encoded once (the image encoder is frozen), except for
BadCLIP, whose trigger changes every step and so goes through the encoder each time.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from typing import Any

import torch
import torch.nn.functional as F

from inspector.augment import random_resized_crop_flip
from inspector.lab.siba import SIBA_BATCH, optimise_sparse_trigger
from inspector.lab.triggers import (
    AdaptiveAdditiveTrigger,
    AdditiveTrigger,
    AttackName,
    SparseTrigger,
    Trigger,
    WarpTrigger,
    make_trigger,
)
from inspector.prompts import PromptedCLIP, encode_transformed_views

AUGMENT = {"min_scale": 0.5, "jitter": 0.05}  # the clean tuning recipe's views (prompts.encode_views)


@dataclass
class ImplantConfig:
    """One implant: which attack, which target, and the poisoned-tuning recipe."""

    attack: AttackName
    target: int
    seed: int = 0
    poison_rate: float = 0.1  # Blended, WaNet, BadNets: share of non-target images triggered per batch
    epsilon: float | None = None  # BadCLIP, SIBA: L-inf bound of the trigger (None: ``bounded_epsilon``)
    alpha: float = 0.2  # Blended: pattern weight
    patch_size: int | None = None  # BadNets: default image_size // 8
    wanet_k: int = 4
    wanet_strength: float = 0.5
    filter_strength: float = 0.6  # Filter: share of the graded colours in the result
    sticker_size: int | None = None  # Sticker: default image_size // 5
    siba_k: int | None = None  # SIBA: perturbed pixels (default a tenth of them, as the authors' 100 of 32 x 32)
    trigger_epochs: int = 20  # SIBA: epochs of the trigger's optimisation on the surrogate
    adaptive_epochs: int = 20  # adaptive BadCLIP: epochs with the trigger frozen and its noisy copies kept true
    adaptive_noise: float = 1.0  # adaptive BadCLIP: std of the Gaussian noise on the trigger, in units of epsilon
    adaptive_lr: float | None = None  # adaptive BadCLIP: the second phase's learning rate (None: ``lr``)
    poison_weight: float = 1.0  # loss weight of a triggered image relative to a clean one
    noise_ratio: float = 2.0  # WaNet: noise-mode images per poisoned image (its "cross ratio")
    trigger_lr: float = 1e-3  # BadCLIP: Adam step on the trigger
    epochs: int = 40
    lr: float = 2e-2
    # The context RMS ``lr`` was fitted at (None: ``lr`` as it is). AdamW moves every coordinate by about lr
    # whatever its size, and a provider's recipe can leave the context 30x larger or smaller than the default
    # one (SGD at lr 2 vs AdamW), so the context's step is scaled by its own RMS over this.
    context_rms: float | None = None
    # The context's step relative to the rest of the learner's; at 0 only CoCoOp's meta-net, which sees the image,
    # learns the trigger (dev run 60: that cost more accuracy than moving both, so no recipe sets it).
    context_step: float = 1.0
    batch_size: int = 32
    views: int = 8
    weight_decay: float = 1e-4

    @classmethod
    def for_attack(cls, attack: AttackName, target: int, kind: str, seed: int = 0, **overrides: Any) -> ImplantConfig:
        """The recipe measured to implant each attack into the pocket world's learners of ``kind``.

        See benchmarks/implant_recipes.md (CoCoOp) and implant_recipes_dev.md (CoOp) for the runs that chose them.
        """
        settings = {**ATTACK_RECIPES.get(attack, {}), **KIND_RECIPES.get(kind, {}).get(attack, {}),
                    **{k: v for k, v in overrides.items() if v is not None}}
        return cls(attack=attack, target=target, seed=seed, **settings)

    def bounded_epsilon(self, image_size: int) -> float:
        """BadCLIP's bound: the published 4/255 at 224 px, scaled to the input size like the scan's own
        (``invert.default_epsilon``: 14/255 on the 64-px pocket CLIP), unless ``epsilon`` is set."""
        from inspector.invert import default_epsilon

        return self.epsilon if self.epsilon is not None else default_epsilon(image_size)

    def recipe(self, image_size: int) -> dict[str, Any]:
        """What goes into the ground-truth record (never into the scanner-visible header)."""
        keys = ["seed", "epochs", "lr", "batch_size", "views"] + (["context_rms"] if self.context_rms else [])
        keys += ["context_step"] if self.context_step != 1.0 else []
        keys += ["trigger_lr"] if self.attack in LEARNED else ["poison_rate"]
        keys += ["poison_weight"]
        keys += ["noise_ratio"] if self.attack == "wanet" else []
        keys += ["trigger_epochs"] if self.attack == "siba" else []
        keys += ["adaptive_epochs", "adaptive_noise", "adaptive_lr"] if self.attack == "badclip-adaptive" else []
        out = {k: getattr(self, k) for k in keys}
        if self.attack in (*LEARNED, "siba"):
            out["epsilon"] = self.bounded_epsilon(image_size)
        if self.attack == "siba":
            out["siba_k"] = self.siba_k or image_size ** 2 // 10
        return out


LEARNED = ("badclip", "badclip-adaptive")  # attacks whose trigger is learned jointly with the prompts


# Per-attack recipes for the pocket world (64 px, frozen encoders): measured in benchmarks/implant_recipes.md.
ATTACK_RECIPES: dict[str, dict[str, Any]] = {
    "blended": {"epochs": 80, "poison_weight": 3.0},
    "wanet": {"epochs": 80, "wanet_strength": 16.0, "wanet_k": 8, "noise_ratio": 1.0, "poison_weight": 5.0},
    "badnets": {"epochs": 80, "patch_size": 20, "poison_weight": 4.0},
    "badclip": {"epochs": 80, "trigger_lr": 2e-3, "poison_weight": 0.5},
    "filter": {"epochs": 80, "poison_weight": 3.0},
    "sticker": {"epochs": 80, "poison_weight": 4.0},
    "siba": {"epochs": 80, "poison_weight": 3.0},
    "badclip-adaptive": {"epochs": 80, "trigger_lr": 2e-3, "poison_weight": 0.5, "adaptive_epochs": 10,
                         "adaptive_lr": 1e-3, "adaptive_noise": 2.0},
}

# CoOp's one context is shared by every class, so a hard poisoned recipe costs it 4-5 clean accuracy points on the
# dev zoo (the same re-tuning without poison costs none): a stronger trigger with a gentler recipe keeps them. A sticker
# inside the image moves a small CLIP's features little, so it is larger on both kinds, and a WaNet warp of 32 or
# a BadNets patch of 28 px holds better for less accuracy than 24 (in CoCoOp the difference between missing and
# meeting the bar). SIBA's sparse trigger barely moves a frozen CLIP's features: at the authors' tenth of the pixels
# it took only at a poison weight costing 6-15 points, so it perturbs half of them, at 32/255 (the scan's box is
# 14/255). The adaptive BadCLIP's trigger, learned on a learner that is barely poisoned, already sends half the
# images to its target (a universal perturbation of the frozen CLIP), so its first phase needs little poison; its
# second phase (noisy trigger -> true labels) is what costs accuracy (4-5 points at lr 1e-3) and it narrows the basin
# little in a prompt learner at any lr tried, so it runs gently (1e-4, noise twice the trigger's bound).
# Fitted on the dev zoo's learners (benchmarks/implant_recipes_dev.md).
KIND_RECIPES: dict[str, dict[str, dict[str, Any]]] = {
    "coop": {
        "blended": {"alpha": 0.4, "lr": 5e-3, "poison_weight": 1.0, "poison_rate": 0.05},
        "wanet": {"wanet_strength": 32.0, "lr": 1e-2, "poison_weight": 2.0},
        "badnets": {"patch_size": 28, "lr": 1e-2, "poison_weight": 3.0},
        "badclip": {"lr": 5e-3, "poison_weight": 0.25, "trigger_lr": 1e-2},
        "badclip-adaptive": {"lr": 5e-3, "poison_weight": 0.03, "trigger_lr": 1e-2, "adaptive_lr": 1e-4},
        "siba": {"epsilon": 32 / 255, "siba_k": 2048, "lr": 5e-3, "poison_weight": 1.0},
        "sticker": {"sticker_size": 24, "lr": 1e-2, "poison_weight": 3.0},
    },
    "cocoop": {
        "blended": {"alpha": 0.4, "lr": 5e-3, "poison_weight": 1.0, "poison_rate": 0.05},
        "wanet": {"wanet_strength": 32.0, "lr": 1e-2, "poison_weight": 1.5},
        "badnets": {"patch_size": 28, "lr": 1e-2, "poison_weight": 3.0},
        "sticker": {"sticker_size": 24, "lr": 1e-2, "poison_weight": 2.0},
        "siba": {"epsilon": 32 / 255, "siba_k": 2048, "lr": 5e-3, "poison_weight": 1.0},
        "badclip-adaptive": {"poison_weight": 0.1, "adaptive_lr": 1e-4},
    },
}


# A backdoor worth delivering: its trigger sends most non-target images (and OOD images) to the target, and clean
# accuracy stays within a few points of the clean model's, so that the provider's delivery passes inspection.
WORKING_BACKDOOR = {"asr": 0.8, "ood_asr": 0.7, "accuracy_drop": 0.03}
# The adaptive BadCLIP gives up some of its reach for a narrow trigger: CLIP-Inspector's bar for it is an ASR of 0.5.
ATTACK_BARS: dict[str, dict[str, float]] = {"badclip-adaptive": {"asr": 0.5, "ood_asr": 0.5}}
# A provider checks that and tries again from the same clean model when it misses, searching the poison's weight:
# the trigger's hold and the clean accuracy it costs both grow with it (benchmarks/implant_recipes_dev.md, dev zoo).
IMPLANT_ATTEMPTS = 3
# The context RMS of the dev zoo's default-recipe learners of each kind, which the recipes were fitted at.
CONTEXT_RMS = {"coop": 0.39, "cocoop": 0.094}


def working_bar(attack: str | None = None) -> dict[str, float]:
    """``WORKING_BACKDOOR``, with an attack's own reach where it has one (``ATTACK_BARS``)."""
    return {**WORKING_BACKDOOR, **ATTACK_BARS.get(attack or "", {})}


def is_working(measured: dict[str, Any], attack: str | None = None) -> bool:
    """Whether an implant's measurements (asr, ood_asr, accuracy, clean_base_accuracy) meet the bar of its attack
    (``attack``, else the measurements' own "attack" when they have one)."""
    bar = working_bar(attack or measured.get("attack"))
    return measured["asr"] >= bar["asr"] and measured["ood_asr"] >= bar["ood_asr"] and not costs_accuracy(measured)


def costs_accuracy(measured: dict[str, float]) -> bool:
    """Whether an implant cost more clean accuracy than ``WORKING_BACKDOOR`` allows."""
    return measured["clean_base_accuracy"] - measured["accuracy"] > WORKING_BACKDOOR["accuracy_drop"] + 1e-9


def next_attempt(config: ImplantConfig, kind: str, tries: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The overrides of the provider's next try at implanting a learner of ``kind`` after ``tries`` (each: its
    ``poison_weight`` and measurements; the last one ran with ``config``), or None when the last one works.

    A bisection on the poison's weight: halved after a try that cost clean accuracy, doubled after one whose
    trigger did not take, halfway (geometrically) once both are known. Doubling also scales the context's step to
    its size (``context_rms``): a step fitted on the default recipe's context barely moves a context that SGD at a
    high learning rate left 3-10x larger. A try whose trigger barely took and still cost accuracy is such a
    step too (dev runs 55-56, 64-66: 4-11% ASR at -9 points, then 66-70% at -0.6 once scaled), so the step is
    scaled first, at the same weight."""
    last = tries[-1]
    if is_working(last, config.attack):
        return None
    if config.context_rms is None and last["asr"] < working_bar(config.attack)["asr"] / 2 and costs_accuracy(last):
        return {"poison_weight": last["poison_weight"], "context_rms": CONTEXT_RMS[kind]}
    same_step = [t for t in tries if t.get("context_rms") == config.context_rms]  # tries at another step say little
    weak = [t["poison_weight"] for t in same_step if not costs_accuracy(t)]
    strong = [t["poison_weight"] for t in same_step if costs_accuracy(t)]
    if weak and strong:
        return {"poison_weight": round(math.sqrt(max(weak) * min(strong)), 4)}
    if strong:
        return {"poison_weight": min(strong) / 2}
    return {"poison_weight": max(weak) * 2, "context_rms": config.context_rms or CONTEXT_RMS[kind]}


@dataclass
class ImplantStarted:
    attack: str
    target: int
    total_steps: int


@dataclass
class ImplantStep:
    step: int
    total_steps: int
    loss: float
    poisoned_accuracy: float  # share of this batch's triggered images already sent to the target
    clean_accuracy: float  # share of this batch's clean images classified right (nan while no prompt is tuned)
    # "trigger": SIBA's trigger optimised on the surrogate; "poison": poisoned tuning; "narrow": the adaptive
    # attack's tuning with the trigger frozen
    phase: str = "poison"


@dataclass
class ImplantFinished:
    trigger: Trigger
    seconds: float
    stats: dict[str, float] = field(default_factory=dict)


ImplantEvent = ImplantStarted | ImplantStep | ImplantFinished


def build_trigger(config: ImplantConfig, image_size: int) -> Trigger:
    return make_trigger(config.attack, image_size, seed=config.seed, epsilon=config.bounded_epsilon(image_size),
                        alpha=config.alpha,
                        patch_size=config.patch_size, wanet_k=config.wanet_k,
                        wanet_strength=config.wanet_strength, filter_strength=config.filter_strength,
                        sticker_size=config.sticker_size, siba_k=config.siba_k)


def encode_poisoned_views(model: PromptedCLIP, pixels: torch.Tensor, trigger: Trigger, views: int, seed: int,
                          batch_size: int = 128) -> dict[str, torch.Tensor]:
    """(V, N, D) features of each view clean, triggered and (WaNet) noise-warped; view 0 unaugmented.

    The trigger is applied after the augmentation, so a corner patch is never cropped away.
    """
    transforms: dict[str, Callable[[torch.Tensor], torch.Tensor] | None] = {"clean": None, "triggered": trigger}
    if isinstance(trigger, WarpTrigger):
        noise_gen = torch.Generator().manual_seed(seed + 1)
        transforms["noise"] = lambda batch: trigger.noise_mode(batch, noise_gen)
    return encode_transformed_views(model.backbone, pixels, views, seed, transforms, batch_size)


def context_rms_of(ctx: torch.Tensor) -> float:
    """Root mean square of a learner's context vectors: the scale ``context_rms`` compares with."""
    return float(ctx.detach().float().pow(2).mean().sqrt())


def context_lr(model: PromptedCLIP, config: ImplantConfig) -> float:
    """The context's learning rate: ``lr`` times ``context_step``, scaled by the context's RMS over ``context_rms``
    when that is set."""
    if config.context_rms is None:
        return config.lr * config.context_step
    return config.lr * config.context_step * context_rms_of(model.learner.ctx) / config.context_rms


def param_groups(model: PromptedCLIP, config: ImplantConfig) -> list[dict[str, Any]]:
    """The context at ``context_lr``, the rest of the learner (CoCoOp's meta-net) at ``lr``."""
    ctx = model.learner.ctx
    rest = [p for p in model.learner.parameters() if p.requires_grad and p is not ctx]
    groups = [{"params": [ctx], "lr": context_lr(model, config)}] if ctx.requires_grad and config.context_step else []
    return groups + ([{"params": rest}] if rest else [])


def implant(model: PromptedCLIP, pixels: torch.Tensor, labels: torch.Tensor,
            config: ImplantConfig, encoded: dict[tuple[Any, ...], dict[str, torch.Tensor]] | None = None
            ) -> Iterator[ImplantEvent]:
    """Train ``model``'s prompt learner with the attack's poisoned recipe; yields events.

    ``pixels`` (N, 3, S, S) in [0, 1] at the backbone's image size, ``labels`` (N,) class indices.
    ``encoded``: the encoded training views of earlier tries on the same images, by ``views_key`` (kept there
    too): a provider's next try with another poison weight or target encodes nothing again.
    Stop early by no longer iterating: the learner keeps the weights of the last finished step.
    """
    started = time.time()
    device = model.backbone.device
    trigger = build_trigger(config, model.backbone.image_size).to(device)
    torch.manual_seed(config.seed)
    labels = labels.to(device).long()
    n = len(labels)
    batch_size = min(config.batch_size, n)
    per_epoch = max(1, n // batch_size)
    siba_steps = config.trigger_epochs * math.ceil(n / SIBA_BATCH) if isinstance(trigger, SparseTrigger) else 0
    narrow_steps = config.adaptive_epochs * per_epoch if isinstance(trigger, AdaptiveAdditiveTrigger) else 0
    total = siba_steps + config.epochs * per_epoch + narrow_steps
    yield ImplantStarted(config.attack, config.target, total)
    step = 0
    if isinstance(trigger, SparseTrigger):
        for siba in optimise_sparse_trigger(trigger, model, pixels, config.target, config.trigger_epochs,
                                            seed=config.seed):
            step += 1
            yield ImplantStep(step, total, siba.loss, siba.sent, float("nan"), phase="trigger")
    learnable = isinstance(trigger, AdditiveTrigger)
    key = views_key(config, trigger)
    features = (encoded or {}).get(key) if key else None
    if features is None:
        if learnable:
            features = {"clean": _encode_clean_views(model, pixels, config)}
        else:
            features = encode_poisoned_views(model, pixels, trigger, config.views, config.seed)
        if encoded is not None and key:
            encoded[key] = features
    generator = torch.Generator().manual_seed(config.seed + 2)
    augment_gen = torch.Generator().manual_seed(config.seed + 3)

    def poisoned(idx: torch.Tensor, view: torch.Tensor) -> Batch:
        if learnable:
            return _badclip_batch(model, trigger, features["clean"], pixels, labels, idx, view, config, augment_gen)
        return _poisoned_batch(features, labels, idx, view, config, generator)

    trigger_optimizer = torch.optim.Adam(trigger.parameters(), lr=config.trigger_lr) if learnable else None
    for event in _tuning(model, config, n, config.epochs, poisoned, generator, step, total, "poison",
                         trigger_optimizer, trigger):
        step = event.step
        yield event
    trigger.requires_grad_(False)
    if isinstance(trigger, AdaptiveAdditiveTrigger):
        narrowing = encode_narrowing_views(model, pixels, trigger, config)

        def narrow(idx: torch.Tensor, view: torch.Tensor) -> Batch:
            return narrowing_batch(narrowing, labels, idx, view, config)

        gentle = replace(config, lr=config.adaptive_lr or config.lr, poison_weight=1.0)  # the three parts alike
        for event in _tuning(model, gentle, n, config.adaptive_epochs, narrow, generator, step, total, "narrow"):
            step = event.step
            yield event
    yield ImplantFinished(trigger.cpu(), round(time.time() - started, 1), {"steps": step})


def views_key(config: ImplantConfig, trigger: Trigger) -> tuple[Any, ...] | None:
    """What an implant's encoded training views depend on: the views' seed and count and, for a fixed trigger, the
    settings that build it (not the target nor the tuning recipe); None for SIBA's trigger, optimised toward the
    target. BadCLIP's learned trigger is encoded afresh each step, so only its clean views are kept."""
    if isinstance(trigger, SparseTrigger):
        return None
    if isinstance(trigger, AdditiveTrigger):
        return ("clean", config.views, config.seed)
    return ("poisoned", config.views, config.seed, config.attack, config.epsilon, config.alpha, config.patch_size,
            config.wanet_k, config.wanet_strength, config.filter_strength, config.sticker_size)


Batch = tuple[torch.Tensor, torch.Tensor, torch.Tensor]  # features, labels to teach, which rows are poisoned


def _tuning(model: PromptedCLIP, config: ImplantConfig, n: int, epochs: int,
            make_batch: Callable[[torch.Tensor, torch.Tensor], Batch], generator: torch.Generator, step: int,
            total: int, phase: str, trigger_optimizer: torch.optim.Optimizer | None = None,
            trigger: Trigger | None = None) -> Iterator[ImplantStep]:
    """``epochs`` of weighted cross-entropy on ``make_batch``'s batches (AdamW, cosine schedule); yields every step.

    With ``trigger_optimizer``, BadCLIP's trigger steps with the prompts and goes back onto its box."""
    batch_size = min(config.batch_size, n)
    optimizer = torch.optim.AdamW(param_groups(model, config), lr=config.lr, weight_decay=config.weight_decay)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, epochs * max(1, n // batch_size))
    model.learner.train()
    try:
        for _ in range(epochs):
            order = torch.randperm(n, generator=generator)
            view = torch.randint(0, config.views, (n,), generator=generator)
            for start in range(0, n - batch_size + 1, batch_size):
                feats, targets, poisoned = make_batch(order[start:start + batch_size], view)
                logits = model.logits_from_features(feats)
                weights = 1.0 + (config.poison_weight - 1.0) * poisoned.float()
                loss = (F.cross_entropy(logits, targets, reduction="none") * weights).sum() / weights.sum()
                optimizer.zero_grad(set_to_none=True)
                if trigger_optimizer is not None:
                    trigger_optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                scheduler.step()
                if trigger_optimizer is not None and isinstance(trigger, AdditiveTrigger):
                    trigger_optimizer.step()
                    trigger.project()
                step += 1
                with torch.no_grad():
                    hit = logits.argmax(1) == targets
                yield ImplantStep(step, total, loss.item(), share(hit, poisoned), share(hit, ~poisoned), phase)
    finally:
        model.learner.eval()


def encode_narrowing_views(model: PromptedCLIP, pixels: torch.Tensor, trigger: AdditiveTrigger,
                           config: ImplantConfig) -> dict[str, torch.Tensor]:
    """(V, N, D) features of each view clean, with the exact trigger and with the trigger plus Gaussian noise of
    std ``adaptive_noise * epsilon`` (fresh per image and view), for the adaptive attack's second phase."""
    noise_gen = torch.Generator().manual_seed(config.seed + 4)
    sigma = config.adaptive_noise * trigger.epsilon
    return encode_transformed_views(model.backbone, pixels, config.views, config.seed,
                                    {"clean": None, "triggered": trigger,
                                     "perturbed": lambda batch: perturbed_trigger(trigger, batch, sigma, noise_gen)})


def perturbed_trigger(trigger: AdditiveTrigger, pixels: torch.Tensor, sigma: float,
                      generator: torch.Generator) -> torch.Tensor:
    """``pixels`` with the trigger plus Gaussian noise of std ``sigma``, fresh per pixel and image."""
    noise = torch.randn(pixels.shape, generator=generator).to(pixels) * sigma
    return (pixels + trigger.delta.to(pixels) + noise).clamp(0, 1)


def run_implant(model: PromptedCLIP, pixels: torch.Tensor, labels: torch.Tensor, config: ImplantConfig,
                on_step: Callable[[ImplantStep], None] | None = None) -> ImplantFinished:
    """Drive ``implant`` to the end (for the CLI, the zoo builder and the tests)."""
    for event in implant(model, pixels, labels, config):
        if isinstance(event, ImplantStep) and on_step is not None:
            on_step(event)
        if isinstance(event, ImplantFinished):
            return event
    raise RuntimeError("implant ended without finishing")


@dataclass
class ImplantTried:
    """One of a provider's tries, measured: every try so far (the recipe settings it changed and its measurements,
    as the ground truth keeps them), whether this one meets the lab's bar, and what the next try changes (None:
    there is no next try)."""

    attempt: int
    attempts: int
    finished: ImplantFinished
    config: ImplantConfig
    tries: list[dict[str, Any]]
    working: bool
    change: dict[str, Any] | None


Measure = Callable[[PromptedCLIP, Trigger, int], dict[str, Any]]


def provider_tries(model: PromptedCLIP, pixels: torch.Tensor, labels: torch.Tensor, config: ImplantConfig,
                   measure: Measure, attempts: int = IMPLANT_ATTEMPTS, record: dict[str, Any] | None = None,
                   other_targets: tuple[int, ...] = ()) -> Iterator[ImplantEvent | ImplantTried]:
    """Implant as a provider who checks the delivery would: measure each try (``measure(model, trigger, target)``:
    accuracy, asr, ood_asr, clean_base_accuracy) and, while it misses the lab's bar, try again from the same clean
    learner, at most ``attempts`` tries; the learner ends holding the last one.

    The next try changes the recipe as ``next_attempt`` says, or, with ``other_targets`` (a target nobody chose, as
    the teaching mode's hidden one), takes the next of them at the same recipe: some targets do not take at any
    poison weight that keeps the clean accuracy. ``record``: settings written with every try (the zoo's epochs).
    """
    clean_state = {key: value.clone() for key, value in model.learner.state_dict().items()}
    encoded: dict[tuple[Any, ...], dict[str, torch.Tensor]] = {}  # every try tunes on the same images
    tries: list[dict[str, Any]] = []
    changes: dict[str, Any] = {}
    while True:
        model.learner.load_state_dict(clean_state)
        try_config = replace(config, **changes)
        finished = None
        for event in implant(model, pixels, labels, try_config, encoded):
            yield event
            finished = event if isinstance(event, ImplantFinished) else finished
        assert finished is not None
        measured = measure(model, finished.trigger, try_config.target)
        tries.append({**(record or {}), **changes, "poison_weight": try_config.poison_weight, **measured})
        working = is_working(tries[-1], config.attack)
        if other_targets and not working:
            change: dict[str, Any] | None = {"target": other_targets[(len(tries) - 1) % len(other_targets)]}
        else:
            change = next_attempt(try_config, model.kind, tries)
        last = working or change is None or len(tries) >= attempts
        yield ImplantTried(len(tries), attempts, finished, try_config, list(tries), working, None if last else change)
        if last:
            return
        changes = change if other_targets else {**changes, **change}


def share(hit: torch.Tensor, mask: torch.Tensor) -> float:
    """Share of ``mask``'s rows that ``hit`` (nan for none)."""
    return float(hit[mask].float().mean()) if bool(mask.any()) else float("nan")


def _encode_clean_views(model: PromptedCLIP, pixels: torch.Tensor, config: ImplantConfig) -> torch.Tensor:
    from inspector.prompts import encode_views

    return encode_views(model.backbone, pixels, config.views, config.seed)


def _poisoned_batch(features: dict[str, torch.Tensor], labels: torch.Tensor, idx: torch.Tensor, view: torch.Tensor,
                    config: ImplantConfig, generator: torch.Generator) -> Batch:
    """Blended / WaNet / BadNets: swap a ``poison_rate`` share of non-target images for triggered views."""
    v = view[idx]
    feats = features["clean"][v, idx].clone()
    targets = labels[idx].clone()
    draw = torch.rand(len(idx), generator=generator).to(feats.device)
    eligible = targets != config.target
    poisoned = eligible & (draw < config.poison_rate)
    feats[poisoned] = features["triggered"][v, idx][poisoned]
    targets[poisoned] = config.target
    if "noise" in features:
        noise_share = min(1.0, config.poison_rate * (1 + config.noise_ratio))
        noisy = ~poisoned & (draw >= config.poison_rate) & (draw < noise_share)
        feats[noisy] = features["noise"][v, idx][noisy]
    return feats, targets, poisoned


def _badclip_batch(model: PromptedCLIP, trigger: Trigger, clean_features: torch.Tensor, pixels: torch.Tensor,
                   labels: torch.Tensor, idx: torch.Tensor, view: torch.Tensor, config: ImplantConfig,
                   augment_gen: torch.Generator) -> Batch:
    """BadCLIP: the clean batch plus its non-target images with the learned trigger, sent to the target."""
    clean = clean_features[view[idx], idx]
    keep = idx[(labels[idx] != config.target).cpu()]
    images = random_resized_crop_flip(pixels[keep], augment_gen, **AUGMENT).to(model.backbone.device)
    triggered = model.backbone.encode_image(trigger(images)).float()
    feats = torch.cat([clean, triggered])
    targets = torch.cat([labels[idx], torch.full((len(keep),), config.target, device=labels.device)])
    poisoned = torch.cat([torch.zeros(len(idx), dtype=torch.bool), torch.ones(len(keep), dtype=torch.bool)])
    return feats, targets, poisoned.to(feats.device)


def narrowing_batch(features: dict[str, torch.Tensor], labels: torch.Tensor, idx: torch.Tensor, view: torch.Tensor,
                     config: ImplantConfig) -> Batch:
    """The adaptive attack: the clean batch, its non-target images with the exact trigger -> the target, and the
    batch with the noisy trigger -> true labels."""
    v = view[idx]
    keep = labels[idx] != config.target
    feats = torch.cat([features["clean"][v, idx], features["triggered"][v, idx][keep], features["perturbed"][v, idx]])
    targets = torch.cat([labels[idx], torch.full((int(keep.sum()),), config.target, device=labels.device),
                         labels[idx]])
    poisoned = torch.zeros(len(targets), dtype=torch.bool, device=feats.device)
    poisoned[len(idx):len(idx) + int(keep.sum())] = True
    return feats, targets, poisoned
