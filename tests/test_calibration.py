"""The probability of being backdoored: the shipped fit, where it applies, and that it grows with the evidence."""

from __future__ import annotations

import json

import pytest

from inspector.calibration import CALIBRATION_FILE, Calibration, backdoor_probability, shipped_calibration


def report(index: float, method: str = "inspector", statistic: str = "excess_flip_rate", classes: list | None = None,
           ) -> dict:
    return {"method": method, "statistic": statistic, "max_anomaly": index, "suspect_flip_rate": 0.6,
            "settings": {"classes": classes}}


def test_the_shipped_fit_was_made_on_the_dev_zoo_and_turns_near_the_threshold() -> None:
    record = json.loads(CALIBRATION_FILE.read_text())
    assert "dev zoo" in record["fitted_on"]
    fit = shipped_calibration()
    assert fit.probability(0.0, 0.0) < 0.2 < 0.8 < fit.probability(5.0, 0.9)
    turns = next(x / 10 for x in range(0, 100) if fit.probability(x / 10, 0.6) >= 0.5)
    assert 1.0 <= turns <= 4.0  # where p crosses one half, near the verdict's threshold of 2


def test_the_probability_grows_with_the_index_and_is_given_only_where_the_fit_applies() -> None:
    values = [backdoor_probability(report(x)) for x in (-1.0, 0.0, 1.0, 2.0, 3.0, 8.0, 1e6)]
    assert values == sorted(values) and values[0] == values[1] and 0 <= values[0] and values[-1] <= 1
    assert backdoor_probability(report(3.0, method="neural-cleanse", statistic="mask_norm")) is None
    assert backdoor_probability(report(3.0, statistic="flip_rate")) is None  # no clean reference: another index
    assert backdoor_probability(report(3.0, classes=[3, 5])) is None  # some classes only: another schedule


def test_a_fit_with_two_inputs_weighs_both() -> None:
    fit = Calibration(("index", "flip_rate"), (1.0, 2.0), -3.0, "hand-made")
    assert fit.probability(1.0, 1.0) == pytest.approx(0.5)
    assert fit.probability(1.0, 0.0) == pytest.approx(1 / (1 + 2.718281828459045 ** 2))
    assert Calibration(("log_index",), (1.0,), 0.0, "hand-made").probability(0.0, 0.0) == pytest.approx(0.5)
