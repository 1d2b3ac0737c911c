"""A probability of being backdoored from a scan's top anomaly index (issue 22; TrojAI's contract: one number per
model, judged by cross-entropy and AUROC).

The map is a logistic fit made on the dev zoo by ``benchmarks/calibration.py`` and shipped as ``calibration.json``
beside this module; only scans like the ones it was fitted on (the inspector method with a clean reference, whose
index reads the excess over clean learners, over every class) get a probability.
"""

from __future__ import annotations

import functools
import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

CALIBRATION_FILE = Path(__file__).resolve().parent / "calibration.json"


INPUTS = {
    "index": lambda index, flip: max(index, 0.0),  # the top anomaly index, floored at 0
    "log_index": lambda index, flip: math.log1p(max(index, 0.0)),
    "flip_rate": lambda index, flip: flip,  # the suspect class's flip rate on held-out OOD images
}


def features(max_anomaly: float, suspect_flip_rate: float, inputs: tuple[str, ...]) -> list[float]:
    return [INPUTS[name](float(max_anomaly), float(suspect_flip_rate)) for name in inputs]


@dataclass(frozen=True)
class Calibration:
    inputs: tuple[str, ...]  # names in INPUTS
    weights: tuple[float, ...]
    intercept: float
    fitted_on: str

    def probability(self, max_anomaly: float, suspect_flip_rate: float) -> float:
        x = features(max_anomaly, suspect_flip_rate, self.inputs)
        z = sum(w * v for w, v in zip(self.weights, x, strict=True)) + self.intercept
        return 1.0 / (1.0 + math.exp(-z)) if z > -700 else 0.0

    def record(self) -> dict[str, Any]:
        return asdict(self)


@functools.lru_cache(maxsize=1)
def shipped_calibration() -> Calibration:
    record = json.loads(CALIBRATION_FILE.read_text())
    return Calibration(tuple(record["inputs"]), tuple(record["weights"]), record["intercept"], record["fitted_on"])


def backdoor_probability(report: dict[str, Any]) -> float | None:
    """The calibrated probability for a scan report, or None where the fit does not apply (a baseline method, no
    clean reference, a subset of the classes: the fast schedule then runs other steps, so the index is another; a
    verdict of the transfer check, whose index is of another measurement)."""
    settings = report.get("settings")
    if (report.get("method") != "inspector" or report.get("statistic") != "excess_flip_rate"
            or not isinstance(settings, dict) or settings.get("classes") is not None or report.get("confirmed_by")):
        return None
    return round(shipped_calibration().probability(report["max_anomaly"], report["suspect_flip_rate"]), 4)
