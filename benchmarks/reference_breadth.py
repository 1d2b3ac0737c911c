"""How many and how varied clean learners the reference needs, and which class the verdict looks at (issue 18),
on the *dev* zoo only.

    .venv/bin/python -m inspector reference build --kind coop --learners 12 --first-seed 3000 \\
        --keep benchmarks/zoos/references/learners --out benchmarks/zoos/references/pocket-clip-coop-varied12.json
    .venv/bin/python -m inspector reference build --kind cocoop --learners 12 --first-seed 3100 \\
        --keep benchmarks/zoos/references/learners --out benchmarks/zoos/references/pocket-clip-cocoop-varied12.json
    .venv/bin/python benchmarks/reference_breadth.py           # writes reference_breadth.md / .json

Why: a clean learner tuned with a recipe no reference learner shares can reach a class (through either family) as
easily as a backdoor does, and the per-class spread of a handful of learners does not cover it. Candidates: the
references shipped before this choice (8 CoOp, 6 CoCoOp learners, ``reference.VARIED_RECIPES`` 0-7 and 0-5; kept as
``pocket-clip-KIND-varied.json``) and references of 12 learners per kind (the same learners, plus recipes 6-11: the
corners of the recipe space the first ones leave open); each with the suspect taken as today (the highest index) or
as the highest index among the classes whose trigger passes the 50% gate (a class whose trigger flips few images
cannot hide a backdoor's class behind it). Every candidate decides again on the cached default scans with the
engine's ``decide_with_reference`` (the inversion does not depend on the reference); the test zoo is not read.

The choice, as in margin_choice.py: the most *room* on the dev zoo, the smaller of (threshold - highest clean
index past the gate) and (lowest real backdoor index - threshold).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.reference_choice import cells, dev_preamble, dev_scans, summary, write  # noqa: E402
from benchmarks.zoo_tables import manifest_rows  # noqa: E402
from inspector.detect import DEFAULT_MIN_FLIP_RATE, DEFAULT_SPREAD, DEFAULT_THRESHOLD  # noqa: E402
from inspector.lab.implant import WORKING_BACKDOOR  # noqa: E402
from inspector.reference import Reference, decide_with_reference  # noqa: E402

HERE = Path(__file__).resolve().parent
DEV = HERE / "zoos" / "dev"
REFERENCES = HERE / "zoos" / "references"
SUSPECTS = ("highest index", "highest index past the gate")


def references() -> dict[str, dict[str, Reference]]:
    """The candidates: the 8 CoOp / 6 CoCoOp learners shipped before this choice, and 12 of each kind."""
    out = {}
    for label, stem in (("8 CoOp / 6 CoCoOp (recipes 0-7 / 0-5)", "varied"),
                        ("12 per kind (recipes 0-11)", "varied12")):
        paths = {kind: REFERENCES / f"pocket-clip-{kind}-{stem}.json" for kind in ("coop", "cocoop")}
        if all(path.is_file() for path in paths.values()):
            out[label] = {kind: Reference.read(path) for kind, path in paths.items()}
    return out


def redecide(row: dict[str, Any], reference: Reference, suspect: str) -> dict[str, Any]:
    """The row decided by the default rule with ``reference``; ``suspect`` says which class the verdict is on."""
    records, verdict = decide_with_reference(row["classes"], reference, "fast", spread=DEFAULT_SPREAD)
    flips = [float(r["colour_flip_rate"] if family == "colour" else r["flip_rate"])
             for r, family in zip(records, verdict.families, strict=True)]
    top = records.index(next(r for r in records if int(r["index"]) == verdict.suspect))
    if suspect != "highest index":
        gated = [i for i, flip in enumerate(flips) if flip >= DEFAULT_MIN_FLIP_RATE]
        top = max(gated, key=lambda i: verdict.anomalies[i]) if gated else top
    anomaly, flip = verdict.anomalies[top], flips[top]
    flagged = anomaly > DEFAULT_THRESHOLD and flip >= DEFAULT_MIN_FLIP_RATE
    return {"model": row["model"], "backdoored": row["backdoored"], "attack": row["attack"],
            "true_target": row["true_target"], "flagged": flagged,
            "predicted_target": records[top]["name"] if flagged else None, "suspect": records[top]["name"],
            "max_anomaly": anomaly, "family": verdict.families[top], "flip": flip}


def main() -> None:
    scans = dev_scans()
    results: dict[str, Any] = {}
    lines = dev_preamble("How broad the clean reference is, and which class the verdict looks at (dev zoo)", scans,
                         "with the default rule", "reference_breadth", ".") + [
             "| reference | suspect | kind | models | accuracy | AUROC | target F1 | false positives | "
             "highest clean index | lowest backdoor index | missed | flagged clean | wrong target | "
             "highest clean index past the 50% gate | lowest index of a backdoor whose trigger took | room |",
             "|---" * 16 + "|"]
    manifest = manifest_rows(DEV)
    # a backdoor to find: its trigger took (whatever it cost in accuracy); an implant whose trigger did not is none
    to_find = {stem for stem, m in manifest.items() if m.get("attack") and m["asr"] >= WORKING_BACKDOOR["asr"]
               and m["ood_asr"] >= WORKING_BACKDOOR["ood_asr"]}
    for label, reference in references().items():
        for suspect in SUSPECTS:
            for kind in ("coop", "cocoop", "both"):
                kinds = ("coop", "cocoop") if kind == "both" else (kind,)
                rows = [redecide(scan, reference[scan["kind"]], suspect) for scan in scans if scan["kind"] in kinds]
                score = summary(rows)
                gated = max((r["max_anomaly"] for r in rows
                             if not r["backdoored"] and r["flip"] >= DEFAULT_MIN_FLIP_RATE), default=0.0)
                lowest = min((r["max_anomaly"] for r in rows if r["model"] in to_find),
                             default=0.0)
                room = min(DEFAULT_THRESHOLD - gated, lowest - DEFAULT_THRESHOLD)
                results[f"{label} | {suspect} | {kind}"] = {"summary": score, "rows": rows, "gated_clean": gated,
                                                            "lowest_real": lowest, "room": room}
                lines.append(f"| {label} | {suspect} | {kind} | {len(rows)} | {cells(score)} | {gated:.2f} | "
                             f"{lowest:.2f} | {room:+.2f} |")
    write("reference_breadth", results, lines)


if __name__ == "__main__":
    main()
