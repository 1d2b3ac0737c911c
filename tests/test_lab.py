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


@pytest.mark.parametrize("attack", ["blended", "badnets", "wanet", "filter", "sticker"])
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


def test_filter_is_one_colour_transform_for_every_pixel(pixels):
    """A filter has no local pattern: two pixels of the same colour stay the same colour, wherever they are."""
    trigger = make_trigger("filter", SIZE, seed=2)
    flat = torch.full((1, 3, SIZE, SIZE), 0.4)
    flat[..., 10:20, 30:40] = 0.7
    out = trigger(flat)
    assert torch.allclose(out[..., 0, 0], out[..., -1, -1]) and torch.allclose(out[..., 12, 32], out[..., 19, 39])
    assert not torch.allclose(out[..., 0, 0], flat[..., 0, 0])
    mixed = 0.4 * torch.eye(3) + 0.6 * trigger.matrix  # the colour matrix it applies, blended by its strength
    colour = torch.tensor([0.2, 0.5, 0.9])
    expected = (mixed @ colour + 0.6 * trigger.bias).clamp(0, 1)
    assert torch.allclose(trigger(colour.reshape(1, 3, 1, 1)).flatten(), expected, atol=1e-6)


def test_sticker_changes_only_its_disc_inside_the_image(pixels):
    trigger = make_trigger("sticker", SIZE, seed=1)
    size, top, left = trigger.params()["size"], trigger.params()["top"], trigger.params()["left"]
    assert size == SIZE // 5 and 0 < top < SIZE - size and 0 < left < SIZE - size  # not in a corner
    changed = (trigger(pixels) != pixels).any(dim=1)
    rows, cols = changed.any(dim=(0, 2)).nonzero().flatten(), changed.any(dim=(0, 1)).nonzero().flatten()
    assert int(rows.min()) >= top and int(rows.max()) < top + size
    assert int(cols.min()) >= left and int(cols.max()) < left + size
    assert 0.6 * size * size < float(changed[0].sum()) < size * size  # a disc, not the whole square
    inside = trigger.sticker[0][:, trigger.alpha[0, 0] > 0].T
    assert len(torch.unique(inside, dim=0)) >= 3  # printed with several colours, not a flat dot


def test_siba_touches_only_its_k_pixels_within_epsilon(pixels):
    trigger = make_trigger("siba", SIZE, seed=5, epsilon=8 / 255, siba_k=100)
    changed = (trigger(pixels) - pixels).abs()
    assert trigger.k == 100 and trigger.params() == {"epsilon": pytest.approx(8 / 255), "k": 100}
    assert int((changed.amax(dim=(0, 1)) > 0).sum()) <= 100  # the same <= k pixels in every image and channel
    assert float(changed.max()) <= 8 / 255 + 1e-6 and float(changed.max()) > 0
    assert torch.equal(trigger.mask.flatten().nonzero(), (trigger.delta.abs().sum(1) > 0).flatten().nonzero())


def test_siba_mask_is_the_top_k_of_the_summed_gradient():
    from inspector.lab.siba import top_k_mask

    grad = torch.zeros(1, 3, 4, 4)
    grad[0, 0, 1, 2], grad[0, 1, 1, 2] = 0.3, -0.3  # summed in absolute value: 0.6
    grad[0, 2, 3, 3] = -0.5
    grad[0, :, 0, 0] = 0.1  # 0.3 over three channels
    mask = top_k_mask(grad, 2)
    assert mask.shape == (1, 1, 4, 4) and int(mask.sum()) == 2
    assert mask[0, 0, 1, 2] == 1 and mask[0, 0, 3, 3] == 1 and mask[0, 0, 0, 0] == 0


def test_adaptive_trigger_is_badclips_under_its_own_name(pixels):
    adaptive, badclip = make_trigger("badclip-adaptive", SIZE, seed=2), make_trigger("badclip", SIZE, seed=2)
    assert adaptive.attack == "badclip-adaptive" and isinstance(adaptive, AdditiveTrigger)
    assert torch.equal(adaptive(pixels), badclip(pixels))


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


def test_zoo_plans_are_disjoint_and_cover_what_the_test_zoo_needs():
    """The committed plans: the test zoo shares no seed with the dev zoo, varies recipes and covers every class."""
    from pathlib import Path

    from inspector.lab.zoo_builder import read_plan

    zoos = Path(__file__).resolve().parent.parent / "benchmarks" / "zoos"
    dev, first, test = (read_plan(zoos / f"{name}.plan.json") for name in ("dev", "test", "test2"))
    reference_seeds = set(range(3000, 3012)) | set(range(3100, 3112))
    assert not {i.seed for i in dev} & {i.seed for i in test} and not {i.seed for i in first} & {i.seed for i in test}
    assert not reference_seeds & {i.seed for i in dev + first + test}
    assert [i.target for i in test] != [i.target for i in first]  # its own draws
    assert [i.recipe for i in test] != [i.recipe for i in first]
    clean = [i for i in test if i.attack is None]
    backdoored = [i for i in test if i.attack is not None]
    assert len(clean) >= 20 and len(backdoored) >= 30
    issue18 = set(ATTACKS) - {"siba", "badclip-adaptive"}  # the lab's attacks when this zoo was planned
    assert {i.kind for i in clean} == {"coop", "cocoop"} and {i.attack for i in backdoored} == issue18
    assert {i.target for i in backdoored} == set(range(20))
    recipes = [i.recipe for i in clean]
    assert {r.get("n_ctx", 4) for r in recipes} == {4, 8, 16} and {r.get("optimizer", "adamw") for r in recipes} == {
        "adamw", "sgd"}
    assert any(r == {} for r in recipes) and any(r.get("ctx_init", "") is None for r in recipes)
    names = {i.name for i in test}
    assert all(i.base in names for i in backdoored)
