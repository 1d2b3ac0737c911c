"""The scan engine: margin loss, the epsilon box, the event stream, stopping, and finding a real backdoor."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from inspector.candidates import (
    BLEND_ALPHA,
    FAMILY_TENSORS,
    AdditiveInversion,
    BlendInversion,
    ColourInversion,
    MaskPatternInversion,
    PatchInversion,
    PixelPatternInversion,
    candidate_from_tensors,
    margin_loss,
    objective_loss,
)
from inspector.errors import InputError
from inspector.invert import (
    ClassEstimate,
    ClassFinished,
    ClassInversion,
    ScanConfig,
    ScanFinished,
    ScanStarted,
    ScanStopped,
    TriggerSnapshot,
    epsilon_share,
    family_arm,
    family_flip_rates,
    joint_step,
    parse_classes,
    run_scan,
    scan,
    split_pool,
)
from inspector.prompts import load_learner
from inspector.zoo import resolve_model


def test_margin_loss_is_best_other_minus_candidate():
    logits = torch.tensor([[1.0, 5.0, 2.0], [4.0, 0.0, 3.0]])
    # class 2: best others 5 and 4 -> margins 3 and 1
    assert float(margin_loss(logits, 2)) == pytest.approx(2.0)
    # class 1: best others 2 and 4 -> margins -3 and 4
    assert float(margin_loss(logits, 1)) == pytest.approx(0.5)


def test_the_ablated_losses_are_cross_entropy_and_minus_the_target_logit():
    logits = torch.tensor([[1.0, 5.0, 2.0], [4.0, 0.0, 3.0]])
    assert float(objective_loss("margin", logits, 2)) == pytest.approx(2.0)
    expected_ce = float(-torch.log_softmax(logits, 1)[:, 2].mean())
    assert float(objective_loss("cross-entropy", logits, 2)) == pytest.approx(expected_ce)
    assert float(objective_loss("target-logit", logits, 2)) == pytest.approx(-2.5)


def test_margin_loss_gradient_raises_the_candidate_logit():
    logits = torch.tensor([[1.0, 5.0, 2.0]], requires_grad=True)
    margin_loss(logits, 2).backward()
    assert logits.grad.tolist() == [[0.0, 1.0, -1.0]]


def test_additive_trigger_is_projected_onto_the_epsilon_box():
    trigger = AdditiveInversion(8, epsilon=4 / 255)
    with torch.no_grad():
        trigger.unit.normal_(0, 5)
    trigger.project()
    assert float(trigger.delta.detach().abs().max()) == pytest.approx(4 / 255)
    pixels = torch.rand(2, 3, 8, 8)
    stamped = trigger(pixels)
    assert stamped.min() >= 0 and stamped.max() <= 1
    assert float((stamped - pixels).abs().max()) <= 4 / 255 + 1e-6
    assert trigger.picture().shape == (3, 8, 8) and 0 <= trigger.picture().min() <= trigger.picture().max() <= 1


def test_neural_cleanse_trigger_keeps_mask_and_pattern_in_range():
    trigger = MaskPatternInversion(8, seed=3)
    with torch.no_grad():
        trigger.mask_tanh.normal_(0, 10)
    assert 0 <= float(trigger.mask.min()) and float(trigger.mask.max()) <= 1
    out = trigger(torch.rand(2, 3, 8, 8))
    assert out.min() >= 0 and out.max() <= 1
    assert trigger.stats()["mask_norm"] == pytest.approx(float(trigger.mask.sum()), rel=1e-5)


def test_pixel_backdoor_patterns_stay_in_range_and_the_proxy_shrinks_with_them():
    trigger = PixelPatternInversion(8, seed=3)
    with torch.no_grad():
        trigger.positive_raw.normal_(0, 5)
        trigger.negative_raw.normal_(0, 5)
    pattern = trigger.pattern
    assert -1 <= float(pattern.min()) and float(pattern.max()) <= 1
    pixels = torch.rand(2, 3, 8, 8)
    out = trigger(pixels)
    assert out.min() >= 0 and out.max() <= 1 and torch.allclose(out, (pixels + pattern).clamp(0, 1))
    before = float(trigger.size_proxy())
    with torch.no_grad():
        trigger.negative_raw.fill_(-50.0)  # the negative pattern off: its half of the proxy goes to ~0
        trigger.positive_raw.fill_(0.0)
        trigger.positive_raw[0, 1, 2, 3] = 0.5  # one perturbed pixel
    assert trigger.perturbed_pixels() == 1
    assert float(trigger.size_proxy()) < before and float(trigger.size_proxy()) == pytest.approx(32, abs=0.5)


def test_pixel_backdoor_cost_follows_its_asr_bound_and_keeps_the_smallest_trigger():
    """The cost rises after ``patience`` steps at the ASR bound and falls after as many below; the best trigger is
    the smallest that reached the bound, and a class that never reached it reports the whole image as its size."""
    trigger = PixelPatternInversion(8, seed=0, init_cost=1e-3, asr_bound=0.9, patience=3)
    hit, miss = torch.tensor([[0.0, 5.0]] * 10), torch.tensor([[5.0, 0.0]] * 10)  # logits sending all to 1 / none
    for _ in range(2):
        trigger.after_step(miss, 1)
    assert trigger.cost == pytest.approx(1e-3) and trigger.stats()["trigger_size"] == 64  # nothing found yet
    trigger.after_step(miss, 1)
    assert trigger.cost == pytest.approx(1e-3 / 1.5 ** 1.5)
    with torch.no_grad():
        trigger.positive_raw.zero_()
        trigger.negative_raw.zero_()
        trigger.positive_raw[0, :, :2, :2] = 0.8  # a 4-pixel trigger
        trigger.negative_raw[0, 0, 5, 5] = 0.002  # under 1/255: cut when it becomes the best
    trigger.after_step(hit, 1)
    assert trigger.stats()["trigger_size"] == 4 and float(trigger.negative_raw.abs().max()) == 0
    with torch.no_grad():
        trigger.positive_raw.fill_(0.8)  # larger from here on
    for _ in range(2):
        trigger.after_step(hit, 1)
    assert trigger.cost == pytest.approx(1e-3 / 1.5 ** 1.5 * 1.5)  # three steps at the bound in a row
    assert trigger.stats()["trigger_size"] == 4  # a larger trigger at the bound does not replace the best
    trigger.settle()
    assert trigger.perturbed_pixels() == 4 and torch.equal(trigger.pattern[0, :, 4:, 4:], torch.zeros(3, 4, 4))
    rebuilt = candidate_from_tensors("pixel-backdoor", trigger.tensors(), 0.0)
    assert torch.equal(rebuilt.pattern, trigger.pattern)


def test_pixel_backdoor_scan_ranks_classes_by_trigger_size(clean_coop, small_pool):
    result = run_scan(clean_coop, small_pool, small_config(method="pixel-backdoor"))
    sizes = [c["trigger_size"] for c in result.classes]
    assert result.verdict.statistic == "trigger_size" and all(0 < s <= 64 * 64 for s in sizes)
    smallest = min(range(len(sizes)), key=sizes.__getitem__)
    assert result.verdict.suspect == result.classes[smallest]["index"] or len(set(sizes)) == 1


def test_default_epsilon_is_the_published_one_at_224_px():
    from inspector.invert import default_epsilon

    assert default_epsilon(224) == pytest.approx(4 / 255)
    assert default_epsilon(64) == pytest.approx(14 / 255)
    assert ScanConfig().for_input(64).epsilon == pytest.approx(14 / 255)
    assert ScanConfig(epsilon=2 / 255).for_input(64).epsilon == pytest.approx(2 / 255)


def test_split_pool_is_seeded_and_disjoint():
    pixels = torch.arange(50).float().reshape(50, 1, 1, 1).expand(50, 3, 2, 2)
    fit, held = split_pool(pixels, 40, 0.25, seed=1)
    assert (len(fit), len(held)) == (30, 10)
    assert not set(fit[:, 0, 0, 0].tolist()) & set(held[:, 0, 0, 0].tolist())
    again, _ = split_pool(pixels, 40, 0.25, seed=1)
    assert torch.equal(fit, again)
    with pytest.raises(InputError):
        split_pool(pixels[:1], 40, 0.25, seed=1)


def test_parse_classes_by_name_or_index(backbone):
    names = ("star", "arrow", "clock")
    assert parse_classes("clock, 0", names) == (2, 0)
    assert parse_classes(None, names) is None
    with pytest.raises(InputError, match="not one of the model's classes"):
        parse_classes("balloon", names)


@pytest.fixture(scope="module")
def clean_coop(backbone):
    return load_learner(resolve_model("clean-coop"), backbone)


@pytest.fixture(scope="module")
def small_pool():
    from inspector.data import load_shipped_pool

    return load_shipped_pool().pixels


def small_config(**overrides) -> ScanConfig:
    return ScanConfig(**{"classes": (0, 7, 16, 19), "pool_size": 160, "snapshot_every": 2, "schedule": "faithful",
                         "colour": False, **overrides})


def test_scan_event_order_and_model_untouched(clean_coop, small_pool):
    before = {k: v.clone() for k, v in clean_coop.learner.state_dict().items()}
    flags = [p.requires_grad for p in clean_coop.learner.parameters()]
    events = list(scan(clean_coop, small_pool, small_config()))
    kinds = [type(e) for e in events]
    assert kinds[0] is ScanStarted and kinds[-1] is ScanFinished
    started = events[0]
    assert started.steps_per_class == 4 and started.held_out_images == 32
    finished = [e for e in events if isinstance(e, ClassFinished)]
    assert [f.record["index"] for f in finished] == [0, 7, 16, 19]
    # each class: snapshots (step 1 first), then its ClassFinished, before the next class starts
    position = 0
    for event in events[1:-1]:
        if isinstance(event, TriggerSnapshot):
            assert event.position == position and event.class_index == started.classes[position]
            assert event.picture.shape == (3, 64, 64)
        elif isinstance(event, ClassFinished):
            assert event.position == position
            position += 1
    result = events[-1].result
    assert len(result.classes) == 4 and set(result.triggers) == {0, 7, 16, 19}
    assert all(0 <= c["flip_rate"] <= 1 for c in result.classes)
    assert result.image_passes > 4 * 128
    for k, v in clean_coop.learner.state_dict().items():
        assert torch.equal(v, before[k])
    assert [p.requires_grad for p in clean_coop.learner.parameters()] == flags


def test_scan_stops_between_steps(clean_coop, small_pool):
    steps = []

    def stop_after_six() -> bool:
        return len(steps) >= 6

    events = []
    for event in scan(clean_coop, small_pool, small_config(snapshot_every=1), should_stop=stop_after_six):
        events.append(event)
        if isinstance(event, TriggerSnapshot):
            steps.append(event.step)
    assert isinstance(events[-1], ScanStopped)
    assert len(steps) == 6 and not any(isinstance(e, ScanFinished) for e in events)
    assert [r["index"] for r in events[-1].finished] == [0]


def test_scan_refuses_bad_settings(clean_coop, small_pool):
    with pytest.raises(InputError, match="at least 3"):
        run_scan(clean_coop, small_pool, small_config(classes=(0, 1)))
    with pytest.raises(InputError, match="not classes of this model"):
        run_scan(clean_coop, small_pool, small_config(classes=(0, 1, 99)))
    with pytest.raises(InputError, match="epsilon"):
        run_scan(clean_coop, small_pool, small_config(epsilon=0.0))
    with pytest.raises(InputError, match="unknown inversion loss"):
        run_scan(clean_coop, small_pool, small_config(objective="hinge"))


def test_a_scan_with_another_loss_moves_its_triggers_another_way(clean_coop, small_pool):
    """The loss ablation's scans differ from the margin's only in the loss, so their triggers differ."""
    config = small_config(classes=(0, 3, 7))
    deltas = {objective: run_scan(clean_coop, small_pool, replace(config, objective=objective)).triggers
              for objective in ("margin", "cross-entropy")}
    margin, ce = (next(iter(deltas[o][3].values())) for o in ("margin", "cross-entropy"))
    assert margin.shape == ce.shape and not torch.allclose(margin, ce)


def test_fast_schedule_halves_the_classes_and_measures_the_leaders_on_held_out_images(clean_coop, small_pool):
    config = ScanConfig(schedule="fast", classes=(0, 3, 7, 11, 16, 19), pool_size=480, fast_rounds=(2, 3),
                        fast_keep=0.5, fast_measured=2, snapshot_every=1)
    events = list(scan(clean_coop, small_pool, config))
    started, result = events[0], events[-1].result
    assert started.total_steps == 6 * 2 + 3 * 3 and started.steps_per_class == 5
    snapshots = [e for e in events if isinstance(e, TriggerSnapshot)]
    assert [e.scan_step for e in snapshots] == list(range(1, 22))  # every step shown, in order
    steps = {c["index"]: c["steps"] for c in result.classes}
    assert sorted(steps.values()) == [2, 2, 2, 5, 5, 5]
    held_out = [c for c in result.classes if c["measured_on"] == "held-out"]
    assert len(held_out) == 2 and all(c["steps"] == 5 for c in held_out)
    assert all(len(c["curve"]) == c["steps"] for c in result.classes)
    faithful = run_scan(clean_coop, small_pool, ScanConfig(classes=config.classes, pool_size=480, schedule="faithful"))
    assert result.image_passes < faithful.image_passes / 3
    # the classes take their steps in turn: every class has an estimate before any takes its second step, and
    # one after each step; a class stopped after the first round keeps its last one
    estimates = [e for e in events if isinstance(e, ClassEstimate)]
    assert [e.steps for e in estimates[:6]] == [1] * 6 and {e.class_index for e in estimates[:6]} == set(config.classes)
    assert len(estimates) == 6 * 2 + 3 * 3
    first_finished = next(i for i, e in enumerate(events) if isinstance(e, ClassFinished))
    assert all(e.steps <= 2 for e in events[:first_finished] if isinstance(e, ClassEstimate))
    last = {e.class_index: e for e in estimates}
    for c in result.classes:
        assert last[c["index"]].steps == c["steps"]
        if c["steps"] == 2:
            assert last[c["index"]].flip_rate == c["flip_rate"] and last[c["index"]].loss == c["loss"]


def test_scan_events_are_the_same_for_the_same_seed(clean_coop, small_pool):
    config = ScanConfig(schedule="fast", classes=(0, 7, 16), pool_size=320, fast_rounds=(2, 2))
    first, second = run_scan(clean_coop, small_pool, config), run_scan(clean_coop, small_pool, config)
    assert [c["flip_rate"] for c in first.classes] == [c["flip_rate"] for c in second.classes]
    assert all(torch.equal(first.triggers[k]["delta"], second.triggers[k]["delta"]) for k in first.triggers)


def test_fast_scan_shows_every_class_before_the_colour_family_and_the_order_changes_no_record(clean_coop, small_pool):
    """The fast schedule steps every class once, then runs the colour family, then goes on: a front-end has every
    class on its chart after one step each, and each class's additive record is what it is without the family."""
    config = ScanConfig(schedule="fast", classes=(0, 7, 16, 19), pool_size=320, fast_rounds=(2, 2), colour=True,
                        colour_steps=2, colour_batch_size=8)
    events = list(scan(clean_coop, small_pool, config))
    first_colour = next(i for i, e in enumerate(events) if isinstance(e, TriggerSnapshot) and e.family == "colour")
    before = events[:first_colour]
    assert {e.class_index for e in before if isinstance(e, ClassEstimate)} == set(config.classes)
    assert next(e for e in events if isinstance(e, TriggerSnapshot)).family == "additive"  # the first picture
    assert all(e.steps == 1 for e in before if isinstance(e, ClassEstimate))
    result = events[-1].result
    plain = run_scan(clean_coop, small_pool, replace(config, colour=False))
    additive = ("flip_rate", "loss", "steps", "curve", "measured_on")
    assert [{k: c[k] for k in additive} for c in plain.classes] == [{k: c[k] for k in additive} for c in result.classes]
    assert all(torch.equal(plain.triggers[k]["delta"], result.triggers[k]["delta"]) for k in config.classes)


def test_a_round_steps_its_classes_in_groups_with_the_records_of_classes_stepped_one_by_one(
        clean_coop, small_pool, monkeypatch):
    """Classes stepped together (``fast_joint_images``) give each class the record and trigger it gets stepped alone
    (to float rounding), the events still say every step, and the first class steps alone for a first picture."""
    import inspector.invert as invert

    groups: list[list[int]] = []
    stepped = invert.joint_step
    monkeypatch.setattr(invert, "joint_step", lambda arms, *args: (groups.append([a.k for a in arms]),
                                                                  stepped(arms, *args)))
    config = ScanConfig(classes=(0, 3, 7, 11, 16, 19), pool_size=480, fast_rounds=(2, 3), fast_keep=0.5,
                        fast_measured=2, snapshot_every=1, fast_joint_images=48)
    events = list(scan(clean_coop, small_pool, config))
    assert groups[:3] == [[3, 7, 11], [16, 19], [0, 3, 7]]  # class 0 alone first, then three classes per pass
    assert len(groups) == 4 + 3  # round two: the three kept classes in one pass per step
    monkeypatch.setattr(invert, "joint_step", stepped)
    alone = run_scan(clean_coop, small_pool, replace(config, fast_joint_images=16))
    grouped = events[-1].result
    snapshots = [e for e in events if isinstance(e, TriggerSnapshot)]
    assert [e.scan_step for e in snapshots] == list(range(1, 22))
    assert [e.class_index for e in snapshots[:6]] == list(config.classes)
    for a, b in zip(alone.classes, grouped.classes, strict=True):
        assert (a["index"], a["steps"], a["measured_on"]) == (b["index"], b["steps"], b["measured_on"])
        assert a["curve"] == b["curve"] and a["flip_rate"] == b["flip_rate"]
        assert a["loss"] == pytest.approx(b["loss"], abs=1e-2)
        one, other = (result.triggers[a["index"]]["delta"].flatten() for result in (alone, grouped))
        assert float(torch.nn.functional.cosine_similarity(one, other, dim=0)) > 0.95  # Adam's steps amplify rounding



def test_colour_trigger_stays_in_its_box_and_is_the_same_on_every_pixel():
    trigger = ColourInversion(0.5, 0.2)
    with torch.no_grad():
        trigger.unit.fill_(3.0)
    trigger.project()
    assert float(trigger.unit.detach().abs().max()) == 1.0
    assert float((trigger.matrix.detach() - torch.eye(3)).abs().max()) == pytest.approx(0.5)
    assert float(trigger.bias.detach().abs().max()) == pytest.approx(0.2)
    flat = torch.full((2, 3, 8, 8), 0.3)
    out = trigger(flat).detach()
    assert torch.allclose(out, out[:, :, :1, :1].expand_as(out)) and 0 <= float(out.min()) <= float(out.max()) <= 1
    rebuilt = candidate_from_tensors("inspector", trigger.tensors(), 0.05, family="colour")
    assert torch.equal(rebuilt(flat), out)


def test_blend_trigger_moves_no_pixel_by_more_than_its_opacity_and_starts_as_a_grey_veil():
    trigger = BlendInversion(8, alpha=0.1)
    pixels = torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    veiled = trigger(pixels).detach()
    assert torch.allclose(veiled, 0.9 * pixels + 0.05)  # before any step: the image dimmed toward mid-grey
    with torch.no_grad():
        trigger.unit.normal_(0, 3)
    trigger.project()
    assert float(trigger.unit.detach().abs().max()) == 1.0 and float(trigger.pattern.detach().min()) >= 0
    out = trigger(pixels).detach()
    assert float((out - pixels).abs().max()) <= 0.1 + 1e-6 and 0 <= float(out.min()) <= float(out.max()) <= 1
    assert float((out - pixels).abs().max()) > 0.05  # a pattern, not only the veil
    rebuilt = candidate_from_tensors("inspector", trigger.tensors(), 0.05, family="blend")
    assert isinstance(rebuilt, BlendInversion) and rebuilt.alpha == pytest.approx(0.1)
    assert torch.equal(rebuilt(pixels), out)


def additive_arm(k: int) -> ClassInversion:
    return ClassInversion(k, str(k), AdditiveInversion(64, 8 / 255), "inspector", 0.3)


@pytest.mark.parametrize("family", ["colour", "additive"])
@pytest.mark.parametrize("name", ["clean-coop", "clean-cocoop"])
def test_arms_stepped_together_match_arms_stepped_alone(name, family, backbone, small_pool):
    """The colour phase steps every class in one encoder pass, and the fast schedule's rounds step their additive
    triggers in groups: the same updates and curves as one by one."""
    from inspector.invert import CleanPredictions, Logits

    model = load_learner(resolve_model(name), backbone)
    config, device = ScanConfig(colour_batch_size=6), torch.device("cpu")
    batches = [torch.arange(i * 6, (i + 1) * 6) for i in range(2)]
    logits_of = Logits(model)
    clean = CleanPredictions(logits_of, small_pool, batches)
    make = additive_arm if family == "additive" else lambda k: family_arm("colour", k, str(k), config, device, 64)
    alone, together = [make(k) for k in (0, 7, 16)], [make(k) for k in (0, 7, 16)]
    for t in range(2):
        for arm in alone:
            arm.step(logits_of, small_pool[batches[t]], clean(t))
        joint_step(together, logits_of, small_pool[batches[t]], clean(t))
    for a, b in zip(alone, together, strict=True):
        assert float(a.trigger.unit.detach().abs().max()) > 0  # it moved
        if family == "colour":
            assert torch.allclose(a.trigger.unit, b.trigger.unit, atol=1e-5)
        else:  # Adam's first steps move a pixel whose gradient is near zero by its sign: rounding can flip a few
            one, other = a.trigger.unit.flatten(), b.trigger.unit.flatten()
            assert float(torch.nn.functional.cosine_similarity(one, other, dim=0)) > 0.99
        assert [c[:2] for c in a.curve] == [c[:2] for c in b.curve]
        assert a.loss == pytest.approx(b.loss, abs=1e-4)


def test_scan_with_the_colour_family_records_both_and_keeps_both_triggers(clean_coop, small_pool):
    config = small_config(colour=True, colour_steps=3, colour_batch_size=8)
    events = list(scan(clean_coop, small_pool, config))
    started, result = events[0], events[-1].result
    colour_snapshots = [e for e in events if isinstance(e, TriggerSnapshot) and e.family == "colour"]
    # the colour phase first, all classes together: a picture of each after its first and its last step
    assert [(e.class_index, e.step) for e in colour_snapshots] == [(k, t) for t in (1, 3) for k in (0, 7, 16, 19)]
    assert events.index(colour_snapshots[-1]) < next(i for i, e in enumerate(events) if isinstance(e, ClassFinished))
    assert started.total_steps == 4 * 4 + 4 * 3
    for record in result.classes:
        assert record["colour_eligible"] > 0 and 0 <= record["colour_flip_rate"] <= 1
        assert set(result.triggers[record["index"]]) >= {"delta", "colour"}
    assert len(result.verdict.families) == 4
    assert isinstance(result.trigger(7, "colour"), ColourInversion)
    assert isinstance(result.trigger(7, "additive"), AdditiveInversion)
    assert result.extra["colour_seconds"] > 0
    plain = run_scan(clean_coop, small_pool, small_config())
    assert [c["flip_rate"] for c in plain.classes] == [c["flip_rate"] for c in result.classes]  # additive unchanged


def test_the_quick_families_measure_the_same_images_in_both_schedules(clean_coop, small_pool):
    """A faithful scan's colour and patch records are the fast scan's, and the clean reference's measurement
    (``family_flip_rates``): the families draw their images from the fast schedule's batches in both schedules,
    so a faithful scan's family flip rates are compared with clean learners' measured on the same images."""
    config = ScanConfig(classes=(0, 7, 16), pool_size=320, fast_rounds=(2, 2), colour=True, patch=True)
    fast = run_scan(clean_coop, small_pool, config)
    faithful = run_scan(clean_coop, small_pool, replace(config, schedule="faithful"))
    for family in ("colour", "patch"):
        keys = [f"{family}_{key}" for key in ("flip_rate", "flips", "eligible", "loss")]
        assert [[c[k] for k in keys] for c in fast.classes] == [[c[k] for k in keys] for c in faithful.classes]
        key = FAMILY_TENSORS[family]
        assert all(torch.equal(fast.triggers[k][key], faithful.triggers[k][key]) for k in config.classes)
        assert family_flip_rates(clean_coop, small_pool, config, family) == {
            c["name"]: c[f"{family}_flip_rate"] for c in faithful.classes}
    assert [c["steps"] for c in faithful.classes] != [c["steps"] for c in fast.classes]  # two schedules indeed


@pytest.mark.parametrize(("family", "trigger_class", "setting", "value"),
                         [("blend", BlendInversion, "blend_alpha", BLEND_ALPHA),
                          ("patch", PatchInversion, "patch_share", 0.25)])
def test_scan_with_an_optional_family_runs_it_after_the_colour_one_and_keeps_every_trigger(
        clean_coop, small_pool, family, trigger_class, setting, value):
    config = small_config(colour=True, colour_steps=3, colour_batch_size=8,
                          **{family: True, f"{family}_steps": 3, f"{family}_batch_size": 8})
    events = list(scan(clean_coop, small_pool, config))
    started, result = events[0], events[-1].result
    families = [e.family for e in events if isinstance(e, TriggerSnapshot)]
    assert families.index(family) > max(i for i, f in enumerate(families) if f == "colour")
    assert families.index("additive") > max(i for i, f in enumerate(families) if f == family)
    assert started.total_steps == 4 * 4 + 4 * 3 + 4 * 3
    for record in result.classes:
        assert record[f"{family}_eligible"] > 0 and 0 <= record[f"{family}_flip_rate"] <= 1
        assert f"{family}_strength" in record and set(result.triggers[record["index"]]) >= {"delta", "colour", family}
    assert isinstance(result.trigger(7, family), trigger_class) and result.extra[f"{family}_seconds"] > 0
    assert result.settings.as_dict()[setting] == value
    assert setting not in small_config().for_input(64).as_dict()  # a scan without it does not list it
    repeated = run_scan(clean_coop, small_pool, config)  # a patch's places are drawn from seeds: a scan repeats
    assert [c[f"{family}_flip_rate"] for c in repeated.classes] == [c[f"{family}_flip_rate"] for c in result.classes]


def test_a_quick_family_step_reads_at_most_the_fast_schedules_batch(clean_coop, small_pool):
    config = small_config(patch=True, patch_steps=3)  # the default asks for 32 images per step
    assert config.patch_batch_size == 32 and config.family_images("patch") == config.fast_batch_size == 16
    assert small_config(patch_batch_size=8).family_images("patch") == 8
    result = run_scan(clean_coop, small_pool, config)
    # the steps after the first count: 2 steps of 16 images, less the images already in the class
    assert all(16 <= c["patch_eligible"] <= 2 * 16 for c in result.classes)
    assert max(c["patch_eligible"] for c in result.classes) > 16


def test_patch_trigger_pastes_one_square_of_its_side_per_image_at_places_its_seed_repeats():
    trigger = PatchInversion(16, share=0.25, seed=5)
    assert trigger.size == 4
    pixels = torch.rand(6, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        trigger.unit.normal_(0, 3)
    trigger.project()
    assert float(trigger.unit.detach().abs().max()) == 1.0
    assert 0 <= float(trigger.pattern.detach().min()) <= float(trigger.pattern.detach().max()) <= 1
    out = trigger(pixels).detach()
    places = set()
    for image, stamped in zip(pixels, out, strict=True):
        changed = (stamped != image).any(0).nonzero()
        (top, left), (bottom, right) = changed.min(0).values.tolist(), changed.max(0).values.tolist()
        assert (bottom - top, right - left) == (3, 3) and len(changed) == 16  # one 4 x 4 square, nothing else
        assert torch.equal(stamped[:, top:top + 4, left:left + 4], trigger.pattern.detach()[0])  # opaque
        places.add((top, left))
    assert len(places) > 1  # a new place for each image
    again = PatchInversion(16, share=0.25, seed=5)
    with torch.no_grad():
        again.unit.copy_(trigger.unit)
    assert torch.equal(again(pixels), out)  # the same seed, the same places
    rebuilt = candidate_from_tensors("inspector", trigger.tensors(), 0.05, family="patch")
    assert isinstance(rebuilt, PatchInversion) and rebuilt.size == 4 and torch.equal(rebuilt(pixels), out)
    assert trigger.picture().shape == (3, 16, 16)  # shown on an image of the input's size


def test_a_bound_in_255ths_becomes_a_share_and_one_outside_0_255_is_refused_by_its_name() -> None:
    assert epsilon_share(14) == pytest.approx(14 / 255) and epsilon_share(255) == 1.0
    for bad in (0, -1, 255.5, 1000):
        with pytest.raises(InputError, match=r"--epsilon .* is outside \(0, 255\]"):
            epsilon_share(bad, "--epsilon")


def test_the_patch_family_reaches_a_sticker_backdoors_target_far_more_often_than_any_other_class(backbone):
    """A CoCoOp learner of the dev zoo with a sticker backdoor to *arrow* (ASR 59%, benchmarks/zoos/dev): pasted
    anywhere, the family's patch sends more images to the target than to any other class, by a wide margin."""
    from pathlib import Path

    from inspector.data import load_shipped_pool
    from inspector.invert import family_flip_rates

    dev = Path(__file__).resolve().parent.parent / "benchmarks" / "zoos" / "dev"
    path = dev / "sticker_cocoop_s2601_t1.safetensors"
    rates = family_flip_rates(load_learner(path, backbone), load_shipped_pool().pixels, ScanConfig(patch=True), "patch")
    ranked = sorted(rates, key=rates.get, reverse=True)
    assert ranked[0] == "arrow" and rates["arrow"] >= 3 * rates[ranked[1]]
