"""The analyst's views of what a trigger does (inspector/effects.py), on a real scan of a demo backdoor."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from inspector import effects
from inspector.data import load_shipped_pool
from inspector.figures import compare_bars, transition_heatmap
from inspector.invert import ScanConfig, run_scan
from inspector.pipeline import open_delivered
from inspector.zoo import resolve_model


@pytest.fixture(scope="module")
def scanned() -> dict[str, Any]:
    """badclip-cocoop (target balloon) scanned on 4 classes, balloon among them."""
    delivered = open_delivered(resolve_model("badclip-cocoop"), device="cpu")
    model = delivered.model
    pool = load_shipped_pool(model.backbone.image_size).pixels
    names = list(model.class_names)
    classes = tuple(sorted(names.index(n) for n in ("clock", "star", "map", "balloon")))
    result = run_scan(model, pool, ScanConfig(pool_size=400, classes=classes))
    return {"delivered": delivered, "model": model, "pool": pool, "result": result,
            "target": delivered.truth.target, "other": names.index("star")}


def test_the_heatmap_counts_every_held_out_image_once_and_a_backdoor_sends_most_rows_to_its_target(scanned):
    model, result, pool = scanned["model"], scanned["result"], scanned["pool"]
    moved = effects.transitions(model, result, pool, scanned["target"])
    held_out = result.held_out(pool)
    assert moved.images == len(held_out) == result.held_out_images
    assert moved.counts.shape == (len(model.class_names),) * 2
    assert moved.flip_rate() == pytest.approx(result.record(scanned["target"])["flip_rate"], abs=0.02)
    assert moved.sent_to() >= moved.flip_rate() > 0.8
    other = effects.transitions(model, result, pool, scanned["other"])
    assert other.sent_to() < moved.sent_to() - 0.3  # a natural class's trigger moves far fewer images to it
    # rows: predicted clean, the same with any trigger
    assert torch.equal(moved.counts.sum(dim=1), other.counts.sum(dim=1))


def test_the_feature_map_shows_triggered_images_pulled_toward_the_target_text_feature(scanned):
    model, result, pool = scanned["model"], scanned["result"], scanned["pool"]
    features = effects.feature_map(model, result, pool, scanned["target"], count=60)  # of the 80 held out
    assert features.clean.shape == features.triggered.shape == (60, 2)
    assert features.text.shape == (len(model.class_names), 2)
    assert 0 < features.explained[1] <= features.explained[0] < 1
    clean, triggered = features.distance_to_class()
    assert triggered < 0.8 * clean
    assert sum(p == scanned["target"] for p in features.triggered_predicted) > 0.8 * 60
    assert sum(p == scanned["target"] for p in features.clean_predicted) < 0.5 * 60


def test_a_picture_probed_with_the_attackers_trigger_goes_to_the_target_and_its_top_classes_are_ranked(scanned):
    model, result, pool, target = scanned["model"], scanned["result"], scanned["pool"], scanned["target"]
    truth = scanned["delivered"].truth.trigger
    answers = []
    for picture in result.held_out(pool)[:8]:
        probes = effects.probe(model, picture, [("reconstructed", result.trigger(target)), ("attacker", truth)],
                               top=3)
        assert [p.condition for p in probes] == ["clean", "reconstructed", "attacker"]
        for p in probes:
            values = [v for _, v in p.top]
            assert values == sorted(values, reverse=True) and 0 < sum(values) <= 1 + 1e-5 and len(values) == 3
        assert torch.allclose(probes[0].picture, picture) and not torch.allclose(probes[2].picture, picture)
        answers.append([p.top[0][0] for p in probes])
    target_name = model.class_names[target]
    assert sum(a[2] == target_name for a in answers) >= 6  # the real trigger works on most unrelated pictures
    assert sum(a[1] == target_name for a in answers) >= 6  # and so does the one the scan reconstructed
    assert sum(a[0] == target_name for a in answers) <= 4


def test_figures_leave_out_empty_classes_and_compare_two_scans_class_by_class(scanned):
    model, result, pool = scanned["model"], scanned["result"], scanned["pool"]
    moved = effects.transitions(model, result, pool, scanned["target"])
    heatmap = transition_heatmap(moved.class_names, moved.counts.tolist(), moved.trigger_class)
    shown_rows, shown_columns = list(heatmap.data[0].y), list(heatmap.data[0].x)
    assert set(shown_rows) == {model.class_names[a] for a in range(len(model.class_names)) if moved.counts[a].sum()}
    assert model.class_names[scanned["target"]] in shown_columns
    assert sum(sum(row) for row in heatmap.data[0].z) == moved.images
    records = result.classes
    figure = compare_bars(result.class_names, [("A", records, result.verdict.anomalies, 0.5, "balloon"),
                                                ("B", records[:2], result.verdict.anomalies[:2], 0.5, None)])
    assert [trace.name for trace in figure.data] == ["A (flagged: balloon)", "B (not flagged)"]
    b_values = dict(zip(figure.data[1].x, figure.data[1].y, strict=True))
    assert b_values[records[0]["name"]] == records[0]["flip_rate"] and b_values[records[3]["name"]] is None
