"""What clean learners score per class, matched to how a scan measured each class (no torch).

A scan's flip rate for a class is only comparable with a clean learner's flip rate measured the same
way. The faithful schedule measures every class's finished trigger on the held-out images; the fast
schedule measures most classes on fresh batches after 6, 12 or 18 steps (whenever successive
halving stopped them), and those progressive estimates sit well below a finished trigger's rate.
Comparing them with held-out rates of finished clean triggers made every early-stopped class look
*less* reachable than in clean learners, which pushed the median of the excess down and the other
classes' anomaly indices up. A ``Baseline`` therefore keeps, per class and per clean learner, the
held-out rate at the end of the schedule *and* the per-step fresh-batch counts, and answers for each
record with the value a clean learner would have got under exactly the same measurement.

The spread of those values across the clean learners is kept too: a class's excess is only as
meaningful as the learner-to-learner variation of the same class, so the anomaly index never
divides by less than that (``detect.decide`` reads ``reference_spread``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from statistics import fmean, pstdev
from typing import Any

Curve = Sequence[Sequence[int]]  # per step: (flips, eligible images) on that step's fresh batch


@dataclass(frozen=True)
class Baseline:
    """Per-class values of n clean learners under one schedule."""

    held_out: dict[str, list[float]]  # class -> each learner's held-out flip rate of its finished trigger
    curves: dict[str, list[Curve]] = field(default_factory=dict)  # class -> each learner's fresh-batch curve
    window: int = 10  # steps a fresh-batch estimate adds up (the scan's ``fast_window``)
    held_out_steps: int | None = None  # steps after which ``held_out`` was measured (None: the whole schedule)
    # quick family ("colour", "blend", "patch") -> class -> each learner's flip rate of that family's trigger
    families: dict[str, dict[str, list[float]]] = field(default_factory=dict)
    held_out_loss: dict[str, list[float]] = field(default_factory=dict)  # class -> each learner's held-out margin
    # The transfer check (inspector.transfer): class -> each measured clean learner's transfer gap, the learner files
    # a delivered model's triggers are carried over to, and the settings the gaps were measured with.
    transfer: dict[str, list[float]] = field(default_factory=dict)
    transfer_learners: tuple[str, ...] = ()
    transfer_settings: dict[str, Any] = field(default_factory=dict)

    @property
    def classes(self) -> list[str]:
        return list(self.held_out)

    def learner_values(self, record: dict[str, Any]) -> list[float]:
        """Each clean learner's flip rate for ``record``'s class, measured as the record was."""
        name = record["name"]
        steps = int(record.get("steps", 0))
        if record.get("measured_on", "held-out") == "held-out":
            if self.held_out_steps is not None and steps != self.held_out_steps:
                raise KeyError(f"held-out flip rates were measured after {self.held_out_steps} steps, not {steps}")
            return list(self.held_out[name])
        if name not in self.curves or any(len(curve) < steps for curve in self.curves[name]):
            raise KeyError(f"no fresh-batch curve of {steps} steps for class {name!r}")
        return [fresh_flip_rate(curve[:steps], self.window) for curve in self.curves[name]]

    def learner_losses(self, record: dict[str, Any]) -> list[float] | None:
        """Each clean learner's margin loss for ``record``'s class, measured as the record was (None: the reference
        kept no margins for that measurement)."""
        name = record["name"]
        steps = int(record.get("steps", 0))
        if record.get("measured_on", "held-out") == "held-out":
            if name not in self.held_out_loss or (self.held_out_steps is not None and steps != self.held_out_steps):
                return None
            return list(self.held_out_loss[name])
        curves = self.curves.get(name, [])
        if not curves or any(len(curve) < steps or any(len(step) < 3 for step in curve) for curve in curves):
            return None
        return [fresh_margin(curve[:steps], self.window) for curve in curves]

    def means(self) -> dict[str, float]:
        """Mean held-out flip rate per class (for reports and charts)."""
        return {name: round(fmean(values), 4) for name, values in self.held_out.items()}


def fresh_flip_rate(curve: Curve, window: int) -> float:
    """Share of eligible images flipped over the last ``window`` steps of ``curve`` (as a fast scan counts it)."""
    part = list(curve)[-window:]
    eligible = sum(int(e) for _, e, *_ in part)
    return sum(int(f) for f, _, *_ in part) / eligible if eligible else 0.0


def fresh_margin(curve: Curve, window: int) -> float:
    """Mean margin loss over the last ``window`` steps of ``curve`` (as a fast scan's record gives its ``loss``)."""
    part = list(curve)[-window:]
    return sum(float(step[2]) for step in part) / len(part) if part else float("inf")


def with_loss_baseline(record: dict[str, Any], values: Sequence[float] | None) -> dict[str, Any]:
    """A class record with the clean learners' mean margin loss for it, how far *below* that mean the record's loss
    lies (``loss_excess``: positive when the class is easier to reach than in clean learners) and the spread a new
    clean learner would show around it; unchanged when the reference kept no margins."""
    if not values or not math.isfinite(float(record.get("loss", math.inf))):
        return record
    reference = with_baseline({"flip_rate": record["loss"]}, values)
    return {**record, "reference_loss": reference["reference_flip_rate"],
            "loss_excess": round(-reference["excess_flip_rate"], 4), "loss_spread": reference["reference_spread"]}


def with_baseline(record: dict[str, Any], values: Sequence[float]) -> dict[str, Any]:
    """A class record with the clean learners' mean for it, the excess over that mean and the spread a new
    clean learner would show around it (sample sd x sqrt(1 + 1/n): the sd of a prediction, not of the mean)."""
    n = len(values)
    mean = fmean(values)
    sd = pstdev(values) * math.sqrt(n / (n - 1)) if n > 1 else 0.0
    return {**record, "reference_flip_rate": round(mean, 4),
            "excess_flip_rate": round(float(record["flip_rate"]) - mean, 4),
            "reference_spread": round(sd * math.sqrt(1 + 1 / n), 4)}


def with_family_baseline(record: dict[str, Any], family: str, values: Sequence[float]) -> dict[str, Any]:
    """A quick family's counterpart of ``with_baseline``: the clean learners' mean flip rate of ``family`` for the
    class, the excess over it and the spread a new clean learner would show."""
    reference = with_baseline({"flip_rate": record[f"{family}_flip_rate"]}, values)
    return {**record, f"reference_{family}_flip_rate": reference["reference_flip_rate"],
            f"{family}_excess": reference["excess_flip_rate"],
            f"{family}_reference_spread": reference["reference_spread"]}
