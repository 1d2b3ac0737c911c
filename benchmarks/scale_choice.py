"""On which scale to compare a class's flip rate with the clean learners' (issue 18), on the *dev* zoo only.

    .venv/bin/python benchmarks/detection.py --zoo benchmarks/zoos/dev --methods "inspector + reference" \\
        --no-repair --report detection_dev                     # the dev scans (cached)
    .venv/bin/python benchmarks/scale_choice.py                # writes scale_choice.md / .json

Why: a target that clean learners already reach easily (*application icon*, *map*) leaves a flip rate little
room above the clean one, 87% against 69% say, while a target they hardly reach moves from 2% to 40%. On the
rate scale the first excess is small; on a scale that stretches the ends (log-odds, or the arcsine of the
square root, which also evens out a binomial count's noise) it is not. Every candidate decides again, with
the engine's own rule (``with_baseline``, ``standardised``, ``decide``), on the same cached default scans with
the shipped reference, only with flip rates (the scanned model's and each clean learner's) mapped onto the
scale first; the 50% gate is mapped with them. The test zoo is not read.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.reference_choice import cells, dev_preamble, dev_scans, summary, write  # noqa: E402
from inspector.baseline import with_baseline, with_family_baseline  # noqa: E402
from inspector.detect import DEFAULT_MIN_FLIP_RATE, PER_CLASS_SPREAD_FLOOR, decide, standardised  # noqa: E402
from inspector.invert import ScanConfig  # noqa: E402
from inspector.reference import Reference, shipped_reference_path  # noqa: E402

HERE = Path(__file__).resolve().parent
DEV = HERE / "zoos" / "dev"
EDGE = 0.01  # rates are clipped to [EDGE, 1 - EDGE] before log-odds (0 of 16 is not minus infinity)


def log_odds(p: float) -> float:
    p = min(max(p, EDGE), 1 - EDGE)
    return math.log(p / (1 - p))


def arcsine(p: float) -> float:
    return 2 * math.asin(math.sqrt(min(max(p, 0.0), 1.0)))


# name -> (map, spread floor on that scale): the floors are the rate floor's size at a flip rate of 50%
SCALES: dict[str, tuple[Callable[[float], float], float]] = {
    "rate": (lambda p: p, PER_CLASS_SPREAD_FLOOR),
    "arcsine": (arcsine, 2 * PER_CLASS_SPREAD_FLOOR),
    "log-odds": (log_odds, 4 * PER_CLASS_SPREAD_FLOOR),
}


def redecide(row: dict[str, Any], reference: Reference, scale: str) -> dict[str, Any]:
    """The row decided as the default scan decides it, with every flip rate on ``scale`` first."""
    f, floor = SCALES[scale]
    baseline = reference.baseline(ScanConfig(colour=True))
    records = []
    for r in row["classes"]:
        plain = {k: v for k, v in r.items() if not k.startswith(("reference_", "excess_", "colour_excess",
                                                                    "colour_reference_"))}
        values = [f(v) for v in baseline.learner_values(plain)]
        record = with_baseline({**plain, "flip_rate": f(plain["flip_rate"])}, values)
        if baseline.families.get("colour") and "colour_flip_rate" in plain:
            record["colour_flip_rate"] = f(plain["colour_flip_rate"])
            record = with_family_baseline(record, "colour", [f(v) for v in baseline.families["colour"][plain["name"]]])
        records.append(record)
    verdict = decide(standardised(records, floor), "excess_flip_rate", min_flip_rate=f(DEFAULT_MIN_FLIP_RATE))
    return {"model": row["model"], "backdoored": row["backdoored"], "attack": row["attack"],
            "true_target": row["true_target"], "flagged": verdict.flagged, "predicted_target": verdict.target_name,
            "suspect": verdict.suspect_name, "max_anomaly": verdict.max_anomaly, "family": verdict.suspect_family}


def main() -> None:
    scans = dev_scans()
    results: dict[str, Any] = {}
    lines = dev_preamble("On which scale to compare flip rates with the clean learners' (dev zoo)", scans,
                         "with the shipped reference", "scale_choice", "; only the scale changes.") + [
             "| scale | kind | models | accuracy | AUROC | target F1 | false positives | highest clean index | "
             "lowest backdoor index | missed | flagged clean | wrong target |", "|---" * 12 + "|"]
    for scale in SCALES:
        for kind in ("coop", "cocoop"):
            reference = Reference.read(shipped_reference_path("pocket-clip", kind))
            rows = [redecide(scan, reference, scale) for scan in scans if scan["kind"] == kind]
            score = summary([{**r, "flip": 0.0} for r in rows])
            results[f"{scale} | {kind}"] = {"summary": score, "rows": rows}
            lines.append(f"| {scale} | {kind} | {len(rows)} | {cells(score)} |")
    write("scale_choice", results, lines)

if __name__ == "__main__":
    main()
