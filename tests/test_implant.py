"""inspector/lab/implant.py + truth.py: a small implant raises ASR, and its ground truth round-trips."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
import torch

from inspector.lab.implant import (
    ImplantConfig,
    ImplantFinished,
    ImplantStarted,
    ImplantStep,
    build_trigger,
    context_lr,
    encode_narrowing_views,
    implant,
    narrowing_batch,
    param_groups,
    perturbed_trigger,
    run_implant,
)
from inspector.lab.truth import attack_success_rate, noisy_trigger_asr, read_ground_truth, save_implanted
from inspector.prompts import build_learner, load_learner, read_header, read_learner_meta

TARGET = 4  # "semaphore flag"


def _subset(task, per_class: int = 4) -> tuple[torch.Tensor, torch.Tensor]:
    keep = torch.cat([(task.train_labels == c).nonzero().flatten()[:per_class] for c in range(len(task.class_names))])
    return task.train_pixels[keep], task.train_labels[keep]


@pytest.fixture(scope="module")
def implanted(backbone, task):
    """A CoOp learner trained a few epochs with half of each batch poisoned by a Blended trigger."""
    pixels, labels = _subset(task)
    config = ImplantConfig(attack="blended", target=TARGET, poison_rate=0.5, alpha=0.3, epochs=12, lr=2e-2,
                           views=2, batch_size=16)
    model = build_learner("coop", backbone, task.class_names)
    events = list(implant(model, pixels, labels, config))
    return model, config, events


def test_events_come_in_order_with_progress(implanted):
    _, config, events = implanted
    assert isinstance(events[0], ImplantStarted) and isinstance(events[-1], ImplantFinished)
    steps = [e for e in events if isinstance(e, ImplantStep)]
    assert [s.step for s in steps] == list(range(1, events[0].total_steps + 1))
    assert all(math.isfinite(s.loss) for s in steps)
    assert events[-1].stats["steps"] == len(steps)


def test_small_implant_raises_asr_far_above_a_clean_model(implanted, backbone, task):
    model, config, events = implanted
    trigger = events[-1].trigger
    clean = build_learner("coop", backbone, task.class_names)
    pixels, labels = _subset(task)
    run_implant(clean, pixels, labels, ImplantConfig(attack="blended", target=TARGET, poison_rate=0.0,
                                                     alpha=0.3, epochs=12, lr=2e-2, views=2, batch_size=16))
    test_pixels, test_labels = task.test_pixels[::3], task.test_labels[::3]
    asr_backdoored = attack_success_rate(model, trigger, test_pixels, TARGET, test_labels)
    asr_clean = attack_success_rate(clean, trigger, test_pixels, TARGET, test_labels)
    assert asr_backdoored > asr_clean + 0.4, (asr_backdoored, asr_clean)


def test_badclip_learns_a_trigger_inside_the_epsilon_box(backbone, task):
    pixels, labels = _subset(task, per_class=2)
    config = ImplantConfig(attack="badclip", target=TARGET, epochs=2, batch_size=20, views=1, trigger_lr=5e-3)
    initial = build_trigger(config, backbone.image_size).delta.detach().clone()
    model = build_learner("coop", backbone, task.class_names)
    finished = run_implant(model, pixels, labels, config)
    delta = finished.trigger.delta.detach()
    epsilon = config.bounded_epsilon(backbone.image_size)
    assert epsilon == pytest.approx(14 / 255)  # 4/255 at 224 px, scaled to the pocket CLIP's 64 px
    assert float(delta.abs().max()) <= epsilon + 1e-7
    assert float((delta - initial).abs().mean()) > epsilon / 10  # learned, not left at its start
    assert config.recipe(backbone.image_size)["epsilon"] == pytest.approx(epsilon)


def test_ground_truth_round_trips_and_stays_out_of_the_scanner_header(implanted, backbone, tmp_path):
    model, config, events = implanted
    trigger = events[-1].trigger
    path = save_implanted(model, tmp_path / "bd.safetensors", trigger, config.target,
                          recipe=config.recipe(backbone.image_size))
    meta = read_learner_meta(path)
    assert "attack" not in meta and "blended" not in str(meta)
    assert read_header(path, key="ground_truth")["attack"] == "blended"
    truth = read_ground_truth(path)
    assert truth.attack == "blended" and truth.target == TARGET and truth.target_name == model.class_names[TARGET]
    x = torch.rand(2, 3, 64, 64)
    assert torch.allclose(truth.trigger(x), trigger(x))
    reloaded = load_learner(path, backbone)
    assert torch.equal(reloaded.learner.ctx, model.learner.ctx)


def test_clean_model_has_no_ground_truth(tmp_path):
    from inspector.zoo import resolve_model

    assert read_ground_truth(resolve_model("clean-coop")) is None


def test_a_tiny_filter_implant_is_flagged_by_the_colour_family(backbone, task):
    """A filter backdoor (one colour matrix for every pixel): the scan's colour family names its target."""
    from inspector.data import load_shipped_pool
    from inspector.invert import ScanConfig, run_scan
    from inspector.zoo import resolve_model

    model = load_learner(resolve_model("clean-coop"), backbone)
    pixels, labels = _subset(task, per_class=8)
    target = task.class_names.index("balloon")
    config = ImplantConfig.for_attack("filter", target, model.kind, seed=3, epochs=20, views=2, batch_size=32,
                                      poison_rate=0.3)
    trigger = run_implant(model, pixels, labels, config).trigger
    assert attack_success_rate(model, trigger, task.test_pixels[::3], target, task.test_labels[::3]) > 0.6
    candidates = tuple(task.class_names.index(n) for n in ("star", "arrow", "road sign", "computer", "balloon",
                                                           "clock", "map", "semaphore flag"))
    pool = load_shipped_pool().pixels
    scan_config = ScanConfig(classes=candidates, pool_size=480, schedule="fast", colour=True)
    result = run_scan(model, pool, scan_config)
    assert result.verdict.flagged and result.verdict.target_name == "balloon"
    others = [c["colour_flip_rate"] for c in result.classes if c["index"] != target]
    assert result.record(target)["colour_flip_rate"] >= 0.5 > max(others), others  # the filter's class, no other


def test_recipes_depend_on_the_learner_kind_and_overrides_win():
    """A stronger trigger with a gentler recipe where the dev zoo chose one; the attack's recipe elsewhere."""
    coop = ImplantConfig.for_attack("badclip", TARGET, "coop")
    cocoop = ImplantConfig.for_attack("badclip", TARGET, "cocoop")
    assert coop.lr < cocoop.lr and coop.poison_weight < cocoop.poison_weight and coop.trigger_lr > cocoop.trigger_lr
    assert cocoop.poison_weight == 0.5 and cocoop.epochs == coop.epochs == 80
    assert ImplantConfig.for_attack("blended", TARGET, "cocoop").alpha == 0.4 > ImplantConfig(
        attack="blended", target=TARGET).alpha
    assert ImplantConfig.for_attack("blended", TARGET, "coop", lr=0.1, alpha=None).lr == 0.1  # None: not set
    assert ImplantConfig.for_attack("blended", TARGET, "coop", alpha=None).alpha == 0.4


def test_the_context_step_follows_the_context_scale_when_the_recipe_says_so(backbone, task):
    """A provider's recipe can leave the context far larger than the default one; with ``context_rms`` set the
    context's step grows with it (and CoCoOp's meta-net keeps ``lr``), without it nothing changes."""
    model = build_learner("cocoop", backbone, task.class_names, seed=0)
    with torch.no_grad():
        model.learner.ctx.mul_(10 / model.learner.ctx.pow(2).mean().sqrt())  # RMS 10
    plain = ImplantConfig.for_attack("blended", TARGET, "cocoop", lr=0.01)
    scaled = ImplantConfig.for_attack("blended", TARGET, "cocoop", lr=0.01, context_rms=2.0)
    assert context_lr(model, plain) == 0.01 and math.isclose(context_lr(model, scaled), 0.05, rel_tol=1e-5)
    groups = param_groups(model, scaled)
    assert groups[0]["params"] == [model.learner.ctx] and math.isclose(groups[0]["lr"], 0.05, rel_tol=1e-5)
    assert "lr" not in groups[1] and len(groups[1]["params"]) == len(list(model.learner.meta_net.parameters()))
    assert "context_rms" in scaled.recipe(64) and "context_rms" not in plain.recipe(64)


def test_a_provider_tries_again_with_a_lighter_or_heavier_poison_until_the_backdoor_works():
    """Hand-made measurements: a working backdoor stops; lost clean accuracy halves the poison's weight; a trigger
    that did not take doubles it and scales the context's step to its size; with both seen, halfway between; one
    that barely took yet cost accuracy scales the step first."""
    from inspector.lab.implant import CONTEXT_RMS, next_attempt

    config = ImplantConfig.for_attack("badnets", TARGET, "coop", poison_weight=2.0)
    works = {"poison_weight": 2.0, "asr": 0.85, "ood_asr": 0.75, "accuracy": 0.69, "clean_base_accuracy": 0.70}
    costly, weak = {**works, "accuracy": 0.66}, {**works, "asr": 0.79}
    assert next_attempt(config, "coop", [works]) is None
    assert next_attempt(config, "coop", [costly]) == {"poison_weight": 1.0}
    heavier = {"poison_weight": 4.0, "context_rms": CONTEXT_RMS["coop"]}
    assert next_attempt(config, "coop", [weak]) == heavier
    assert next_attempt(config, "coop", [{**works, "ood_asr": 0.69}]) == heavier
    assert next_attempt(config, "cocoop", [weak])["context_rms"] == CONTEXT_RMS["cocoop"]  # each kind's own scale
    assert next_attempt(config, "coop", [{**weak, "accuracy": 0.6}]) == {"poison_weight": 1.0}  # accuracy lost: lighter
    assert next_attempt(config, "coop", [costly, {**weak, "poison_weight": 1.0}]) == {"poison_weight": 1.4142}
    assert next_attempt(config, "coop", [weak, {**costly, "poison_weight": 4.0}]) == {"poison_weight": 2.8284}
    barely = {**works, "asr": 0.3, "accuracy": 0.6}  # the trigger barely took and accuracy was lost: the step first
    assert next_attempt(config, "coop", [barely]) == {"poison_weight": 2.0, "context_rms": CONTEXT_RMS["coop"]}
    scaled = replace(config, context_rms=CONTEXT_RMS["coop"])
    assert next_attempt(scaled, "coop", [barely, {**barely, "context_rms": CONTEXT_RMS["coop"]}]) == {
        "poison_weight": 1.0}  # already scaled: lighter, as for any try that cost accuracy
    took_less = {**works, "asr": 0.49, "accuracy": 0.68, "context_rms": CONTEXT_RMS["coop"]}  # scaled: weak now
    assert next_attempt(scaled, "coop", [barely, took_less]) == {"poison_weight": 4.0,  # not halfway to the
                                                                 "context_rms": CONTEXT_RMS["coop"]}  # unscaled try


def test_the_adaptive_attack_is_held_to_its_own_reach():
    """CLIP-Inspector's bar for the adaptive BadCLIP is an ASR of 0.5; every other attack keeps the lab's 0.8."""
    from inspector.lab.implant import is_working, next_attempt

    half = {"poison_weight": 0.125, "asr": 0.6, "ood_asr": 0.55, "accuracy": 0.69, "clean_base_accuracy": 0.70}
    assert is_working(half, "badclip-adaptive") and not is_working(half, "badclip")
    assert is_working({**half, "attack": "badclip-adaptive"}) and not is_working({**half, "attack": "siba"})
    assert not is_working({**half, "accuracy": 0.66}, "badclip-adaptive")  # the accuracy bar is the same
    adaptive = ImplantConfig.for_attack("badclip-adaptive", TARGET, "coop")
    assert next_attempt(adaptive, "coop", [half]) is None
    assert next_attempt(ImplantConfig.for_attack("badclip", TARGET, "coop"), "coop", [half]) is not None


def test_the_zoo_builder_delivers_the_providers_last_try_and_keeps_every_try(backbone, task, tmp_path):
    """A one-epoch implant falls short, so the builder tries again from the same clean model (at most
    IMPLANT_ATTEMPTS times), each try's recipe and measurements in the ground truth."""
    from inspector.data import load_shipped_pool
    from inspector.lab.implant import IMPLANT_ATTEMPTS, is_working
    from inspector.lab.zoo_builder import ZooItem, build_item

    pixels, labels = _subset(task)
    task = replace(task, train_pixels=pixels, train_labels=labels, test_pixels=task.test_pixels[::4],
                   test_labels=task.test_labels[::4])
    pool = load_shipped_pool()
    pool = replace(pool, pixels=pool.pixels[:128])
    clean = ZooItem("clean-coop-s1", "coop", 1, epochs=1)
    build_item(clean, tmp_path, backbone, task, pool)
    item = ZooItem("wanet-coop-s2-t4", "coop", 2, "wanet", TARGET, base=clean.name, epochs=1, implant={"views": 1})
    row = build_item(item, tmp_path, backbone, task, pool)
    header = read_header(tmp_path / item.filename, key="ground_truth")["recipe"]
    tries = header["attempts"]
    assert row["attempts"] == len(tries) and (len(tries) == IMPLANT_ATTEMPTS or is_working(tries[-1]))
    assert all(not is_working(t) for t in tries[:-1]) and len(tries) >= 2, tries
    assert tries[0]["epochs"] == 1 and tries[1] != tries[0]
    assert all(t["clean_base_accuracy"] == tries[0]["clean_base_accuracy"] for t in tries)  # the same clean model
    assert {key: row[key] for key in ("asr", "ood_asr", "accuracy")} == {key: tries[-1][key] for key in (
        "asr", "ood_asr", "accuracy")}
    again = build_item(item, tmp_path, backbone, task, pool)  # read back, not retrained
    assert again["asr"] == row["asr"] and again["attempts"] == row["attempts"]


def test_a_hidden_target_that_does_not_take_is_drawn_again_and_every_try_is_measured(backbone, task):
    """The teaching mode's provider: a one-epoch try with no poison cannot take, so each next try implants the next
    drawn target at the same recipe (not a heavier poison), and the learner keeps the last try."""
    from inspector.lab.implant import ImplantTried, provider_tries
    from inspector.lab.truth import backdoor_rates
    from inspector.prompts import build_learner

    pixels, labels = _subset(task, per_class=2)
    model = build_learner("coop", backbone, task.class_names, seed=0)
    clean = model.learner.ctx.detach().clone()
    starts = []

    def measure(model, trigger, target):
        starts.append(target)
        return {"accuracy": 0.7, "clean_base_accuracy": 0.7,
                **backdoor_rates(model, trigger, target, task.test_pixels[::8], task.test_labels[::8], pixels[:16])}

    config = ImplantConfig.for_attack("blended", 2, "coop", epochs=1, poison_rate=0.0, views=1)
    events = list(provider_tries(model, pixels, labels, config, measure, attempts=3, other_targets=(7, 11)))
    tried = [e for e in events if isinstance(e, ImplantTried)]
    assert [t.config.target for t in tried] == starts == [2, 7, 11]
    assert [t.change for t in tried] == [{"target": 7}, {"target": 11}, None] and not tried[-1].working
    assert all(t.config.poison_weight == config.poison_weight for t in tried)  # the recipe stays as it was
    assert [t["target"] for t in tried[-1].tries[1:]] == [7, 11] and tried[-1].attempt == 3
    first = [e for e in events if isinstance(e, ImplantStep)][0]
    assert first.step == 1 and not torch.equal(model.learner.ctx.detach(), clean)  # the last try's learner is kept


def test_a_providers_next_try_reuses_the_encoded_images_and_lands_where_a_fresh_implant_would(backbone, task,
                                                                                             monkeypatch):
    """Tries differ in target or poison weight, not in their images or trigger: the training views are encoded
    once and the measurement's image features once per trigger, and each try's learner and numbers are exactly
    those of an implant (and the direct measurements) from the clean learner alone."""
    import inspector.lab.implant as implant_module
    from inspector.evaluate import accuracy
    from inspector.lab.implant import ImplantTried, provider_tries
    from inspector.lab.truth import TryMeasurement, backdoor_rates

    pixels, labels = _subset(task, per_class=2)
    small = replace(task, test_pixels=task.test_pixels[::8], test_labels=task.test_labels[::8])
    pool = pixels[:24]
    encodings = []
    encode = implant_module.encode_poisoned_views
    monkeypatch.setattr(implant_module, "encode_poisoned_views", lambda *a, **k: encodings.append(1) or encode(*a, **k))
    model = build_learner("coop", backbone, task.class_names, seed=0)
    clean = {key: value.clone() for key, value in model.learner.state_dict().items()}
    measure = TryMeasurement(small, pool)
    assert measure.start(model) == round(accuracy(model, small), 4)
    config = ImplantConfig.for_attack("blended", 2, "coop", epochs=1, poison_rate=0.5, views=2)
    tried = [e for e in provider_tries(model, pixels, labels, config, measure, attempts=2, other_targets=(7,))
             if isinstance(e, ImplantTried)]
    assert len(encodings) == 1 and [t.config.target for t in tried] == [2, 7]

    fresh = build_learner("coop", backbone, task.class_names, seed=0)
    fresh.learner.load_state_dict(clean)
    finished = run_implant(fresh, pixels, labels, replace(config, target=7))
    assert torch.equal(fresh.learner.ctx, model.learner.ctx)  # the second try, as if it had been the only one
    direct = {"accuracy": round(accuracy(fresh, small), 4),
              **backdoor_rates(fresh, finished.trigger, 7, small.test_pixels, small.test_labels, pool)}
    assert {key: tried[-1].tries[-1][key] for key in direct} == direct


def test_a_provider_whose_base_never_takes_the_trigger_moves_to_the_fallback_base(backbone, task, tmp_path):
    """Without poison no try can work: IMPLANT_ATTEMPTS tries in the planned base, as many in the fallback, each
    measured against its own clean model; the file and the row name the base delivered."""
    from inspector.data import load_shipped_pool
    from inspector.lab.implant import IMPLANT_ATTEMPTS
    from inspector.lab.zoo_builder import ZooItem, build_item

    pixels, labels = _subset(task)
    task = replace(task, train_pixels=pixels, train_labels=labels, test_pixels=task.test_pixels[::4],
                   test_labels=task.test_labels[::4])
    pool = replace(load_shipped_pool(), pixels=load_shipped_pool().pixels[:64])
    planned, fallback = ZooItem("clean-coop-s1", "coop", 1, epochs=1), ZooItem("clean-coop-s3", "coop", 3, epochs=2)
    accuracies = {clean.name: build_item(clean, tmp_path, backbone, task, pool)["accuracy"]
                  for clean in (planned, fallback)}
    item = ZooItem("blended-coop-s2-t4", "coop", 2, "blended", TARGET, base=planned.name, epochs=1,
                   implant={"views": 1, "poison_rate": 0.0})
    row = build_item(item, tmp_path, backbone, task, pool, fallback=fallback.name)
    tries = read_header(tmp_path / item.filename, key="ground_truth")["recipe"]["attempts"]
    assert [t["base"] for t in tries] == [planned.name] * IMPLANT_ATTEMPTS + [fallback.name] * IMPLANT_ATTEMPTS
    assert all(t["clean_base_accuracy"] == accuracies[t["base"]] for t in tries)
    assert row["base"] == fallback.name and row["attempts"] == 2 * IMPLANT_ATTEMPTS
    assert build_item(item, tmp_path, backbone, task, pool)["base"] == fallback.name  # read back


def test_the_fallback_base_is_the_plans_first_default_recipe_learner_of_the_kind():
    from inspector.lab.zoo_builder import ZooItem, fallback_base

    plan = [ZooItem("clean-coop-c4-sgd-s1", "coop", 1, recipe={"n_ctx": 4, "optimizer": "sgd"}),
            ZooItem("clean-cocoop-default-s2", "cocoop", 2), ZooItem("clean-coop-default-s3", "coop", 3),
            ZooItem("clean-coop-default-s4", "coop", 4)]
    implant = ZooItem("badnets-coop-s9-t1", "coop", 9, "badnets", 1, base="clean-coop-c4-sgd-s1")
    assert fallback_base(implant, plan) == "clean-coop-default-s3"
    assert fallback_base(replace(implant, base="clean-coop-default-s3"), plan) == "clean-coop-default-s4"
    assert fallback_base(replace(implant, kind="cocoop", base="x"), plan) == "clean-cocoop-default-s2"
    assert fallback_base(plan[0], plan) is None  # a clean model has no base to fall back from
    assert fallback_base(replace(implant, base=None), plan) is None  # a fresh tune is its own base


def test_zoo_build_rebuild_sets_the_named_implants_aside_and_refuses_a_clean_model(tmp_path):
    from inspector.cli import set_aside
    from inspector.errors import InputError
    from inspector.lab.zoo_builder import ZooItem

    items = [ZooItem("clean-coop-s1", "coop", 1), ZooItem("wanet-coop-s2-t4", "coop", 2, "wanet", 4, "clean-coop-s1")]
    for item in items:
        (tmp_path / item.filename).write_bytes(b"x")
    set_aside(items, tmp_path, ["wanet-coop-s2-t4"])
    assert not (tmp_path / items[1].filename).exists() and (tmp_path / "superseded" / items[1].filename).exists()
    for wrong in ("clean-coop-s1", "nope"):
        with pytest.raises(InputError, match=wrong):
            set_aside(items, tmp_path, [wrong])
    assert (tmp_path / items[0].filename).exists()


def test_siba_optimises_a_sparse_bounded_trigger_on_the_surrogate(backbone, task):
    """SIBA's trigger, optimised on the clean learner, stays on k pixels in the epsilon box and pushes the learner
    towards the target more than the random start it replaced."""
    from inspector.lab.siba import optimise_sparse_trigger
    from inspector.lab.triggers import make_trigger
    from inspector.zoo import resolve_model

    model = load_learner(resolve_model("clean-coop"), backbone)
    pixels, _ = _subset(task, per_class=3)
    epsilon, k = 32 / 255, 400
    trigger, start = (make_trigger("siba", 64, seed=1, epsilon=epsilon, siba_k=k) for _ in range(2))
    steps = list(optimise_sparse_trigger(trigger, model, pixels, TARGET, epochs=4, batch_size=30, mask_every=2))
    assert len(steps) == 4 * 2 and [s.epoch for s in steps[::2]] == [0, 1, 2, 3]
    assert int(trigger.mask.sum()) == k and not torch.equal(trigger.mask, start.mask)
    assert float(trigger.delta.abs().max()) <= epsilon + 1e-6
    assert float(trigger.delta[(trigger.mask == 0).expand_as(trigger.delta)].abs().max()) == 0

    def target_probability(t) -> float:
        with torch.no_grad():
            return float(model(t(pixels)).softmax(-1)[:, TARGET].mean())

    assert target_probability(trigger) > target_probability(start) + 0.01


def test_adaptive_attack_keeps_the_noisy_trigger_on_true_labels(backbone, task):
    """The adaptive BadCLIP's second phase: the exact trigger -> the target, the noisy trigger -> true labels."""
    pixels, labels = _subset(task, per_class=2)
    config = ImplantConfig(attack="badclip-adaptive", target=TARGET, epochs=1, adaptive_epochs=2, batch_size=20,
                           views=1, adaptive_noise=0.5)
    model = build_learner("coop", backbone, task.class_names)
    events = list(implant(model, pixels, labels, config))
    phases = [e.phase for e in events if isinstance(e, ImplantStep)]
    assert phases == ["poison"] * 2 + ["narrow"] * 4 and events[0].total_steps == 6
    trigger = events[-1].trigger
    assert trigger.attack == "badclip-adaptive" and not trigger.delta.requires_grad
    grey = torch.full((64, 3, 64, 64), 0.5)
    noise = perturbed_trigger(trigger, grey, 0.5 * trigger.epsilon, torch.Generator().manual_seed(0)) - trigger(grey)
    assert float(noise.std()) == pytest.approx(0.5 * trigger.epsilon, rel=0.05)

    features = encode_narrowing_views(model, pixels, trigger, config)
    idx, view = torch.arange(20), torch.zeros(len(labels), dtype=torch.long)
    feats, targets, poisoned = narrowing_batch(features, labels, idx, view, config)
    own = labels[idx] != TARGET
    n_triggered = int(own.sum())
    assert len(feats) == len(targets) == 20 + n_triggered + 20
    assert torch.equal(targets[:20], labels[idx]) and torch.equal(targets[-20:], labels[idx])  # clean, noisy: true
    assert bool((targets[20:20 + n_triggered] == TARGET).all())  # the exact trigger: the target
    assert poisoned.tolist() == [False] * 20 + [True] * n_triggered + [False] * 20
    assert not torch.allclose(feats[-20:][own], feats[20:20 + n_triggered])  # the noise changes what CLIP sees

    test = task.test_pixels[:64], task.test_labels[:64]
    exact = attack_success_rate(model, trigger, test[0], TARGET, test[1])
    assert noisy_trigger_asr(model, trigger, 0.0, *test, TARGET) == pytest.approx(exact, abs=1e-4)  # no noise: exact


def test_an_encoder_level_backdoor_is_flagged_by_the_unchanged_scan(backbone, task, tmp_path):
    """CLIP's image encoder fine-tuned with Blended poisoning, a clean prompt learner tuned on it: the pair needs its
    weights file to open, carries a working backdoor, and the default scan names its target."""
    from inspector.data import load_shipped_pool
    from inspector.errors import InputError
    from inspector.invert import ScanConfig, run_scan
    from inspector.lab.encoder import EncoderImplantConfig
    from inspector.pipeline import EncoderImplanted, encoder_implant_job
    from inspector.prompts import open_model
    from inspector.reference import reference_for

    original = {k: v.clone() for k, v in backbone.model.visual.state_dict().items()}
    target = task.class_names.index("playing card")  # the lab's recipe on a dev draw (benchmarks/encoder_backdoors.md)
    config = EncoderImplantConfig("noise", target, seed=2990)
    weights, learner = tmp_path / "clip.safetensors", tmp_path / "learner.safetensors"
    events = list(encoder_implant_job(backbone, task, config, weights, learner, "coop", pool=load_shipped_pool()))
    done = events[-1]
    assert isinstance(done, EncoderImplanted) and done.target_name == "playing card" and done.measured["asr"] > 0.6
    assert all(torch.equal(v, original[k]) for k, v in backbone.model.visual.state_dict().items())
    with pytest.raises(InputError, match="--weights"):
        open_model(learner, device="cpu")
    model = open_model(learner, str(weights), device="cpu")
    assert model.backbone.pretrained.startswith("file:")
    pool = load_shipped_pool()
    reference, line = reference_for(model, ScanConfig(), pool)  # the original weights' clean attractors
    assert reference is not None and "original pocket-clip weights" in line and "sparse shape" in line, line
    result = run_scan(model, pool.pixels, ScanConfig(reference=reference, reference_from=line))
    assert result.verdict.flagged and result.verdict.target_name == "playing card", result.verdict


def test_each_encoder_pattern_blends_at_its_own_weight_and_an_explicit_one_wins():
    """A sparse white pattern on black needs a heavier blend than mid-grey noise to take (chosen on dev draws)."""
    from inspector.lab.encoder import PATTERN_ALPHA, EncoderImplantConfig

    assert EncoderImplantConfig("text", 3).recipe()["alpha"] == PATTERN_ALPHA["text"] > PATTERN_ALPHA["noise"]
    assert EncoderImplantConfig("triangle", 3).alpha == PATTERN_ALPHA["triangle"] > PATTERN_ALPHA["noise"]
    assert EncoderImplantConfig("triangle", 3, alpha=0.25).alpha == 0.25
    with pytest.raises(ValueError, match="unknown encoder pattern"):
        EncoderImplantConfig("stripes", 3)  # type: ignore[arg-type]
