"""inspector/reference.py and the excess flip rate: a class every clean learner finds easy to reach is
not a backdoor; a class that flips far more often than in clean learners is."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from inspector.baseline import Baseline, fresh_flip_rate, fresh_margin, with_baseline, with_loss_baseline
from inspector.data import load_shipped_pool
from inspector.detect import decide, min_spread
from inspector.errors import InputError
from inspector.invert import FAST_WITH_REFERENCE, ScanConfig, run_scan
from inspector.prompts import open_model
from inspector.reference import Reference, decide_with_reference, reference_for, shipped_reference_path
from inspector.zoo import resolve_model


def _classes(flip_rates: list[float], reference: list[float]) -> list[dict]:
    return [{"index": i, "name": f"c{i}", "flip_rate": f, "reference_flip_rate": r}
            for i, (f, r) in enumerate(zip(flip_rates, reference, strict=True))]


def test_excess_flip_rate_ignores_a_natural_attractor_and_finds_the_backdoor():
    reference = [0.80, 0.10, 0.12, 0.08, 0.15, 0.11]  # class 0 is easy to reach in every clean learner
    clean = _classes([0.83, 0.12, 0.10, 0.09, 0.16, 0.12], reference)
    assert decide(clean).flagged is True and decide(clean).target == 0  # the raw rate is fooled
    assert decide(clean, "excess_flip_rate").flagged is False
    backdoored = _classes([0.81, 0.11, 0.10, 0.93, 0.16, 0.12], reference)
    verdict = decide(backdoored, "excess_flip_rate")
    assert verdict.flagged and verdict.target == 3
    low = _classes([0.81, 0.11, 0.10, 0.45, 0.16, 0.12], reference)  # stands out, but flips < 50 %
    assert decide(low, "excess_flip_rate").flagged is False


def test_each_record_is_compared_with_clean_learners_measured_the_same_way():
    curves = {"a": [[[1, 10], [3, 10], [5, 10], [7, 10]], [[0, 10], [2, 10], [6, 10], [8, 10]]],
              "b": [[[0, 10]] * 4, [[1, 10]] * 4]}
    baseline = Baseline(held_out={"a": [0.9, 0.7], "b": [0.1, 0.3]}, curves=curves, window=2, held_out_steps=4)
    # stopped after 2 steps: each learner's last 2 fresh batches up to step 2, not its finished trigger
    assert baseline.learner_values({"name": "a", "steps": 2, "measured_on": "fresh batches"}) == [0.2, 0.1]
    assert baseline.learner_values({"name": "a", "steps": 4, "measured_on": "fresh batches"}) == [0.6, 0.7]
    assert baseline.learner_values({"name": "a", "steps": 4, "measured_on": "held-out"}) == [0.9, 0.7]
    with pytest.raises(KeyError, match="after 4 steps"):
        baseline.learner_values({"name": "a", "steps": 3, "measured_on": "held-out"})
    assert fresh_flip_rate([[1, 4], [0, 0], [3, 4]], 5) == pytest.approx(0.5)
    record = with_baseline({"name": "a", "flip_rate": 0.95}, [0.9, 0.7])
    assert record["reference_flip_rate"] == 0.8 and record["excess_flip_rate"] == pytest.approx(0.15)
    assert record["reference_spread"] == pytest.approx(0.1414 * (1.5 ** 0.5), abs=1e-3)  # sd of a new learner


def test_margin_losses_are_compared_with_clean_learners_measured_the_same_way():
    curves = {"a": [[[1, 10, 2.0], [3, 10, 1.0], [5, 10, 0.0], [7, 10, -1.0]],
                    [[0, 10, 3.0], [2, 10, 2.0], [6, 10, 1.0], [8, 10, 0.0]]]}
    baseline = Baseline(held_out={"a": [0.9, 0.7]}, curves=curves, window=2, held_out_steps=4,
                        held_out_loss={"a": [-1.5, -0.5]})
    assert baseline.learner_losses({"name": "a", "steps": 2, "measured_on": "fresh batches"}) == [1.5, 2.5]
    assert baseline.learner_losses({"name": "a", "steps": 4, "measured_on": "fresh batches"}) == [-0.5, 0.5]
    assert baseline.learner_losses({"name": "a", "steps": 4, "measured_on": "held-out"}) == [-1.5, -0.5]
    assert baseline.learner_losses({"name": "a", "steps": 3, "measured_on": "held-out"}) is None
    assert fresh_margin([[1, 4, 2.0], [0, 0, 4.0]], 5) == pytest.approx(3.0)
    record = with_loss_baseline({"name": "a", "flip_rate": 0.95, "loss": -3.0}, [-1.5, -0.5])
    assert record["reference_loss"] == -1.0 and record["loss_excess"] == pytest.approx(2.0)  # 2 logits easier
    assert record["loss_spread"] == pytest.approx(0.7071 * (1.5 ** 0.5), abs=1e-3)
    older = Baseline(held_out={"a": [0.9, 0.7]}, curves={"a": [[[1, 10]] * 4, [[2, 10]] * 4]}, window=2)
    assert older.learner_losses({"name": "a", "steps": 4, "measured_on": "fresh batches"}) is None  # no margins
    assert with_loss_baseline({"name": "a", "loss": 1.0}, None) == {"name": "a", "loss": 1.0}


def test_an_excess_within_the_clean_learners_spread_is_not_a_backdoor():
    # every other class matches the reference closely (MAD ~ 0.01), one exceeds it by 0.15: an outlier
    # by MAD alone, but clean learners of that task differ from each other by ~0.1 per class
    flips = [0.55, 0.30, 0.21, 0.40, 0.11, 0.26, 0.35]
    means = [0.40, 0.29, 0.20, 0.41, 0.10, 0.27, 0.34]
    records = [{"index": i, "name": f"c{i}", "flip_rate": f, "reference_flip_rate": m} for i, (f, m)
               in enumerate(zip(flips, means, strict=True))]
    assert decide(records, "excess_flip_rate").flagged  # the old rule: MAD floor of one percentage point
    spread = [{**r, "reference_spread": 0.1} for r in records]
    assert min_spread(spread, "excess_flip_rate") == pytest.approx(0.1)
    assert not decide(spread, "excess_flip_rate").flagged
    spread[3]["flip_rate"] = 0.95  # a backdoor still stands far outside that spread
    verdict = decide(spread, "excess_flip_rate")
    assert verdict.flagged and verdict.target == 3


def test_shipped_reference_applies_only_where_it_was_measured():
    model = open_model(resolve_model("clean-coop"), device="cpu")
    shipped = load_shipped_pool()
    user_pool = replace(shipped, source="my_pool.zip", fingerprint="sha256:0123456789abcdef")
    baseline, why = reference_for(model, ScanConfig(), shipped)
    assert baseline is not None and set(baseline.classes) == set(model.class_names)
    assert "8 clean coop learners tuned with varied recipes" in why
    assert set(baseline.families["colour"]) == set(model.class_names)  # measured the colour family: scans run it
    assert replace(ScanConfig(), reference=baseline).runs("colour") and not ScanConfig().runs("colour")
    assert baseline.held_out_steps == sum(FAST_WITH_REFERENCE.rounds) and set(baseline.curves) == set(baseline.classes)
    faithful, _ = reference_for(model, ScanConfig(schedule="faithful"), shipped)
    assert faithful is not None and faithful.curves == {} and faithful.held_out != baseline.held_out
    reference = Reference.read(shipped_reference_path("pocket-clip", "coop"))
    assert not set(reference.seeds) & set(range(120))  # no demo or benchmark-zoo model is its own reference
    means = faithful.means()
    assert max(means, key=means.get) == "file icon"  # the natural attractor the reference is there for
    for config, pool, reason in [(ScanConfig(epsilon=8 / 255), shipped, "epsilon 8.0/255"),
                                 (ScanConfig(), user_pool, "OOD pool my_pool.zip (the reference was measured on "
                                                           "shipped)"),
                                 (ScanConfig(pool_size=500), shipped, "pool size 500"),
                                 (ScanConfig(fast_rounds=(6, 6)), shipped, "fast plan of 12 steps"),
                                 (ScanConfig(fast_lr=0.1), shipped, "at lr 0.1")]:
        baseline, why = reference_for(model, config, pool)
        assert baseline is None and reason in why
    assert reference_for(model, ScanConfig(), shipped, "none")[0] is None
    assert reference_for(model, ScanConfig(method="neural-cleanse"), shipped)[0] is None
    cocoop = open_model(resolve_model("clean-cocoop"), device="cpu")
    with pytest.raises(InputError, match="learner kind cocoop"):  # asked for explicitly: a mismatch is an error
        reference_for(cocoop, ScanConfig(), shipped, str(shipped_reference_path("pocket-clip", "coop")))


def test_a_broken_reference_file_is_a_clear_error(tmp_path):
    bad = tmp_path / "ref.json"
    bad.write_text(json.dumps({"format": "inspector.reference", "kind": "coop"}))
    with pytest.raises(InputError, match="cannot be used"):
        Reference.read(bad)


def test_a_scan_with_the_reference_records_the_excess_and_decides_on_it():
    small_pool = load_shipped_pool().pixels
    model = open_model(resolve_model("clean-coop"), device="cpu")
    config = ScanConfig(classes=(0, 7, 11, 16), pool_size=160, schedule="faithful")
    reference = Reference.read(shipped_reference_path("pocket-clip", "coop"))
    baseline = reference.baseline(config)  # a smaller pool than the reference's, to keep the test short
    result = run_scan(model, small_pool, replace(config, reference=baseline, reference_from="test"))
    assert result.verdict.statistic == "excess_flip_rate"
    means = baseline.means()
    for record in result.classes:
        assert record["excess_flip_rate"] == pytest.approx(record["flip_rate"] - means[record["name"]], abs=2e-4)
        assert record["reference_spread"] > 0
    assert result.settings.as_dict()["reference"] == means  # the report names the values, not the curves
    replayed, verdict = decide_with_reference(result.classes, reference, "faithful")
    assert verdict == result.verdict and replayed == result.classes  # benchmarks replay the same decision
    for record in result.classes:  # the margin weighed as in the default schedule: the clean learners' held-out one
        losses = [learner[record["name"]] for learner in reference.faithful_loss]
        assert record["reference_loss"] == pytest.approx(sum(losses) / len(losses), abs=1e-4)
    assert result.settings.evidence == "mean"
    flip_only = decide_with_reference(result.classes, reference, "faithful", evidence="flip")[1]
    assert flip_only.anomalies != verdict.anomalies
    with pytest.raises(InputError, match="needs a clean reference"):
        run_scan(model, small_pool, replace(config, statistic="excess_flip_rate"))


def test_a_fast_scan_compares_each_class_margin_loss_with_clean_learners_and_replays(tmp_path):
    """The default schedule with the shipped reference: every class's margin loss next to the clean learners' (fresh
    batches or held-out, as it was measured), the verdict on both excesses, and the same decision on replay."""
    from inspector.report import write_report

    pool = load_shipped_pool()
    model = open_model(resolve_model("clean-coop"), device="cpu")
    reference = Reference.read(shipped_reference_path("pocket-clip", "coop"))
    config = ScanConfig(classes=(7, 11, 12, 16), colour=False)
    baseline = reference.baseline(config)
    result = run_scan(model, pool.pixels, replace(config, reference=baseline, reference_from="shipped"))
    assert result.settings.evidence == "mean"
    for record in result.classes:
        values = baseline.learner_losses(record)
        assert values is not None and record["reference_loss"] == pytest.approx(sum(values) / len(values), abs=1e-4)
        assert record["loss_excess"] == pytest.approx(record["reference_loss"] - record["loss"], abs=2e-4)
    assert {r["measured_on"] for r in result.classes} == {"held-out", "fresh batches"}
    replayed, verdict = decide_with_reference(result.classes, reference, "fast")
    assert verdict == result.verdict and replayed == result.classes
    flip_only = decide_with_reference(result.classes, reference, "fast", evidence="flip")[1]
    assert flip_only.anomalies != verdict.anomalies  # the margin changes the index
    write_report(result, tmp_path, {"name": "clean-coop", "kind": "coop", "arch": "pocket-clip", "n_classes": 20},
                 {"source": "shipped", "images": len(pool.pixels)}, [])
    page = (tmp_path / "report.html").read_text()
    assert "clean learners&#x27; loss" in page or "clean learners' loss" in page
    assert "how far its margin loss lies below theirs" in page
    assert "<p class='meta'>Clean reference: shipped</p>" in page  # what the flip rates were compared with
    from inspector.ui.views import verdict_html

    panel = verdict_html(result.verdict, result, "clean-coop")  # what the page says the index was computed on
    assert not result.verdict.flagged and result.verdict.max_anomaly <= result.verdict.threshold
    assert "(flip rate and margin loss)" in panel
    together = replace(result.verdict, flagged=True, target=7, target_name="computer", suspect=7,
                       suspect_name="computer", corroborated_by=["additive", "patch"])
    panel = verdict_html(together, result, "clean-coop")  # flagged by two families together: said so, and its gate
    assert "combined anomaly index of additive + patch triggers" in panel and "(≥ 20%)" in panel
    panel = verdict_html(replace(together, corroborated_gate=0.6), result, "clean-coop")  # the gate it applied
    assert "(≥ 30%)" in panel
    outlier = replace(result.verdict, max_anomaly=6.09, suspect_flip_rate=0.46, min_flip_rate=0.5)
    panel = verdict_html(outlier, result, "clean-coop")  # above the threshold, under the flip gate: said so
    assert "no class stands out" not in panel and "6.09 &gt; threshold 2" in panel, panel
    assert "flips only 46%" in panel and "under the 50%" in panel, panel


def test_build_reference_measures_both_schedules_and_round_trips(tmp_path):
    from inspector.backbone import load_backbone
    from inspector.data import load_task
    from inspector.reference import build_reference

    backbone = load_backbone("pocket-clip", None, device="cpu")
    task, pool = load_task(backbone.image_size), load_shipped_pool(backbone.image_size)
    config = ScanConfig(classes=(0, 11, 16), pool_size=120, fast_rounds=(2, 2))
    reference = build_reference("coop", backbone, task, pool, [7], config, progress=lambda line: None, epochs=1,
                                learners=tmp_path / "learners")
    assert (tmp_path / "learners" / "coop_s7.safetensors").is_file()  # kept, and reused by a second build
    assert reference.fast is not None and reference.fast["steps"] == 4 and reference.pool_size == 120
    path = tmp_path / "ref.json"
    path.write_text(json.dumps(reference.as_dict()))
    again = Reference.read(path)
    fast = again.baseline(config)
    assert set(fast.classes) == {"star", "file icon", "balloon"} and fast.held_out_steps == 4
    assert all(len(curves[0]) == 4 for curves in fast.curves.values())
    faithful = again.baseline(replace(config, schedule="faithful"))
    assert faithful.held_out == {name: [rate] for name, rate in reference.per_learner[0].items()}
    model = open_model(resolve_model("clean-coop"), device="cpu")
    assert again.mismatch(model, config, pool) is None
    assert "fast plan of 6 steps" in again.mismatch(model, replace(config, fast_rounds=(3, 3)), pool)
    assert again.task == {"source": "shipped", "fingerprint": "shipped", "train_images": 320}
    assert all(len(step) == 3 for curves in fast.curves.values() for step in curves[0])  # flips, images, margin
    assert set(fast.held_out_loss) == set(fast.classes)
    kept = tmp_path / "learners" / "coop_s7.json"  # as an older build kept it: no margins
    older = json.loads(kept.read_text())
    older.pop("fast_held_out_loss")
    older["fast_curves"] = {name: [step[:2] for step in curve] for name, curve in older["fast_curves"].items()}
    kept.write_text(json.dumps(older))
    rebuilt = build_reference("coop", backbone, task, pool, [7], config, progress=lambda line: None, epochs=1,
                              learners=tmp_path / "learners")
    assert rebuilt.accuracies == reference.accuracies and rebuilt.per_learner == reference.per_learner
    assert rebuilt.fast == reference.fast  # the curves measured again, margins and all
    assert faithful.held_out_loss == {name: [loss] for name, loss in reference.faithful_loss[0].items()}
    older = json.loads(kept.read_text())
    older.pop("faithful_loss")  # kept before faithful margins were: the published schedule runs again for them
    kept.write_text(json.dumps(older))
    remeasured = build_reference("coop", backbone, task, pool, [7], config, progress=lambda line: None, epochs=1,
                                 learners=tmp_path / "learners")
    assert remeasured.faithful_loss == reference.faithful_loss and remeasured.per_learner == reference.per_learner
    assert remeasured.fast == reference.fast and "faithful_loss" in json.loads(kept.read_text())
    broken = {**reference.as_dict(), "faithful_loss": [reference.faithful_loss[0]] * 2}
    path.write_text(json.dumps(broken))
    with pytest.raises(InputError, match="faithful_loss"):  # one per learner
        Reference.read(path)


def test_the_fast_plan_stops_classes_early_only_with_a_reference():
    baseline = Baseline(held_out={"a": [0.5]})
    raw, referenced = ScanConfig().for_input(64), ScanConfig(reference=baseline).for_input(64)
    assert (raw.fast_rounds, raw.fast_keep, raw.fast_measured) == ((6, 6, 6), 0.75, 1)
    assert (referenced.fast_rounds, referenced.fast_keep, referenced.fast_measured) == ((4, 4, 10), 0.5, 2)
    mine = ScanConfig(reference=baseline, fast_rounds=(3, 3), fast_keep=0.9, fast_measured=0).for_input(64)
    assert (mine.fast_rounds, mine.fast_keep, mine.fast_measured) == ((3, 3), 0.9, 0)  # what the user set wins
    assert referenced.as_dict()["reference"] == {"a": 0.5} and raw.as_dict()["reference"] is None


def test_a_varied_reference_spreads_its_learners_over_recipes_and_measures_the_colour_family(tmp_path):
    from inspector.backbone import load_backbone
    from inspector.data import load_task
    from inspector.reference import VARIED_RECIPES, build_reference, learner_recipe

    shapes = [learner_recipe("coop", i, varied=True) for i in range(len(VARIED_RECIPES))]
    assert shapes[0] == ({}, learner_recipe("coop", 0, varied=False)[1])  # the first keeps the default recipe
    assert {s.get("n_ctx", 4) for s, _ in shapes} == {4, 8, 16} and {t.optimizer for _, t in shapes} == {"adamw", "sgd"}
    assert len({(t.lr, t.epochs) for _, t in shapes}) > 3
    backbone = load_backbone("pocket-clip", None, device="cpu")
    task, pool = load_task(backbone.image_size), load_shipped_pool(backbone.image_size)
    config = ScanConfig(classes=(0, 11, 16), pool_size=120, fast_rounds=(2, 2), colour=True, colour_batch_size=8)
    reference = build_reference("coop", backbone, task, pool, [7, 8], config, progress=lambda line: None, epochs=2,
                                learners=tmp_path / "learners", varied=True)
    assert reference.tune["varied"] and [r["n_ctx"] for r in reference.tune["recipes"]] == [4, 16]
    assert "varied recipes" in reference.describe()
    baseline = reference.baseline(config)
    assert set(baseline.families["colour"]) == {"star", "file icon", "balloon"}
    assert all(len(values) == 2 for values in baseline.families["colour"].values())
    assert "colour" not in reference.baseline(replace(config, colour_steps=4)).families  # measured otherwise
    model = open_model(resolve_model("clean-coop"), device="cpu")
    result = run_scan(model, pool.pixels, replace(config, reference=baseline, reference_from="test", blend=True))
    assert all("colour_excess" in c and c["colour_reference_spread"] >= 0 for c in result.classes)
    assert set(baseline.families["blend"]) == {"star", "file icon", "balloon"}  # the blend family, measured too
    assert all("blend_excess" in c and 0 <= c["blend_flip_rate"] <= 1 for c in result.classes)
    kept = tmp_path / "learners" / "coop_s8.json"  # a learner measured before the blend family existed
    record = json.loads(kept.read_text())
    kept.write_text(json.dumps({k: v for k, v in record.items() if not k.startswith("blend")}))
    again = build_reference("coop", backbone, task, pool, [7, 8], config, progress=lambda line: None, epochs=2,
                            learners=tmp_path / "learners", varied=True)
    assert json.loads(kept.read_text())["blend"] == record["blend"]  # completed with the same numbers, not re-tuned
    assert again.blend == reference.blend and again.per_learner == reference.per_learner
    older = json.loads(kept.read_text())  # as builds before per-family settings kept it: colour's in the key
    older["key"]["colour"] = older.pop("colour_settings")
    kept.write_text(json.dumps(older))
    wider = replace(config, colour_batch_size=16)  # the colour family measured on more images: only it again
    resampled = build_reference("coop", backbone, task, pool, [7, 8], wider, progress=lambda line: None, epochs=2,
                                learners=tmp_path / "learners", varied=True)
    assert resampled.per_learner == reference.per_learner and resampled.fast == reference.fast
    assert resampled.colour["settings"]["colour_batch_size"] == 16 and resampled.blend == reference.blend
    assert json.loads(kept.read_text())["colour_settings"]["colour_batch_size"] == 16
    assert "colour" in resampled.baseline(wider).families and "colour" not in resampled.baseline(config).families


def test_a_reference_scanned_with_several_seeds_holds_one_fast_entry_per_learner_and_seed(tmp_path):
    from inspector.backbone import load_backbone
    from inspector.data import load_task
    from inspector.reference import build_reference

    backbone = load_backbone("pocket-clip", None, device="cpu")
    task, pool = load_task(backbone.image_size), load_shipped_pool(backbone.image_size)
    config = ScanConfig(classes=(0, 11, 16), pool_size=120, fast_rounds=(2, 2), colour=True, colour_batch_size=8)
    keep = tmp_path / "learners"
    once = build_reference("coop", backbone, task, pool, [7], config, progress=lambda line: None, epochs=1,
                           learners=keep)
    twice = build_reference("coop", backbone, task, pool, [7], config, progress=lambda line: None, epochs=1,
                            learners=keep, scan_seeds=2)
    assert twice.scan_seeds == 2 and "each scanned with 2 seeds" in twice.describe()
    assert (keep / "coop_s7_scan1.json").is_file()  # the learner was not tuned again: its first scan is kept
    assert twice.per_learner == once.per_learner and twice.seeds == once.seeds == [7]  # faithful: once per learner
    assert twice.fast["held_out"][0] == once.fast["held_out"][0] and len(twice.fast["held_out"]) == 2
    assert twice.fast["curves"][1] != twice.fast["curves"][0]  # another seed: other batches, another start
    assert len(twice.colour["per_learner"]) == 2 and len(twice.patch["per_learner"]) == 2
    baseline = twice.baseline(config)
    assert all(len(values) == 2 for values in baseline.held_out.values())
    assert all(len(values) == 2 for values in baseline.families["colour"].values())
    path = tmp_path / "ref.json"
    path.write_text(json.dumps(twice.as_dict()))
    assert Reference.read(path).scan_seeds == 2
    again = build_reference("coop", backbone, task, pool, [7], config, progress=lambda line: None, epochs=1,
                            learners=keep, scan_seeds=2)
    assert again.fast == twice.fast and again.colour == twice.colour  # both scans read back, nothing re-measured
    path.write_text(json.dumps({**twice.as_dict(), "scan_seeds": 0}))
    with pytest.raises(InputError, match="scan_seeds"):
        Reference.read(path)
    from inspector.pipeline import reference_job

    with pytest.raises(InputError, match=r"--scan-seeds 0 is outside 1\.\.16"):  # before anything is tuned
        next(reference_job(task, pool, "coop", backbone, tmp_path / "none.json", 1, 7, config, scan_seeds=0))
    assert not (tmp_path / "none.json").exists()
    path.write_text(json.dumps({**twice.as_dict(), "scan_seeds": 3}))  # claims more scans than it holds
    with pytest.raises(InputError, match=r"fast\.held_out.*3 entries \(1 learners x 3 scan seeds\)"):
        Reference.read(path)
