"""Choose the clean reference and the colour family's rule on the *dev* zoo (issue 18): every candidate decides
again on the same cached scans, so the choice costs no scan and the test zoo is never looked at.

    .venv/bin/python benchmarks/detection.py --zoo benchmarks/zoos/dev --methods "inspector + reference" \\
        --no-repair --report detection_dev                     # the dev scans (cached)
    .venv/bin/python -m inspector reference build --kind coop --learners 8 --first-seed 3000 \\
        --out benchmarks/zoos/references/pocket-clip-coop-varied.json  # CoCoOp: --learners 6 --first-seed 3100
    .venv/bin/python benchmarks/reference_choice.py            # writes reference_choice.md / .json

A scan's inversion does not depend on the reference (the fast plan with a reference is the same for every
reference), so re-deciding a cached record with another reference is exactly what a scan given that
reference would have said. Candidates: the reference shipped before issue 18 (4 default-recipe learners, no
colour measurements, kept as ``pocket-clip-KIND-default.json``), and references of clean learners tuned with
varied recipes (seeds 3000+, never in a zoo); each with the colour family off, or on.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.detection import auroc, colour_tag, target_f1  # noqa: E402
from inspector.detect import decide, standardised  # noqa: E402
from inspector.reference import Reference, decide_with_reference  # noqa: E402

HERE = Path(__file__).resolve().parent
DEV = HERE / "zoos" / "dev"
REFERENCES = HERE / "zoos" / "references"
RULES = ("pooled", "per-class 0.05", "per-class 0.1")
LABELS = {"default": "default recipe (shipped before issue 18)", "varied": "varied recipes"}
COLOUR_KEYS = ("colour_flip_rate", "colour_flips", "colour_eligible", "colour_loss", "colour_strength")


def candidates() -> dict[str, dict[str, Reference]]:
    out: dict[str, dict[str, Reference]] = {}
    for path in sorted(REFERENCES.glob("pocket-clip-*.json")):
        kind, _, name = path.stem.removeprefix("pocket-clip-").partition("-")
        out.setdefault(LABELS.get(name, name), {})[kind] = Reference.read(path)
    return out


def dev_scans(zoo: Path = DEV) -> list[dict[str, Any]]:
    """A zoo's cached default scans (benchmarks/detection.py), one record per model, by file name: the dev zoo's
    unless told otherwise (a retired test zoo, once its figures are reported, may serve choices too)."""
    folder = zoo / "scans" / f"inspector-reference{colour_tag(True)}"
    return [json.loads(p.read_text()) for p in sorted(folder.glob("*.json"))]


def dev_preamble(title: str, scans: list[dict[str, Any]], how: str, script: str, after: str = "",
                 zoo: Path = DEV) -> list[str]:
    """The opening lines of a choice table: what it is (not a result), and how to make it again."""
    which = ("Dev-zoo figures only" if zoo.resolve() == DEV.resolve() else
             "Figures of a retired test zoo, reported before and now used for choices like the dev zoo's")
    return [f"# {title}", "", f"{which} (benchmarks/zoos/{zoo.name}, {len(scans)} models, "
            f"{sum(not s['backdoored'] for s in scans)} clean): what a choice is made on, not a result. Every "
            f"candidate decides again on the same cached default scans {how} (`python benchmarks/{script}.py`)"
            f"{after}", ""]


def redecide(row: dict[str, Any], reference: Reference, colour: bool, rule: str = "pooled") -> dict[str, Any]:
    records = row["classes"] if colour else [{k: v for k, v in r.items() if k not in COLOUR_KEYS}
                                             for r in row["classes"]]
    records, verdict = decide_with_reference(records, reference, "fast", spread="pooled")
    if rule.startswith("per-class"):
        verdict = decide(standardised(records, float(rule.split()[-1])), "excess_flip_rate")
    return {"model": row["model"], "backdoored": row["backdoored"], "attack": row["attack"],
            "true_target": row["true_target"], "flagged": verdict.flagged, "predicted_target": verdict.target_name,
            "suspect": verdict.suspect_name, "max_anomaly": verdict.max_anomaly, "family": verdict.suspect_family,
            "flip": verdict.suspect_flip_rate}


def summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    positives = [r["max_anomaly"] for r in rows if r["backdoored"]]
    negatives = [r["max_anomaly"] for r in rows if not r["backdoored"]]
    return {"accuracy": sum(r["flagged"] == r["backdoored"] for r in rows) / len(rows),
            "auroc": auroc(positives, negatives), "target_f1": target_f1(rows),
            "false_positives": sum(r["flagged"] and not r["backdoored"] for r in rows),
            "highest_clean": max(negatives, default=0.0), "lowest_backdoored": min(positives, default=0.0),
            "missed": [r["model"] for r in rows if r["backdoored"] and not r["flagged"]],
            "flagged_clean": [f"{r['model']} ({r['suspect']}, {r['max_anomaly']:.2f}, {r['family']})"
                              for r in rows if r["flagged"] and not r["backdoored"]],
            "wrong_target": [f"{r['model']} ({r['predicted_target']} not {r['true_target']})" for r in rows
                             if r["flagged"] and r["backdoored"] and r["predicted_target"] != r["true_target"]]}


def main() -> None:
    scans = dev_scans()
    results: dict[str, Any] = {}
    lines = ["# Choosing the reference and the colour family's rule (dev zoo)", "",
             "Dev-zoo figures only (benchmarks/zoos/dev): what the choice was made on, not a result. "
             f"{len(scans)} models ({sum(not s['backdoored'] for s in scans)} clean). Every candidate decides again "
             "on the same cached default scans (`python benchmarks/reference_choice.py`).", "",
             "Rules: `pooled` is the engine's (excess over the clean learners' mean, the index dividing by no less "
             "than their spread pooled over classes); `per-class F` divides each class's excess by its own clean "
             "spread (at least F) first.", "",
             "| reference | learners (seeds) | kind | colour family | rule | accuracy | AUROC | target F1 | "
             "false positives | highest clean index | lowest backdoor index | missed | flagged clean | wrong target |",
             "|---" * 14 + "|"]
    for name, references in candidates().items():
        for kind, colour, rule in [(k, c, r) for k in ("coop", "cocoop") for c in (False, True) for r in RULES]:
            if kind not in references:
                continue
            reference = references[kind]
            rows = [redecide(scan, reference, colour, rule) for scan in scans if scan["kind"] == kind]
            score = summary(rows)
            results[f"{name} | {kind} | colour {'on' if colour else 'off'} | {rule}"] = {"summary": score, "rows": rows}
            learners = f"{len(reference.seeds)} ({reference.seeds[0]}-{reference.seeds[-1]})"
            lines.append(f"| {name} | {learners} | {kind} | {'on' if colour else 'off'} | {rule} | {cells(score)} |")
    write("reference_choice", results, lines)


def cells(score: dict[str, Any]) -> str:
    """A candidate's ``summary`` as table cells, from accuracy to wrong targets."""
    return (f"{score['accuracy']:.1%} | {score['auroc']:.3f} | {score['target_f1']:.2f} | "
            f"{score['false_positives']} | {score['highest_clean']:.2f} | {score['lowest_backdoored']:.2f} | "
            f"{', '.join(score['missed']) or '-'} | {'; '.join(score['flagged_clean']) or '-'} | "
            f"{'; '.join(score['wrong_target']) or '-'}")


def write(stem: str, results: dict[str, Any], lines: list[str]) -> None:
    (HERE / f"{stem}.json").write_text(json.dumps(results, indent=1) + "\n")
    (HERE / f"{stem}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
