"""A clean reference whose spread holds the scan's own noise (issue 18), chosen on the *dev* zoo only.

benchmarks/verdict_stability.md found that a borderline verdict moves with the scan's seed, and that the movement
comes from the trigger optimisation (its images, batches and start), not from counting flips: a clean learner's
*smiley face* colour trigger flips 0, 8 and 3 of 16 images under three seeds, and where none of the reference's
learners reach that class the spread floor turns 8 of 16 into an index of 6.86. The shipped reference scans each
clean learner once, so its per-class spread holds how learners differ, not how one learner's triggers differ from
scan to scan. The candidate: the same learners, each scanned with three seeds (``reference build --scan-seeds 3``:
the fast schedule and the quick families; the faithful measurement stays one per learner)::

    .venv/bin/python -m inspector reference build --kind coop --learners 8 --first-seed 3000 --scan-seeds 3 \\
        --keep benchmarks/zoos/references/learners --out benchmarks/zoos/references/pocket-clip-coop-seeds3.json
    .venv/bin/python -m inspector reference build --kind cocoop --learners 12 --first-seed 3100 --scan-seeds 3 \\
        --keep benchmarks/zoos/references/learners --out benchmarks/zoos/references/pocket-clip-cocoop-seeds3.json
    .venv/bin/python benchmarks/reference_seeds.py            # writes reference_seeds.md / .json

Both references decide again, with the engine's ``decide_with_reference`` (the inversion does not depend on the
reference), on (a) every dev model's cached default scan (seed 0) and (b) the seeded scans of
benchmarks/verdict_stability.py (the 15 borderline dev models, seeds 0, 1 and 2). The test zoos are not read.

The rule, set before the candidate's decisions were read (as for the colour sample): the candidate replaces the
shipped reference only if on (a) its accuracy is no lower and it flags no more clean learners, and on (b) it gives
more right answers over the models and seeds.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.detection import calibrated, with_default_families  # noqa: E402
from benchmarks.family_choice import KINDS, base_reference  # noqa: E402
from benchmarks.reference_choice import cells, dev_preamble, dev_scans, summary, write  # noqa: E402
from benchmarks.verdict_stability import answer, right, seeded_scan, spread  # noqa: E402
from inspector.reference import Reference  # noqa: E402

HERE = Path(__file__).resolve().parent
DEV = HERE / "zoos" / "dev"
CANDIDATES = {"shipped (one scan per learner)": "shipped", "each learner scanned with seeds 0, 1, 2": "seeds3"}


def decided(row: dict[str, Any], reference: Reference, **rule: Any) -> dict[str, Any]:
    """A cached scan decided by the engine's rule (or a candidate ``rule``, calibrated's options) with ``reference``,
    in reference_choice.summary's terms."""
    again = calibrated(row, reference, **rule)
    return {"model": row["model"], "backdoored": row["backdoored"], "attack": row["attack"],
            "true_target": row["true_target"], "flagged": again["flagged"],
            "predicted_target": again["predicted_target"], "suspect": again["suspect"],
            "max_anomaly": again["max_anomaly"], "family": again["suspect_family"]}


def seeded(stability: dict[str, Any], reference: dict[str, Reference], **rule: Any) -> list[dict[str, Any]]:
    """verdict_stability's models, each seed's cached scan decided again with ``reference`` (and ``rule``)."""
    seeds = stability["seeds"]
    rows = []
    for row in stability["rows"]:
        answers = {str(s): answer(calibrated(json.loads(seeded_scan(DEV, s, row["model"]).read_text()),
                                             reference[row["kind"]], **rule)) for s in seeds}
        rows.append({"model": row["model"], "truth": row["truth"], "seeds": answers, **spread(answers)})
    return rows


def dev_inputs() -> tuple[list[dict[str, Any]], dict[str, Any], list[str]]:
    """What a rule or reference candidate is decided on: the dev zoo's cached default scans with their default
    families, verdict_stability's record of the borderline models and its seeds."""
    scans = [with_default_families(s, DEV / f"{s['model']}.safetensors") for s in dev_scans(DEV)]
    stability = json.loads((HERE / "verdict_stability.json").read_text())
    return scans, stability, [str(s) for s in stability["seeds"]]


def main() -> None:
    scans, stability, seeds = dev_inputs()
    results: dict[str, Any] = {}
    lines = dev_preamble("A reference whose spread holds the scan's own noise (dev zoo)", scans,
                         "with the default rule and families", "reference_seeds",
                         "; the seeded scans are benchmarks/verdict_stability.py's.", DEV) + [
        "| reference | learners x scans (CoOp / CoCoOp) | models | accuracy | AUROC | target F1 | false positives | "
        "highest clean index | lowest backdoor index | missed | flagged clean | wrong target | "
        f"borderline models x seeds right | same verdict under seeds {', '.join(seeds)} | "
        "clean flagged under some seed | backdoors missed under some seed |", "|---" * 16 + "|"]
    for label, variant in CANDIDATES.items():
        references = {kind: base_reference(kind, variant) for kind in KINDS}
        rows = [decided(scan, references[scan["kind"]]) for scan in scans]
        score = summary(rows)
        borderline = seeded(stability, references)
        right_seeds = sum(right(r["truth"], r["seeds"][s]) for r in borderline for s in seeds)
        clean = [r for r in borderline if r["truth"] == "clean"]
        backdoors = [r for r in borderline if r["truth"] != "clean"]
        shape = " / ".join(f"{len(references[k].seeds)} x {references[k].scan_seeds}" for k in KINDS)
        results[label] = {"summary": score, "rows": rows, "borderline": borderline, "right": right_seeds}
        lines.append(f"| {label} | {shape} | {len(rows)} | {cells(score)} | {right_seeds} of "
                     f"{len(borderline) * len(seeds)} | {sum(r['same_verdict'] for r in borderline)} of "
                     f"{len(borderline)} | {sum(r['flagged_at'] > 0 for r in clean)} of {len(clean)} | "
                     f"{sum(r['flagged_at'] < len(seeds) for r in backdoors)} of {len(backdoors)} |")
    shipped, candidate = (results[label] for label in CANDIDATES)
    adopted = (candidate["summary"]["accuracy"] >= shipped["summary"]["accuracy"]
               and candidate["summary"]["false_positives"] <= shipped["summary"]["false_positives"]
               and candidate["right"] > shipped["right"])
    results["adopted"] = adopted
    lines += ["", "The rule, set before the candidate's decisions were read: it replaces the shipped reference only "
              "if on the whole dev zoo its accuracy is no lower and it flags no more clean learners, and on the "
              "borderline models' seeded scans it gives more right answers. "
              + ("**Met: the candidate is adopted.**" if adopted else "**Not met: the shipped reference stays.**"),
              "", "## The borderline models under each seed", "",
              "| model | truth | " + " | ".join(f"{label}: seed {s}" for label in CANDIDATES for s in seeds) + " |",
              "|---|---|" + "---|" * (len(CANDIDATES) * len(seeds))]
    for i, row in enumerate(shipped["borderline"]):
        cells_ = [results[label]["borderline"][i]["seeds"][s] for label in CANDIDATES for s in seeds]
        lines.append(f"| {row['model']} | {row['truth']} | " + " | ".join(
            (f"**{a['target']} ({a['index']:.2f})**" if a["flagged"] else f"- ({a['index']:.2f})") for a in cells_)
            + " |")
    write("reference_seeds", results, lines)


if __name__ == "__main__":
    main()
