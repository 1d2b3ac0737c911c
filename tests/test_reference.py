"""inspector/reference.py and the excess flip rate: a class every clean learner finds easy to reach is
not a backdoor; a class that flips far more often than in clean learners is."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from inspector.data import load_shipped_pool
from inspector.detect import decide
from inspector.errors import InputError
from inspector.invert import ScanConfig, run_scan
from inspector.prompts import open_model
from inspector.reference import Reference, reference_for, shipped_reference_path
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


def test_shipped_reference_applies_only_where_it_was_measured():
    model = open_model(resolve_model("clean-coop"), device="cpu")
    rates, why = reference_for(model, ScanConfig(), "shipped")
    assert rates is not None and set(rates) == set(model.class_names) and "4 clean coop learners" in why
    reference = Reference.read(shipped_reference_path("pocket-clip", "coop"))
    assert not set(reference.seeds) & set(range(120))  # no demo or benchmark-zoo model is its own reference
    assert max(rates, key=rates.get) == "file icon"  # the natural attractor the reference is there for
    for config, pool, reason in [(ScanConfig(epsilon=8 / 255), "shipped", "epsilon 8.0/255"),
                                 (ScanConfig(), "user pool", "OOD pool user pool")]:
        rates, why = reference_for(model, config, pool)
        assert rates is None and reason in why
    assert reference_for(model, ScanConfig(), "shipped", "none")[0] is None
    assert reference_for(model, ScanConfig(method="neural-cleanse"), "shipped")[0] is None
    cocoop = open_model(resolve_model("clean-cocoop"), device="cpu")
    with pytest.raises(InputError, match="learner kind cocoop"):  # asked for explicitly: a mismatch is an error
        reference_for(cocoop, ScanConfig(), "shipped", str(shipped_reference_path("pocket-clip", "coop")))


def test_a_broken_reference_file_is_a_clear_error(tmp_path):
    bad = tmp_path / "ref.json"
    bad.write_text(json.dumps({"format": "inspector.reference", "kind": "coop"}))
    with pytest.raises(InputError, match="cannot be used"):
        Reference.read(bad)


def test_a_scan_with_the_reference_records_the_excess_and_decides_on_it():
    small_pool = load_shipped_pool().pixels
    model = open_model(resolve_model("clean-coop"), device="cpu")
    config = ScanConfig(classes=(0, 7, 11, 16), pool_size=160)
    rates, why = reference_for(model, config, "shipped")
    result = run_scan(model, small_pool, replace(config, reference=rates, reference_from=why))
    assert result.verdict.statistic == "excess_flip_rate"
    for record in result.classes:
        assert record["excess_flip_rate"] == pytest.approx(record["flip_rate"] - rates[record["name"]], abs=1e-4)
    with pytest.raises(InputError, match="needs a clean reference"):
        run_scan(model, small_pool, replace(config, statistic="excess_flip_rate"))
