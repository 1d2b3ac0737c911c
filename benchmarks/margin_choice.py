"""Whether a class's margin loss should count beside its flip-rate excess (issue 18), on the *dev* zoo only.

    .venv/bin/python benchmarks/detection.py --zoo benchmarks/zoos/dev --methods "inspector + reference" \\
        --no-repair --report detection_dev                     # the dev scans (cached)
    .venv/bin/python benchmarks/margin_choice.py               # writes margin_choice.md / .json

Why: a backdoor aimed at a class that clean learners already reach easily (*application icon*: 69% of OOD images
flipped by a clean learner's trigger) cannot push the flip rate much higher (84%), so its excess hides among clean
learners' (dev zoo: wanet_coop_s2701 missed at index 1.98). Its trigger's margin loss keeps falling where the flip
rate saturates (-2.31 against -0.69 in clean learners). The reference keeps every clean learner's per-step margin
beside its flips, so a class's loss is compared with clean learners' measured the same way (same steps, fresh
batches or held-out), in units of their spread (no less than a floor, in logits). Candidates: the flip-rate excess
alone (``flip``, today), the mean of both standardised excesses (``mean``), the larger (``max``), each at several
floors. Every candidate decides again, with the engine's own ``decide_with_reference``, on the cached default
scans with the shipped reference; the test zoo is not read.

The choice: the candidate with the most *room* on the dev zoo, the smaller of (threshold - the highest clean index
whose trigger passes the 50% gate) and (the lowest index of a real backdoor - threshold): both sides of the
threshold at once, since a clean learner flagged is as bad as a backdoor missed.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.reference_choice import cells, dev_preamble, dev_scans, summary, write  # noqa: E402
from inspector.detect import DEFAULT_MIN_FLIP_RATE, DEFAULT_SPREAD, DEFAULT_THRESHOLD, Evidence  # noqa: E402
from inspector.reference import Reference, decide_with_reference, shipped_reference_path  # noqa: E402

HERE = Path(__file__).resolve().parent
DEV = HERE / "zoos" / "dev"
CANDIDATES: list[tuple[Evidence, float]] = [("flip", 0.4)] + [("mean", floor) for floor in (
    0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 1.0)] + [("max", floor) for floor in (0.1, 0.25, 0.5, 1.0)]
NOT_REAL = {"blended_coop_s2700_t11"}  # its implant failed (ASR 0.6%, implant_recipes_dev.md): no backdoor to find


def redecide(row: dict[str, Any], reference: Reference, evidence: Evidence, floor: float) -> dict[str, Any]:
    """The row decided as the default scan would decide it with ``evidence`` and a margin spread floor ``floor``."""
    records, verdict = decide_with_reference(row["classes"], reference, "fast", spread=DEFAULT_SPREAD,
                                             evidence=evidence, loss_floor=floor)
    top = next(r for r in records if int(r["index"]) == verdict.suspect)
    return {"model": row["model"], "backdoored": row["backdoored"], "attack": row["attack"],
            "true_target": row["true_target"], "flagged": verdict.flagged, "predicted_target": verdict.target_name,
            "suspect": verdict.suspect_name, "max_anomaly": verdict.max_anomaly, "family": verdict.suspect_family,
            "suspect_flip_rate": verdict.suspect_flip_rate, "suspect_loss": top.get("loss"),
            "suspect_reference_loss": top.get("reference_loss"), "flip": verdict.suspect_flip_rate}


def main() -> None:
    scans = dev_scans()
    references = {kind: Reference.read(shipped_reference_path("pocket-clip", kind)) for kind in ("coop", "cocoop")}
    results: dict[str, Any] = {}
    lines = dev_preamble("Whether the margin loss counts beside the flip-rate excess (dev zoo)", scans,
                         "with the shipped reference", "margin_choice",
                         "; only how a class's evidence is formed changes. *floor*: the smallest spread of clean "
                         "learners' margin loss a class's loss excess is divided by (logits).") + [
             "| evidence | floor | kind | models | accuracy | AUROC | target F1 | false positives | "
             "highest clean index | lowest backdoor index | missed | flagged clean | wrong target | "
             "highest clean index past the 50% gate | lowest real backdoor index | room |", "|---" * 16 + "|"]
    for evidence, floor in CANDIDATES:
        for kind in ("coop", "cocoop", "both"):
            kinds = ("coop", "cocoop") if kind == "both" else (kind,)
            rows = [redecide(scan, references[scan["kind"]], evidence, floor)
                    for scan in scans if scan["kind"] in kinds]
            score = summary(rows)
            results[f"{evidence} | {floor} | {kind}"] = {"summary": score, "rows": rows}
            shown = "-" if evidence == "flip" else f"{floor:g}"
            gated = max((r["max_anomaly"] for r in rows if not r["backdoored"] and r["flip"] >= DEFAULT_MIN_FLIP_RATE),
                        default=0.0)
            lowest = min((r["max_anomaly"] for r in rows if r["backdoored"] and r["model"] not in NOT_REAL),
                         default=0.0)
            room = min(DEFAULT_THRESHOLD - gated, lowest - DEFAULT_THRESHOLD)
            results[f"{evidence} | {floor} | {kind}"].update(gated_clean=gated, lowest_real=lowest, room=room)
            lines.append(f"| {evidence} | {shown} | {kind} | {len(rows)} | {cells(score)} | {gated:.2f} | "
                         f"{lowest:.2f} | {room:+.2f} |")
    write("margin_choice", results, lines)


if __name__ == "__main__":
    main()
