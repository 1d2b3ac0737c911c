"""Why clean learners cross the threshold (issue 18, measured on the *dev* zoo only).

    .venv/bin/python benchmarks/detection.py --zoo benchmarks/zoos/dev --methods "inspector + reference" \\
        --no-repair --colour --report detection_dev
    .venv/bin/python benchmarks/clean_crossings.py      # reads those cached scans, writes clean_crossings.md

For every clean learner of the dev zoo (recipes and seeds the shipped reference never saw): its top
classes by anomaly index under the default scan, each with the flip rate, the reference's mean and
spread for that class, the excess, and how it was measured (held-out or fresh batches, steps). Then,
per class, how the clean learners' flip rates spread over seeds and recipes against the reference's
own spread: the index divides by the reference spread, so a class whose clean flip rate varies more
across recipes than across the reference's 4 default-recipe seeds is where false positives come from.

The scans ran with the colour family too (``--colour``), so the same records say how far a colour
transform reaches each class in clean learners and in backdoored ones: the additive verdict is
re-decided here on the records without their colour fields (the scan's additive numbers do not depend
on the colour phase).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from statistics import fmean, pstdev
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from inspector.detect import COLOUR_MIN_SPREAD, decide  # noqa: E402

HERE = Path(__file__).resolve().parent
ZOO = HERE / "zoos" / "dev"


def scans(zoo: Path) -> list[dict[str, Any]]:
    folder = zoo / "scans" / "inspector-reference-colour"
    return [json.loads(path.read_text()) for path in sorted(folder.glob("*.json"))]


def recipe_of(zoo: Path, model: str) -> str:
    plan = {m["name"].replace("-", "_"): m for m in json.loads((zoo.parent / "dev.plan.json").read_text())["models"]}
    item = plan.get(model, {})
    recipe = item.get("recipe") or {}
    if not recipe:
        return "default"
    init = "random" if recipe.get("ctx_init", "") is None else "word"
    return f"n_ctx {recipe['n_ctx']}, {init} init, {recipe['optimizer']} lr {recipe['lr']:g}, {recipe['epochs']} ep"


def additive(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The records as an additive-only scan decides on them."""
    return [{key: value for key, value in r.items() if not key.startswith(("colour_", "reference_colour"))}
            for r in records]


def top_classes(row: dict[str, Any], n: int = 3) -> list[dict[str, Any]]:
    verdict = decide(additive(row["classes"]), "excess_flip_rate")
    ranked = sorted(zip(verdict.anomalies, row["classes"], strict=True), key=lambda pair: -pair[0])
    return [{**record, "anomaly": anomaly} for anomaly, record in ranked[:n]]


def _said(verdict: Any) -> str:
    if not verdict.flagged:
        return f"clean ({verdict.max_anomaly:.2f})"
    return f"**{verdict.target_name}** ({verdict.max_anomaly:.2f}, {verdict.suspect_family})"


def main() -> None:
    rows = scans(ZOO)
    clean = [r for r in rows if not r["backdoored"]]
    lines = ["# Why clean learners cross the threshold (dev zoo)", "",
             "Dev-zoo figures (benchmarks/zoos/dev, plan benchmarks/zoos/dev.plan.json): choices are made on these, "
             "never reported as results. Default scan (fast schedule, shipped reference of 4 default-recipe learners, "
             "seeds 1000-1003); `python benchmarks/clean_crossings.py` from the cached scans.", "",
             "## Every clean learner: its three most anomalous classes", "",
             "| model | recipe | flagged | class | index | flip rate | reference mean | excess | reference spread "
             "| measured on (steps) |", "|---|---|---|---|---|---|---|---|---|---|"]
    for row in clean:
        flagged = decide(additive(row["classes"]), "excess_flip_rate").flagged
        for i, c in enumerate(top_classes(row)):
            head = (f"| {row['model']} | {recipe_of(ZOO, row['model'])} | {'**yes**' if flagged else 'no'} "
                    if i == 0 else "| | | ")
            lines.append(head + f"| {c['name']} | {c['anomaly']:.2f} | {c['flip_rate']:.0%} | "
                                f"{c['reference_flip_rate']:.0%} | {c['excess_flip_rate']:+.0%} | "
                                f"{c['reference_spread']:.0%} | {c['measured_on']} ({c['steps']}) |")
    per_class: dict[str, list[float]] = {}
    spread: dict[str, float] = {}
    for row in clean:
        for c in row["classes"]:
            if c["measured_on"] == "held-out" or c["steps"] >= 8:
                per_class.setdefault(c["name"], []).append(float(c["flip_rate"]) - float(c["reference_flip_rate"]))
                spread[c["name"]] = float(c["reference_spread"])
    lines += ["", "## Per class: excess flip rate over the clean dev learners vs the reference's spread", "",
              "Classes that ran at least 8 steps (round two onwards), so early-stopped noise does not dominate.", "",
              "| class | clean learners | mean excess | sd of excess over seeds and recipes | reference spread | "
              "ratio |", "|---|---|---|---|---|---|"]
    for name, values in sorted(per_class.items(), key=lambda kv: -pstdev(kv[1]) if len(kv[1]) > 1 else 0):
        if len(values) < 2:
            continue
        sd = pstdev(values)
        lines.append(f"| {name} | {len(values)} | {fmean(values):+.0%} | {sd:.0%} | {spread[name]:.0%} | "
                     f"{sd / max(spread[name], 0.01):.1f} |")
    lines += ["", "## The colour family on the same scans", "",
              "Per model: the additive-only verdict, the verdict with the colour family (raw colour flip rates, "
              f"no reference has measured them; floor {COLOUR_MIN_SPREAD}), the classes a colour transform reaches "
              "best and, for a backdoor, its target's colour and additive flip rates; seconds of the colour phase.",
              "", "| model | truth | additive verdict | with colour | top colour classes | target: colour / additive "
              "| colour s / scan s |", "|---|---|---|---|---|---|---|"]
    for row in rows:
        plain = decide(additive(row["classes"]), "excess_flip_rate")
        both = decide(row["classes"], "excess_flip_rate")
        top = sorted(row["classes"], key=lambda c: -c["colour_flip_rate"])[:3]
        target = next((c for c in row["classes"] if c["name"] == row["true_target"]), None)
        truth = f"{row['attack']} -> {row['true_target']}" if row["backdoored"] else "clean"
        lines.append(f"| {row['model']} | {truth} | {_said(plain)} | {_said(both)} | "
                     + ", ".join(f"{c['name']} {c['colour_flip_rate']:.0%}" for c in top) + " | "
                     + (f"{target['colour_flip_rate']:.0%} / {target['flip_rate']:.0%}" if target else "-")
                     + f" | {row['colour_seconds']:.1f} / {row['seconds']:.1f} |")
    (HERE / "clean_crossings.md").write_text("\n".join(lines) + "\n")
    print(f"wrote {HERE / 'clean_crossings.md'}")


if __name__ == "__main__":
    main()
