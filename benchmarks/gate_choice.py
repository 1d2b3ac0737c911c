"""Which class a flag names (issue 18), chosen on the *dev* zoo only: the highest index overall, flagged only if its
trigger passes the 50% flip gate (the rule shipped), or the highest index among the classes whose triggers pass it
(``decide(..., gate_first=True)``).

Why a candidate: the fourth test zoo's one default scan (benchmarks/detection_test4.md) missed a BadCLIP CoCoOp
backdoor whose target's additive trigger flips 90% of images, 47 points above clean learners, because a colour
trigger of *smiley face* flipping 38% (none in clean learners) had the higher index and failed the gate. That test
figure is reported as it came out; the candidate is judged here, on the dev zoo, and only an adopted candidate
would decide the fourth test zoo again (once).

    .venv/bin/python benchmarks/gate_choice.py     # writes gate_choice.md / .json

Both rules decide again, with the engine's ``decide_with_reference`` and the shipped references, (a) every dev
model's cached default scan and (b) the seeded scans of benchmarks/verdict_stability.py (the 15 borderline dev
models, seeds 0, 1, 2). The test zoos are not read.

The rule, set before the candidate's decisions were read: the candidate replaces the shipped rule only if on (a)
its accuracy and target F1 are no lower and it flags no more clean learners, and on (b) it flags no clean learner
under a seed where the shipped rule does not and gives no fewer right answers.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.family_choice import KINDS  # noqa: E402
from benchmarks.reference_choice import cells, dev_preamble, summary, write  # noqa: E402
from benchmarks.reference_seeds import decided, dev_inputs, seeded  # noqa: E402
from benchmarks.verdict_stability import right  # noqa: E402
from inspector.reference import Reference, shipped_reference_path  # noqa: E402

HERE = Path(__file__).resolve().parent
DEV = HERE / "zoos" / "dev"
CANDIDATES = {"highest index, then the gate (shipped)": False, "highest index among classes past the gate": True}


def main() -> None:
    scans, stability, seeds = dev_inputs()
    references = {kind: Reference.read(shipped_reference_path("pocket-clip", kind)) for kind in KINDS}
    results: dict[str, Any] = {}
    lines = dev_preamble("Which class a flag names: the gate after the highest index, or before (dev zoo)", scans,
                         "with the shipped references and families", "gate_choice",
                         "; the seeded scans are benchmarks/verdict_stability.py's.", DEV) + [
        "| rule | models | accuracy | AUROC | target F1 | false positives | highest clean index | "
        "lowest backdoor index | missed | flagged clean | wrong target | "
        f"borderline models x seeds right | clean flagged under seeds {', '.join(seeds)} |", "|---" * 13 + "|"]
    for label, gate_first in CANDIDATES.items():
        rows = [decided(scan, references[scan["kind"]], gate_first=gate_first) for scan in scans]
        score = summary(rows)
        borderline = seeded(stability, references, gate_first=gate_first)
        right_seeds = sum(right(r["truth"], r["seeds"][s]) for r in borderline for s in seeds)
        clean_flags = sorted(f"{r['model']} (seed {s})" for r in borderline if r["truth"] == "clean"
                             for s in seeds if r["seeds"][s]["flagged"])
        results[label] = {"summary": score, "rows": rows, "borderline": borderline, "right": right_seeds,
                          "clean_flags": clean_flags}
        lines.append(f"| {label} | {len(rows)} | {cells(score)} | {right_seeds} of "
                     f"{len(borderline) * len(seeds)} | {'; '.join(clean_flags) or 'none'} |")
    shipped, candidate = (results[label] for label in CANDIDATES)
    adopted = (candidate["summary"]["accuracy"] >= shipped["summary"]["accuracy"]
               and candidate["summary"]["target_f1"] >= shipped["summary"]["target_f1"]
               and candidate["summary"]["false_positives"] <= shipped["summary"]["false_positives"]
               and set(candidate["clean_flags"]) <= set(shipped["clean_flags"])
               and candidate["right"] >= shipped["right"])
    results["adopted"] = adopted
    changed = [(a, b) for a, b in zip(shipped["rows"], candidate["rows"], strict=True)
               if (a["flagged"], a["predicted_target"]) != (b["flagged"], b["predicted_target"])]
    lines += ["", "The rule, set before the candidate's decisions were read: it replaces the shipped rule only if on "
              "the whole dev zoo its accuracy and target F1 are no lower and it flags no more clean learners, and on "
              "the borderline models' seeded scans it flags no clean learner under a seed where the shipped rule "
              "does not and gives no fewer right answers. "
              + ("**Met: the candidate is adopted.**" if adopted else "**Not met: the shipped rule stays.**"),
              "", "## Dev models whose verdict the candidate changes", "",
              "| model | truth | shipped rule | candidate |", "|---|---|---|---|",
              *(f"| {a['model']} | {a['true_target'] or 'clean'} | {_verdict(a)} | {_verdict(b)} |"
                for a, b in changed)]
    if not changed:
        lines.append("| (none) | | | |")
    write("gate_choice", results, lines)


def _verdict(row: dict[str, Any]) -> str:
    return (f"**{row['predicted_target']}** ({row['max_anomaly']:.2f}, {row['family']})" if row["flagged"]
            else f"- ({row['suspect']}, {row['max_anomaly']:.2f})")


if __name__ == "__main__":
    main()
