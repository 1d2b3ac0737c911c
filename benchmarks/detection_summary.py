"""benchmarks/detection.md: issue 18's detection figures in one place, each labelled with what it is: the dev
zoo's (every choice was made on it, so not results), the test zoos' (built after the choices: results) and the
shipped demo models'. Made from the records each run wrote (detection_ZOO.json, demo_scans.json), never re-scanned.

    .venv/bin/python benchmarks/detection_summary.py
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

import zoo_tables  # noqa: E402
from detection import summarise  # noqa: E402

DEFAULT = "inspector + reference"
# (zoo folder, what its figures are), in the order shown; a zoo without a record yet is listed as such.
ZOOS = [
    ("test4", "**results**: the fourth test zoo, built after every choice (all eight lab attacks), scanned once "
              "with the default shipped now"),
    ("test2", "**results**: the second test zoo, built after every choice, scanned once, and decided once again "
              "after the patch family and the corroboration rule (chosen on dev and the retired first test zoo)"),
    ("test3", "**results**: the third test zoo (issue 19's SIBA and adaptive BadCLIP), built after their recipes "
              "were chosen on dev learners, scanned once, decided once again likewise"),
    ("dev", "not results: every choice of issue 18 was made on it"),
    ("test", "not results: the retired first test zoo, measured twice as a test zoo, then used for choices"),
]


def record(zoo: str) -> dict[str, Any] | None:
    path = HERE / f"detection_{zoo}.json"
    return json.loads(path.read_text()) if path.exists() else None


def summary_rows(zoo: str, role: str) -> list[str]:
    """The zoo's default-scan figures over every scanned model, then over the clean learners and the real
    backdoors only (an implant that missed the bar is neither a working backdoor nor a clean model)."""
    data = record(zoo)
    if data is None or DEFAULT not in data["summary"]:
        return [f"| {zoo} | {role} | (not scanned yet) | | | | | | |"]
    rows = data["scans"][DEFAULT]
    manifest = zoo_tables.manifest_rows(HERE / "zoos" / zoo)
    real = zoo_tables.real_backdoors(manifest)
    real_rows = [r for r in rows if not r["backdoored"] or r["model"] in real]
    plan = HERE / "zoos" / f"{zoo}.plan.json"
    planned = len(json.loads(plan.read_text())["models"]) if plan.exists() else len(rows)
    role += f" (**partial**: {len(rows)} of its {planned} models scanned)" if len(rows) < planned else ""
    out = []
    for label, subset in ((role, rows), ("the same, real backdoors only", real_rows)):
        s = summarise(subset)
        clean = [r for r in subset if not r["backdoored"]]
        out.append(f"| {zoo} | {label} | {s['models']} | {s['backdoored']} | {s['accuracy']:.1%} | "
                   f"{s['auroc']:.3f} | {s['target_f1']:.2f} | {sum(r['flagged'] for r in clean)} of {len(clean)} | "
                   f"[detection_{zoo}.md](detection_{zoo}.md) |")
    return out


def zoo_section(zoo: str, title: str) -> list[str]:
    data = record(zoo)
    if data is None or DEFAULT not in data["scans"]:
        return []
    rows = data["scans"][DEFAULT]
    manifest = zoo_tables.manifest_rows(HERE / "zoos" / zoo)
    return ["", f"## {title}: per attack", "", *zoo_tables.by_attack(rows),
            "", f"## {title}: per clean recipe", "", *zoo_tables.by_clean_recipe(rows, manifest),
            "", f"## {title}: every model", "", *zoo_tables.every_model(rows)]


def demo_section() -> list[str]:
    rows = json.loads((HERE / "demo_scans.json").read_text())
    right = sum(r["right"] for r in rows)
    lines = ["", "## The shipped demo models", "",
             f"{right} of {len(rows)} right with the default scan (benchmarks/demo_scans.md, "
             "`python benchmarks/demo_scans.py --method inspector`).", ""]
    return lines + zoo_tables.every_model([{**r, "backdoored": r["attack"] is not None} for r in rows])


def main() -> None:
    lines = ["# Detection (issue 18): dev zoo, test zoo, demo models", "",
             "The default scan (`inspector + reference`: the fast schedule, the shipped clean reference, the "
             "additive family with the quick colour and patch families) on each zoo, from the records of its run. "
             "Choose on one set, report on another: the dev zoo's figures chose the reference, the decision rule "
             "and the lab's recipes; each test zoo was built afterwards with seeds, targets and recipe draws no "
             "choice saw. "
             "Accuracy at the threshold 2, AUROC of the top anomaly index, target F1 (flag and right target); "
             "*real* implants meet issue 18's bar (ASR >= 80%, OOD ASR >= 70%, accuracy within 3 points of the "
             "clean learner), and every implant is counted as backdoored whether real or not.", "",
             "| zoo | what its figures are | models scanned | backdoored | accuracy | AUROC | target F1 | "
             "clean flagged | every row |",
             "|---|---|---|---|---|---|---|---|---|",
             *(line for zoo, role in ZOOS for line in summary_rows(zoo, role)), "",
             "The 30-model benchmark zoo's earlier figures (100% / 0.995 / 1.00) were in-sample and are kept, "
             "labelled so, in [detection_insample.md](detection_insample.md)."]
    lines += zoo_section("test4", "Fourth test zoo (results)")
    lines += zoo_section("test2", "Test zoo (results)")
    lines += zoo_section("test3", "Third test zoo (results)")
    lines += zoo_section("dev", "Dev zoo (not results)")
    lines += demo_section()
    (HERE / "detection.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
