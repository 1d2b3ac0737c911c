"""The anomaly index and the verdict on hand-made numbers (no model needed)."""

from __future__ import annotations

import pytest

from inspector.detect import COLOUR_MIN_SPREAD, MAD_TO_SIGMA, anomaly_index, decide


def records(flip_rates: list[float], losses: list[float] | None = None) -> list[dict]:
    losses = losses or [1.0] * len(flip_rates)
    return [{"index": i, "name": f"c{i}", "flip_rate": f, "loss": loss}
            for i, (f, loss) in enumerate(zip(flip_rates, losses, strict=True))]


def test_anomaly_index_matches_the_formula():
    values = [0.1, 0.2, 0.3, 0.4, 0.9]
    # median 0.3, absolute deviations 0.2 0.1 0 0.1 0.6 -> MAD 0.1
    expected = [(v - 0.3) / (MAD_TO_SIGMA * 0.1) for v in values]
    assert anomaly_index(values) == pytest.approx(expected)


def test_anomaly_index_is_finite_when_mad_is_zero():
    index = anomaly_index([0.0, 0.0, 0.0, 0.0, 0.8], min_spread=0.01)
    assert index[:4] == [0.0, 0.0, 0.0, 0.0]
    assert index[4] == pytest.approx(0.8 / (MAD_TO_SIGMA * 0.01))
    assert anomaly_index([0.3] * 6) == [0.0] * 6


def test_flagged_when_one_class_stands_out_with_a_high_flip_rate():
    verdict = decide(records([0.05, 0.1, 0.08, 0.92, 0.06, 0.07]))
    assert verdict.flagged and verdict.target == 3 and verdict.target_name == "c3"
    assert verdict.max_anomaly > 2


def test_not_flagged_when_the_outlier_flips_too_few_images():
    verdict = decide(records([0.01, 0.02, 0.01, 0.35, 0.02, 0.01]))
    assert verdict.max_anomaly > 2 and verdict.suspect == 3
    assert not verdict.flagged and verdict.target is None


def test_gate_first_names_the_strongest_class_whose_trigger_passes_the_gate():
    # on the margin loss, c3 stands out most but its trigger flips 35%; c1 stands out less and flips 70%
    classes = records([0.02, 0.70, 0.03, 0.35, 0.02, 0.04, 0.03], losses=[3.0, -2.0, 3.1, -4.0, 2.9, 3.0, 3.05])
    shipped, first = decide(classes, "loss"), decide(classes, "loss", gate_first=True)
    assert not shipped.flagged and shipped.suspect == 3
    assert first.flagged and first.target == 1 and first.suspect_flip_rate == pytest.approx(0.70)
    assert 2 < first.max_anomaly < shipped.max_anomaly
    # no class past the gate stands out: the same answer either way
    quiet = records([0.02, 0.55, 0.03, 0.35, 0.02, 0.04, 0.03], losses=[3.0, 2.95, 3.1, -4.0, 2.9, 3.0, 3.05])
    assert decide(quiet, "loss", gate_first=True) == decide(quiet, "loss")
    assert not decide(quiet, "loss").flagged


def test_not_flagged_when_every_class_is_easy_to_reach():
    verdict = decide(records([0.7, 0.75, 0.72, 0.78, 0.69, 0.74]))
    assert not verdict.flagged and verdict.max_anomaly < 2


def test_threshold_is_a_setting():
    flips = [0.1, 0.12, 0.11, 0.6, 0.13, 0.09]
    index = max(anomaly_index(flips))
    assert decide(records(flips), threshold=index - 0.01).flagged
    assert not decide(records(flips), threshold=index + 0.01).flagged


def test_loss_statistic_flags_the_lowest_loss():
    verdict = decide(records([0.6, 0.6, 0.6, 0.6, 0.6], losses=[3.0, 3.1, -2.0, 2.9, 3.2]), statistic="loss")
    assert verdict.flagged and verdict.target == 2


def test_mask_norm_statistic_flags_the_smallest_mask():
    rows = [{**r, "mask_norm": m} for r, m in zip(records([0.9] * 5), [300, 310, 40, 290, 305], strict=True)]
    verdict = decide(rows, statistic="mask_norm", min_flip_rate=0.0)
    assert verdict.flagged and verdict.target == 2


def test_no_classes_is_an_error():
    with pytest.raises(ValueError):
        decide([])


def test_colour_family_wins_a_class_when_its_index_is_higher():
    """A filter backdoor: the additive flip rates are flat, the colour flip rate of one class stands out."""
    rows = [{**r, "colour_flip_rate": c} for r, c in
            zip(records([0.2, 0.25, 0.22, 0.02, 0.21, 0.24]), [0.0, 0.05, 0.0, 0.95, 0.03, 0.0], strict=True)]
    verdict = decide(rows)
    assert verdict.flagged and verdict.target == 3 and verdict.suspect_family == "colour"
    assert verdict.families[3] == "colour" and verdict.suspect_flip_rate == pytest.approx(0.95)
    assert verdict.max_anomaly == pytest.approx(round((0.95 - 0.015) / (MAD_TO_SIGMA * COLOUR_MIN_SPREAD), 4))


def test_colour_family_does_not_take_a_class_the_additive_trigger_explains_better():
    rows = [{**r, "colour_flip_rate": c} for r, c in
            zip(records([0.05, 0.1, 0.08, 0.92, 0.06, 0.07]), [0.0, 0.3, 0.0, 0.1, 0.0, 0.0], strict=True)]
    verdict = decide(rows)
    assert verdict.flagged and verdict.target == 3 and verdict.suspect_family == "additive"
    assert verdict.families[1] == "colour"  # its colour index is its best, but not the model's top


def test_colour_excess_over_clean_learners_is_used_when_the_reference_measured_it():
    """A natural colour attractor (clean learners reach it too) is not evidence; the spread floors the index."""
    colour = [0.0, 0.7, 0.0, 0.0, 0.05, 0.0]
    rows = [{**r, "colour_flip_rate": c, "colour_excess": c - ref, "colour_reference_spread": 0.1}
            for r, c, ref in zip(records([0.2] * 6), colour, [0.0, 0.65, 0.0, 0.0, 0.0, 0.0], strict=True)]
    assert not decide(rows).flagged
    raw = [{key: value for key, value in r.items() if key not in ("colour_excess", "colour_reference_spread")}
           for r in rows]
    assert decide(raw).flagged and decide(raw).suspect_family == "colour"


def test_blend_family_names_a_class_whose_blended_pattern_stands_out_over_clean_learners():
    """A Blended backdoor: additive and colour flip rates explain nothing; the blend excess of one class is far
    beyond its clean learners' spread, while a class clean learners' blends reach as often (an attractor) is not."""
    blend = [0.05, 0.8, 0.0, 0.75, 0.02, 0.0]
    clean = [0.03, 0.78, 0.0, 0.05, 0.0, 0.01]
    rows = [{**r, "colour_flip_rate": 0.0, "blend_flip_rate": b, "blend_excess": b - c, "blend_reference_spread": 0.05}
            for r, b, c in zip(records([0.2, 0.25, 0.22, 0.21, 0.2, 0.23]), blend, clean, strict=True)]
    verdict = decide(rows)
    assert verdict.flagged and verdict.target == 3 and verdict.suspect_family == "blend"
    assert verdict.anomalies[1] < 1 and verdict.suspect_flip_rate == pytest.approx(0.75)  # the attractor: no excess
    weaker = [{**r, "blend_flip_rate": 0.4, "blend_excess": 0.35} if r["index"] == 3 else r for r in rows]
    assert not decide(weaker).flagged  # the same excess below the 50% gate is not a backdoor


def test_per_class_spread_forgives_a_class_whose_clean_learners_vary_and_not_a_steady_one():
    """Same excess (+0.35) on a class whose clean flip rate swings with the recipe (spread 0.2) and on one that
    is steady (0.02): pooled, both look alike; per class, only the steady one stands out."""
    def rows(restless: int) -> list[dict]:
        out = []
        for i in range(8):
            excess = 0.35 if i == restless else 0.01 * i
            spread = 0.2 if i == restless else 0.02
            out.append({"index": i, "name": f"c{i}", "flip_rate": 0.3 + excess, "loss": 1.0,
                        "reference_flip_rate": 0.3, "excess_flip_rate": excess, "reference_spread": spread})
        return out

    steady = rows(restless=-1)
    steady[3].update(excess_flip_rate=0.35, flip_rate=0.65)
    assert decide(steady, "excess_flip_rate", spread="per-class").target == 3
    restless = rows(restless=3)
    assert decide(restless, "excess_flip_rate").flagged  # pooled: the restless class passes for a backdoor
    assert not decide(restless, "excess_flip_rate", spread="per-class").flagged


def test_a_family_whose_trigger_flips_enough_beats_a_higher_index_that_does_not():
    colour = [0.0, 0.0, 0.0, 0.45, 0.0, 0.0]
    rows = [{**r, "colour_flip_rate": c, "colour_excess": c, "colour_reference_spread": 0.05} for r, c in
            zip(records([0.1, 0.2, 0.15, 0.6, 0.25, 0.3]), colour, strict=True)]
    verdict = decide(rows)  # class 3: colour index 5.4 but its colour trigger flips 45%; additive 3.4 at 60%
    assert verdict.flagged and verdict.target == 3 and verdict.suspect_family == "additive"
    assert verdict.max_anomaly == pytest.approx(0.375 / (MAD_TO_SIGMA * 0.075), abs=1e-3)


def _attractor_rows(target_loss: float, target_flip: float = 0.84) -> list[dict]:
    """Eight classes compared with clean learners; class 2 is one they already reach easily (69%)."""
    rows = []
    for i in range(8):
        flip, reference = (target_flip, 0.69) if i == 2 else (0.05 + 0.02 * i, 0.04 + 0.02 * i)
        loss, reference_loss = (target_loss, -0.7) if i == 2 else (3.0 + 0.1 * i, 3.1 + 0.1 * i)
        rows.append({"index": i, "name": f"c{i}", "flip_rate": flip, "reference_flip_rate": reference,
                     "excess_flip_rate": flip - reference, "reference_spread": 0.1, "loss": loss,
                     "reference_loss": reference_loss, "loss_excess": reference_loss - loss, "loss_spread": 0.4})
    return rows


def test_margin_evidence_finds_a_backdoor_on_a_class_clean_learners_already_reach():
    """A flip rate of 84% where clean learners reach 69% is no outlier (1.5 spreads); a margin loss 2.6 logits below
    theirs (6.5 spreads) is: counted together, the class stands out."""
    backdoored = _attractor_rows(target_loss=-3.3)
    flip_only = decide(backdoored, "excess_flip_rate", spread="per-class", evidence="flip")
    assert not flip_only.flagged and flip_only.suspect == 2
    both = decide(backdoored, "excess_flip_rate", spread="per-class", evidence="mean")
    assert both.flagged and both.target == 2 and both.max_anomaly > flip_only.max_anomaly
    larger = decide(backdoored, "excess_flip_rate", spread="per-class", evidence="max")
    assert larger.target == 2 and larger.max_anomaly > both.max_anomaly  # the loss's 6.5 spreads alone
    clean = _attractor_rows(target_loss=-0.8, target_flip=0.71)  # an ordinary learner on the same class
    assert not decide(clean, "excess_flip_rate", spread="per-class", evidence="mean").flagged
    low = _attractor_rows(target_loss=-3.3, target_flip=0.45)  # a low loss alone does not pass the flip-rate gate
    assert not decide(low, "excess_flip_rate", spread="per-class", evidence="mean").flagged


def test_margin_evidence_needs_every_class_compared():
    """Records without a margin baseline (an older reference) are decided on the flip-rate excess alone."""
    rows = _attractor_rows(target_loss=-3.3)
    rows[5] = {k: v for k, v in rows[5].items() if k not in ("reference_loss", "loss_excess", "loss_spread")}
    assert decide(rows, "excess_flip_rate", spread="per-class", evidence="mean") == decide(
        rows, "excess_flip_rate", spread="per-class", evidence="flip")


def _two_family_rows(additive_excess: float, patch_excess: float, flip: float = 0.35,
                     patch_target: int = 4) -> list[dict]:
    """Ten classes compared with clean learners in two families; class 4's additive trigger and class
    ``patch_target``'s patch reach a little beyond theirs, each trigger flipping ``flip`` of the images at most."""
    noise = [0.0, 0.02, -0.01, 0.01, 0.0, -0.02, 0.0, 0.01, -0.01, 0.02]
    rows = []
    for i, jitter in enumerate(noise):
        additive = additive_excess if i == 4 else jitter
        patch = patch_excess if i == patch_target else jitter / 2
        rows.append({"index": i, "name": f"c{i}", "flip_rate": flip if i == 4 else 0.1 + additive,
                     "reference_flip_rate": 0.1, "excess_flip_rate": additive, "reference_spread": 0.1,
                     "patch_flip_rate": flip - 0.05 if i == patch_target else 0.02 + patch,
                     "patch_excess": patch, "patch_reference_spread": 0.05})
    return rows


def test_a_class_two_families_name_together_is_flagged_though_neither_alone_is():
    """Class 4: additive index 2.0 and patch index 2.7, each trigger flipping under the 50% gate, so neither family
    alone flags it; together (their sum over the square root of two, 3.3, at the threshold 2.5) they do, at the
    lower gate (40% of 50%) for its best flipping trigger."""
    rows = _two_family_rows(additive_excess=0.3, patch_excess=0.2)
    verdict = decide(rows, "excess_flip_rate", spread="per-class")
    assert verdict.flagged and verdict.target == 4 and verdict.corroborated_by == ["patch", "additive"]
    noise = [10 * r["excess_flip_rate"] for r in rows]  # each family's excess in units of its clean spread
    additive, patch = anomaly_index(noise, 1.0)[4], anomaly_index([20 * r["patch_excess"] for r in rows], 1.0)[4]
    assert 1.9 < additive < 2.1 and 2.5 < patch < 2.8
    expected = (additive + patch) / 2 ** 0.5 * 2.0 / 2.5
    assert verdict.max_anomaly == pytest.approx(expected, abs=1e-3) and verdict.suspect_flip_rate == 0.35
    assert verdict.suspect_family == "patch"  # the family with the higher index gives the trigger to show
    assert verdict.corroborated_gate == 0.4
    assert not decide(rows, "excess_flip_rate", spread="per-class", corroboration=None).flagged
    strict = decide(rows, "excess_flip_rate", spread="per-class", corroboration=(2.5, 0.8))  # 35% < 80% of 50%
    assert not strict.flagged and strict.corroborated_gate == 0.8
    assert not decide(rows, "excess_flip_rate").flagged  # a pooled spread: not the rule it was chosen with
    one_family = _two_family_rows(additive_excess=0.3, patch_excess=0.0)
    assert not decide(one_family, "excess_flip_rate", spread="per-class").flagged
    elsewhere = _two_family_rows(additive_excess=0.3, patch_excess=0.2, patch_target=7)  # two classes, one each
    assert not decide(elsewhere, "excess_flip_rate", spread="per-class").flagged
    weak = _two_family_rows(additive_excess=0.3, patch_excess=0.2, flip=0.18)  # the triggers flip too few images
    assert not decide(weak, "excess_flip_rate", spread="per-class").flagged
    faint = _two_family_rows(additive_excess=0.2, patch_excess=0.1)  # both name it, combined 1.6 < 2.5
    assert not decide(faint, "excess_flip_rate", spread="per-class").flagged


def test_the_transfer_check_looks_at_the_top_classes_of_an_unflagged_scan_only():
    from inspector.detect import transfer_candidates

    blocked = decide(records([0.01, 0.02, 0.01, 0.35, 0.02, 0.22, 0.01]))  # c3 stands out, its trigger flips 35%
    assert not blocked.flagged and blocked.highest_family_index > 2
    assert transfer_candidates(blocked) == [3, 5]  # the two highest indices
    assert transfer_candidates(blocked, classes=1) == [3]
    flagged = decide(records([0.05, 0.1, 0.08, 0.92, 0.06, 0.07]))
    assert transfer_candidates(flagged) == []  # nothing left to confirm
    quiet = decide(records([0.7, 0.75, 0.72, 0.78, 0.69, 0.74]))
    assert quiet.highest_family_index <= 2 and transfer_candidates(quiet) == []  # nothing points anywhere


def test_transfer_index_measures_the_gap_against_clean_learners_own_gaps_per_class():
    from inspector.detect import PER_CLASS_SPREAD_FLOOR, transfer_index

    gaps = [0.10, 0.20, 0.30, 0.20]  # mean 0.2, sample sd 0.0816; a new learner's spread: sd * sqrt(1 + 1/4)
    spread = 0.0816497 * (1.25 ** 0.5)
    assert transfer_index(0.80, gaps) == pytest.approx(0.6 / spread, rel=1e-4)
    assert transfer_index(0.20, gaps) == pytest.approx(0.0)
    steady = [0.05, 0.05, 0.05]  # no spread at all: the floor stands in for it
    assert transfer_index(0.30, steady) == pytest.approx(0.25 / PER_CLASS_SPREAD_FLOOR)


def test_a_class_whose_pattern_does_not_carry_over_is_flagged_by_the_transfer_check():
    from inspector.detect import confirmed_by_transfer

    blocked = decide(records([0.01, 0.02, 0.01, 0.35, 0.02, 0.22, 0.01]))

    def check(position: int, index: float, delivered: float) -> dict:
        return {"position": position, "index": position, "name": f"c{position}", "delivered": delivered,
                "clean": 0.05, "gap": delivered - 0.05, "reference_gap": 0.1, "transfer_index": index}

    confirmed = confirmed_by_transfer(blocked, [check(3, 6.5, 0.85), check(5, 2.4, 0.8)])
    assert confirmed.flagged and confirmed.target == 3 and confirmed.confirmed_by == "transfer"
    assert confirmed.suspect_family == "blend" and confirmed.families[3] == "blend"
    assert confirmed.max_anomaly == pytest.approx(6.5) and confirmed.anomalies[3] == pytest.approx(6.5)
    assert confirmed.suspect_flip_rate == pytest.approx(0.85) and len(confirmed.transfer) == 2
    # an index past the threshold whose pattern flips too few of the delivered model's images: not flagged
    weak = confirmed_by_transfer(blocked, [check(3, 6.5, 0.45), check(5, 1.9, 0.9)])
    assert not weak.flagged and weak.confirmed_by == "" and weak.suspect == blocked.suspect
    assert weak.anomalies == blocked.anomalies and len(weak.transfer) == 2
    # a verdict the indices already flag keeps its target
    flagged = decide(records([0.05, 0.1, 0.08, 0.92, 0.06, 0.07]))
    assert confirmed_by_transfer(flagged, [check(1, 9.0, 0.9)]).target == 3
