"""A tiny backdoored model end to end: the scan finds its target, repair lowers its ASR, never the input file."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from inspector.data import load_shipped_pool
from inspector.invert import ScanConfig, run_scan, split_pool
from inspector.lab.implant import ImplantConfig, run_implant
from inspector.lab.truth import attack_success_rate
from inspector.prompts import load_learner
from inspector.repair import (
    NoiseStamp,
    RepairConfig,
    RepairEncoding,
    RepairFinished,
    RepairMeasured,
    RepairStarted,
    RepairStep,
    anchor_log_probs,
    reinvert,
    repair,
    repair_loss,
    suppression_loss,
)
from inspector.zoo import resolve_model

TARGET = 19  # clock
CANDIDATES = None  # every class: the anomaly index needs the whole set to compare against


@pytest.fixture(scope="module")
def backdoored(backbone, task):
    """clean-coop with a Blended backdoor to "clock" implanted in a short run (ASR ~0.9)."""
    model = load_learner(resolve_model("clean-coop"), backbone)
    config = ImplantConfig(attack="blended", target=TARGET, poison_rate=0.3, poison_weight=3.0, epochs=20, views=4)
    finished = run_implant(model, task.train_pixels, task.train_labels, config)
    return model, finished.trigger


@pytest.fixture(scope="module")
def pool():
    return load_shipped_pool().pixels


@pytest.fixture(scope="module")
def scanned(backdoored, pool):
    model, _ = backdoored
    config = ScanConfig(classes=CANDIDATES, pool_size=640)
    return config, run_scan(model, pool, config)


def test_the_implant_worked(backdoored, task):
    model, trigger = backdoored
    assert attack_success_rate(model, trigger, task.test_pixels, TARGET, task.test_labels) > 0.8


def test_scan_finds_the_target_of_a_tiny_implanted_model(scanned, backbone):
    _, result = scanned
    verdict = result.verdict
    assert verdict.flagged and verdict.target == TARGET
    rates = {c["index"]: c["flip_rate"] for c in result.classes}
    assert rates[TARGET] >= 0.5 and rates[TARGET] > max(v for k, v in rates.items() if k != TARGET)


def test_scan_does_not_flag_the_clean_model(backbone, pool):
    model = load_learner(resolve_model("clean-coop"), backbone)
    result = run_scan(model, pool, ScanConfig(classes=CANDIDATES, pool_size=640))
    assert not result.verdict.flagged


def test_repair_lowers_asr_and_keeps_accuracy(backdoored, scanned, task, pool):
    model, true_trigger = backdoored
    config, result = scanned
    stamp = result.trigger(TARGET)
    held = result.held_out(pool)
    asr_before = attack_success_rate(model, true_trigger, task.test_pixels, TARGET, task.test_labels)
    events = list(repair(model, stamp, TARGET, task.train_pixels, task.train_labels, task.test_pixels,
                         task.test_labels, held))
    views = RepairConfig().views
    assert isinstance(events[0], RepairStarted) and isinstance(events[views + 1], RepairMeasured)
    encoding = events[1:views + 1]  # progress while the views are encoded, before the first measurement
    assert all(isinstance(e, RepairEncoding) for e in encoding)
    assert [(e.view, e.views, e.images) for e in encoding] == [(v, views, len(task.train_labels))
                                                              for v in range(1, views + 1)]
    assert isinstance(events[-1], RepairFinished)
    steps = [e.step for e in events if isinstance(e, RepairStep)]
    assert steps == list(range(1, events[0].total_steps + 1))
    finished = events[-1]
    measured = [e for e in events if isinstance(e, RepairMeasured)]  # the ends on every image, the rest a sample
    everything = (len(task.test_labels), len(held))
    assert measured[0] is finished.before and measured[-1] is finished.after and len(measured) >= 3
    assert [(m.test_images, m.ood_images) for m in (measured[0], measured[-1])] == [everything] * 2
    sample = RepairConfig().eval_sample
    assert all((m.test_images, m.ood_images) == (min(sample, everything[0]), min(sample, everything[1]))
               for m in measured[1:-1])
    assert finished.after.flip_rate < finished.before.flip_rate / 2
    asr_after = attack_success_rate(model, true_trigger, task.test_pixels, TARGET, task.test_labels)
    assert asr_after < asr_before / 2
    assert finished.after.accuracy > finished.before.accuracy - 0.05


def test_reinversion_moves_the_trigger_inside_its_box_and_leaves_the_model_alone(backdoored, scanned, pool):
    model, _ = backdoored
    _, result = scanned
    settings = result.settings
    stamp = result.trigger(TARGET)
    fit, _ = split_pool(pool, settings.pool_size, settings.holdout, settings.seed)
    state = {k: v.clone() for k, v in model.learner.state_dict().items()}
    flags = [p.requires_grad for p in model.learner.parameters()]
    moved = reinvert(model, stamp, TARGET, fit, steps=3, seed=0)
    again = reinvert(model, stamp, TARGET, fit, steps=3, seed=0)
    assert not torch.equal(moved.delta, stamp.delta) and torch.equal(moved.delta, again.delta)
    assert float(moved.delta.abs().max()) <= settings.epsilon + 1e-6
    assert all(torch.equal(v, state[k]) for k, v in model.learner.state_dict().items())
    assert [p.requires_grad for p in model.learner.parameters()] == flags


def _features(model, n: int = 6, views: int = 2, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random unit-norm image features shaped like ``encode_transformed_views``' output."""
    generator = torch.Generator().manual_seed(seed)
    dim = model.image_features(torch.zeros(1, 3, 64, 64)).shape[-1]
    return {key: F.normalize(torch.randn(views, n, dim, generator=generator), dim=-1) for key in ("clean", "stamped")}


def test_labels_loss_is_the_mean_over_clean_and_stamped_copies(backbone):
    model = load_learner(resolve_model("clean-coop"), backbone)
    features, labels = _features(model), torch.tensor([0, 1, 2, 3, 4, 5])
    views, idx = torch.tensor([0, 1, 1, 0]), torch.tensor([5, 0, 2, 3])
    loss = repair_loss(model, features, labels, None, views, idx, RepairConfig(triggered_loss="labels"))
    both = torch.cat([features["clean"][views, idx], features["stamped"][views, idx]])
    expected = F.cross_entropy(model.logits_from_features(both), torch.cat([labels[idx], labels[idx]]))
    assert torch.allclose(loss, expected, atol=1e-6)


def test_anchor_is_zero_at_the_delivered_model_and_the_control_ignores_the_trigger(backbone):
    model = load_learner(resolve_model("clean-coop"), backbone)
    features, labels = _features(model), torch.tensor([0, 1, 2, 3, 4, 5])
    views, idx = torch.tensor([0, 1, 1, 0]), torch.tensor([5, 0, 2, 3])
    anchor = anchor_log_probs(model, features["clean"])
    anchored = repair_loss(model, features, labels, anchor, views, idx, RepairConfig(label_weight=0.0, anchor=1.0,
                                                                                       triggered_loss="labels"))
    stamped_only = 0.5 * F.cross_entropy(model.logits_from_features(features["stamped"][views, idx]), labels[idx])
    assert torch.allclose(anchored, stamped_only, atol=1e-5)  # the KL term starts at 0
    moved = {"clean": features["clean"], "stamped": features["stamped"].flip(0)}
    control = RepairConfig(triggered=False)
    assert torch.equal(repair_loss(model, features, labels, None, views, idx, control),
                       repair_loss(model, moved, labels, None, views, idx, control))
    assert not torch.equal(repair_loss(model, features, labels, None, views, idx, RepairConfig(), 2),
                           repair_loss(model, moved, labels, None, views, idx, RepairConfig(), 2))


def test_suppression_pushes_only_the_target_down_and_keeps_the_target_class_labelled():
    """``triggered_loss="suppress"``: -log(1 - p_target) on non-target copies, whatever else they are called;
    the target's own copies keep their cross-entropy."""
    target = 2
    logits = torch.log(torch.tensor([[0.5, 0.25, 0.25], [0.1, 0.1, 0.8], [0.2, 0.2, 0.6]]))
    labels = torch.tensor([0, 1, 2])
    expected = (-torch.log(torch.tensor(0.75)) - torch.log(torch.tensor(0.2)) - torch.log(torch.tensor(0.6))) / 3
    assert torch.allclose(suppression_loss(logits, labels, target), expected, atol=1e-6)
    other_class = torch.log(torch.tensor([[0.05, 0.7, 0.25], [0.1, 0.1, 0.8], [0.2, 0.2, 0.6]]))
    assert torch.allclose(suppression_loss(other_class, labels, target), expected, atol=1e-6)  # only p_target counts
    sure = torch.log(torch.tensor([[1e-9, 1e-9, 1.0 - 2e-9]]))
    assert torch.isfinite(suppression_loss(sure, torch.tensor([0]), target))


def test_noise_stamp_stays_in_its_box_and_draws_anew_for_every_copy():
    """The repair ablation's random-noise control: within ±epsilon (and the pixel range), a fresh draw per call,
    reproducible from its seed."""
    pixels = torch.full((4, 3, 8, 8), 0.5)
    pixels[0] = 0.99  # near the top of the range: the stamp clamps
    stamp = NoiseStamp(8 / 255, seed=3)
    first, second = stamp(pixels), stamp(pixels)
    assert (first - pixels).abs().max() <= 8 / 255 + 1e-6 and first.max() <= 1.0
    assert (first - pixels)[1:].abs().mean() > 8 / 255 / 4  # uniform noise: mean |delta| is epsilon / 2
    assert not torch.equal(first, second)
    assert torch.equal(NoiseStamp(8 / 255, seed=3)(pixels), first)


def test_suppress_recipe_changes_only_the_stamped_half_of_the_loss(backbone):
    model = load_learner(resolve_model("clean-coop"), backbone)
    features, labels = _features(model), torch.tensor([0, 1, 2, 3, 4, 5])
    views, idx = torch.tensor([0, 1, 1, 0]), torch.tensor([5, 0, 2, 3])
    target = 2
    loss = repair_loss(model, features, labels, None, views, idx, RepairConfig(triggered_loss="suppress"), target)
    clean = model.logits_from_features(features["clean"][views, idx])
    stamped = model.logits_from_features(features["stamped"][views, idx])
    expected = 0.5 * F.cross_entropy(clean, labels[idx]) + 0.5 * suppression_loss(stamped, labels[idx], target)
    assert torch.allclose(loss, expected, atol=1e-6)
    labelled = RepairConfig(triggered_loss="labels")
    assert not torch.allclose(loss, repair_loss(model, features, labels, None, views, idx, labelled, target))


def test_both_families_stamp_each_copy_with_one_of_the_class_triggers(backdoored, scanned, task, pool):
    """``families="both"``: the class's colour trigger joins its additive one; the triggered copies are drawn
    from both (seeded), the flip rate is measured with the indexed one, and the repair still runs to its end."""
    from dataclasses import replace

    from inspector.candidates import ColourInversion
    from inspector.repair import mix_families

    features = {"stamped": torch.zeros(4, 50, 3), "also0": torch.ones(4, 50, 3)}
    mixed = mix_families(dict(features), 1, seed=0)
    assert mixed.shape == (4, 50, 3) and set(mixed.unique().tolist()) == {0.0, 1.0}
    assert 0.3 < mixed[..., 0].mean() < 0.7 and torch.equal(mixed, mix_families(dict(features), 1, seed=0))
    assert (mixed == mixed[..., :1]).all()  # a copy is one family's features, not a blend

    _, result = scanned
    assert result.repair_triggers(TARGET)[1] == () and result.repair_triggers(TARGET, "both")[1] == ()
    tint = ColourInversion(unit=torch.full((12,), 0.5))
    with_colour = replace(result, triggers={**result.triggers,
                                            TARGET: {**result.triggers[TARGET], **tint.tensors()}})
    stamp, also = with_colour.repair_triggers(TARGET, "both")
    assert stamp.family == "additive" and [t.family for t in also] == ["colour"]
    assert with_colour.repair_triggers(TARGET)[1] == ()  # asked for nothing else: the indexed family alone
    model, _ = backdoored
    copy = load_learner(resolve_model("clean-coop"), model.backbone)
    copy.learner.load_state_dict(model.learner.state_dict())
    events = list(repair(copy, stamp, TARGET, task.train_pixels[:64], task.train_labels[:64], task.test_pixels[:64],
                         task.test_labels[:64], result.held_out(pool)[:64], RepairConfig(epochs=1, views=2),
                         also=also))
    assert isinstance(events[-1], RepairFinished)


def test_repair_candidates_weaken_a_colour_trigger_or_take_the_additive_one():
    """``colour_scale`` moves a colour trigger toward the identity (0: the clean image itself); ``families``
    "additive" repairs with the class's additive trigger though the colour family gave its index, and keeps the
    colour one when the scan reconstructed no other."""
    from inspector.candidates import ColourInversion, repair_candidates

    colour = ColourInversion(unit=torch.full((12,), 0.8)).tensors()
    tensors = {"delta": torch.full((1, 3, 8, 8), 0.01), **colour}
    pixels = torch.rand(2, 3, 8, 8)
    full, _ = repair_candidates("inspector", tensors, 4 / 255, "colour")
    half, _ = repair_candidates("inspector", tensors, 4 / 255, "colour", colour_scale=0.5)
    none, _ = repair_candidates("inspector", tensors, 4 / 255, "colour", colour_scale=0.0)
    assert full.family == half.family == "colour" and torch.allclose(half.unit, torch.full((12,), 0.4))
    assert torch.equal(none(pixels), pixels) and not torch.allclose(full(pixels), pixels)
    additive, also = repair_candidates("inspector", tensors, 4 / 255, "colour", "additive")
    assert additive.family == "additive" and also == ()
    assert torch.allclose(additive(pixels), (pixels + 0.01).clamp(0, 1))
    assert repair_candidates("inspector", colour, 4 / 255, "colour", "additive")[0].family == "colour"
    assert repair_candidates("inspector", tensors, 4 / 255, "additive", colour_scale=0.5)[0].family == "additive"


def test_repair_encodes_only_the_views_its_steps_read(backdoored, scanned, task, pool, monkeypatch):
    """A short repair reads few of each image's augmented views, and each triggered copy from one family: the
    rest are not encoded, and the repaired learner is the one that encoding every view gives."""
    import copy

    import inspector.repair as repair_module
    from inspector.prompts import PromptedCLIP

    model, _ = backdoored
    _, result = scanned
    stamp, darker = result.trigger(TARGET), lambda pixels: (pixels * 0.8).clamp(0, 1)
    config = RepairConfig(epochs=2, views=4, eval_every=1000)
    n = len(task.train_labels)
    needed = repair_module.views_needed(repair_module.draw_batches(n, config.views, config.epochs, config.seed),
                                        config.batch_size, config.views, 1, config.seed)
    assert 0.2 < float(needed["clean"].float().mean()) < 0.8  # two draws per image out of four views
    assert torch.equal(needed["stamped"] | needed["also0"], needed["clean"])
    assert not (needed["stamped"] & needed["also0"]).any()

    def repaired() -> tuple[PromptedCLIP, list[float]]:
        copied = PromptedCLIP(model.backbone, copy.deepcopy(model.learner))
        events = list(repair(copied, stamp, TARGET, task.train_pixels, task.train_labels, task.test_pixels[:64],
                             task.test_labels[:64], result.held_out(pool)[:64], config, also=(darker,)))
        return copied, [e.loss for e in events if isinstance(e, RepairStep)]

    lazy, lazy_losses = repaired()
    every = {name: torch.ones_like(mask) for name, mask in needed.items()}
    monkeypatch.setattr(repair_module, "views_needed", lambda *args: every)
    full, full_losses = repaired()
    assert len(lazy_losses) == 2 * (n // config.batch_size) and all(loss == loss for loss in lazy_losses)  # no NaN
    assert lazy_losses == pytest.approx(full_losses, abs=1e-4)
    for a, b in zip(lazy.learner.parameters(), full.learner.parameters(), strict=True):
        assert torch.allclose(a, b, atol=1e-5)
