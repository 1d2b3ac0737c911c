"""inspector/lab.py: each attack's trigger function (shape, range, bounds, determinism, records)."""

from __future__ import annotations

import pytest
import torch

from inspector.lab import ATTACKS, AdditiveTrigger, make_trigger, trigger_from_tensors, trigger_tensors

SIZE = 64


@pytest.fixture()
def pixels() -> torch.Tensor:
    return torch.rand(5, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize("attack", ATTACKS)
def test_trigger_keeps_shape_and_range_and_changes_the_image(attack, pixels):
    trigger = make_trigger(attack, SIZE, seed=0)
    if attack == "badclip":  # a fresh BadCLIP trigger is zero until trained; give it a value
        with torch.no_grad():
            trigger.delta.uniform_(-1, 1)
        trigger.project()
    out = trigger(pixels).detach()
    assert out.shape == pixels.shape
    assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0
    assert not torch.allclose(out, pixels)


@pytest.mark.parametrize("attack", ["blended", "badnets", "wanet"])
def test_fixed_triggers_are_seeded(attack, pixels):
    same = make_trigger(attack, SIZE, seed=3)(pixels), make_trigger(attack, SIZE, seed=3)(pixels)
    other = make_trigger(attack, SIZE, seed=4)(pixels)
    assert torch.equal(*same) and not torch.equal(same[0], other)


def test_badclip_trigger_stays_in_the_epsilon_box(pixels):
    trigger = AdditiveTrigger(SIZE, epsilon=4 / 255)
    with torch.no_grad():
        trigger.delta.fill_(0.5)
    trigger.project()
    with torch.no_grad():
        assert float(trigger.delta.abs().max()) == pytest.approx(4 / 255)
        assert float((trigger(pixels) - pixels).abs().max()) <= 4 / 255 + 1e-6


def test_blend_is_bounded_by_alpha(pixels):
    out = make_trigger("blended", SIZE, alpha=0.2)(pixels)
    assert float((out - pixels).abs().max()) <= 0.2 + 1e-6


def test_badnets_changes_only_its_corner_patch(pixels):
    trigger = make_trigger("badnets", SIZE)
    size = trigger.patch.shape[-1]
    out = trigger(pixels)
    assert size == SIZE // 8
    assert torch.equal(out[..., :-size, :], pixels[..., :-size, :])
    assert torch.equal(out[..., :, :-size], pixels[..., :, :-size])
    assert torch.equal(out[..., -size:, -size:], trigger.patch.expand(5, -1, -1, -1))


def test_wanet_warp_is_subtle_and_its_noise_mode_differs(pixels):
    smooth = torch.nn.functional.avg_pool2d(pixels, 5, stride=1, padding=2)  # warps move smooth images little
    trigger = make_trigger("wanet", SIZE, wanet_strength=0.5)
    warped = trigger(smooth)
    assert 0 < float((warped - smooth).abs().mean()) < 0.05
    noisy = trigger.noise_mode(smooth, torch.Generator().manual_seed(0))
    assert not torch.allclose(noisy, warped)
    assert float((trigger.grid - make_trigger("wanet", SIZE, wanet_strength=0.0).grid).abs().max()) > 0


@pytest.mark.parametrize("attack", ATTACKS)
def test_trigger_round_trips_through_its_record(attack, pixels):
    trigger = make_trigger(attack, SIZE, seed=7)
    if attack == "badclip":
        with torch.no_grad():
            trigger.delta.normal_(0, 0.01)
        trigger.project()
    rebuilt = trigger_from_tensors(attack, trigger.params(), trigger_tensors(trigger))
    assert torch.equal(rebuilt(pixels), trigger(pixels))


def test_benchmark_zoo_plan_alternates_kinds_and_builds_cheap_models_first():
    from inspector.lab.zoo_builder import build_order, plan_benchmark_zoo

    items = plan_benchmark_zoo(4, 2, seed=0, n_classes=20, backdoor_kind="both")
    assert [i.kind for i in items[:4]] == ["coop", "cocoop", "coop", "cocoop"]
    backdoored = items[4:]
    assert len(backdoored) == 2 * len(ATTACKS) and {i.attack for i in backdoored} == set(ATTACKS)
    for item in backdoored:  # implanted into a clean model of its own kind
        base = next(i for i in items if i.name == item.base)
        assert base.attack is None and base.kind == item.kind and 0 <= item.target < 20
    order = [item for _, item in build_order(items)]
    assert order[:4] == items[:4]
    kinds = [i.kind for i in order[4:]]
    assert kinds == sorted(kinds, key=lambda k: k == "cocoop")  # every CoOp implant before any CoCoOp one
    assert sorted(position for position, _ in build_order(items)) == list(range(len(items)))
