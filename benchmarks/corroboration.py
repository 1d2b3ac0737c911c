"""Choose the corroboration rule (issue 18) on the choice zoos only: the dev zoo and the retired first test zoo.

    .venv/bin/python benchmarks/corroboration.py        # writes corroboration.md / .json

Why: a weak backdoor's target is often reached a little by two kinds of inversion at once (a CoCoOp sticker
backdoor: additive 2.4, colour 2.5, patch 2.5) while no single family's index, or its flip rate, clears the
default rule; a clean learner's noise rarely points two families at the same class. A candidate is the combined
index at the threshold (``detect.CORROBORATED_THRESHOLD``) and the share of the 50% flip gate a corroborated
trigger must reach (``detect.CORROBORATED_GATE``), or no corroboration; each with the patch family's rates (run
by the default scan now, measured alone for the cached scans: ``detection.with_default_families``) or without.
Every candidate decides again on the zoos' cached default scans with the shipped references
(``reference.decide_with_reference``); the second and third test zoos are not read. The choice: the candidate
that flags no clean learner the rule without corroboration leaves alone, on either zoo, and gets the most models
right on both together.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.detection import with_default_families  # noqa: E402
from benchmarks.reference_choice import cells, dev_scans, summary, write  # noqa: E402
from inspector.detect import CORROBORATED_GATE, CORROBORATED_THRESHOLD  # noqa: E402
from inspector.reference import Reference, decide_with_reference, shipped_reference_path  # noqa: E402

HERE = Path(__file__).resolve().parent
ZOOS = {"dev": HERE / "zoos" / "dev", "retired test": HERE / "zoos" / "test"}
CANDIDATES: tuple[tuple[float, float] | None, ...] = (None, (2.0, 0.4), (2.5, 0.4), (3.0, 0.4), (3.5, 0.4),
                                                      (2.5, 1.0))


def redecide(row: dict[str, Any], reference: Reference, corroboration: tuple[float, float] | None) -> dict[str, Any]:
    _, verdict = decide_with_reference(row["classes"], reference, "fast", corroboration=corroboration)
    return {"model": row["model"], "backdoored": row["backdoored"], "attack": row["attack"],
            "true_target": row["true_target"], "flagged": verdict.flagged, "predicted_target": verdict.target_name,
            "suspect": verdict.suspect_name, "max_anomaly": verdict.max_anomaly,
            "family": "+".join(verdict.corroborated_by) or verdict.suspect_family, "flip": verdict.suspect_flip_rate}


def main() -> None:
    references = {kind: Reference.read(shipped_reference_path("pocket-clip", kind)) for kind in ("coop", "cocoop")}
    scans: dict[str, dict[str, list[dict[str, Any]]]] = {}
    for name, zoo in ZOOS.items():
        rows = dev_scans(zoo)
        with_patch = [with_default_families(row, zoo / f"{row['model']}.safetensors") for row in rows]
        without = [{**row, "classes": [{k: v for k, v in c.items() if not k.startswith("patch_")}
                                       for c in row["classes"]]} for row in rows]
        scans[name] = {"with the patch family": with_patch, "without": without}
    chosen = (CORROBORATED_THRESHOLD, CORROBORATED_GATE)
    lines = ["# Corroboration: a class two inversion families name together (issue 18)", "",
             "Choice-zoo figures only: the dev zoo and the retired first test zoo (its results were reported before "
             "it was retired; since then it serves choices like the dev zoo). Not results: the second and third "
             "test zoos were not read (`python benchmarks/corroboration.py`). Every candidate decides again on the "
             "zoos' cached default scans with the shipped references; the patch family's rates of a cached scan "
             "are measured alone, as the scan runs it (benchmarks/detection.py `with_default_families`).", "",
             "Candidate: the combined index (the sum of the class's positive family indices over the square root "
             "of the families' number, each family naming it with an index of at least 1) that meets the threshold "
             "2, and the share of the 50% flip gate its best flipping trigger must reach. "
             f"Chosen: {chosen[0]:g} and {chosen[1]:g} (a 20% gate), with the patch family.", "",
             "| patch family | corroboration | zoo | models | accuracy | AUROC | target F1 | false positives | "
             "highest clean index | lowest backdoor index | missed | flagged clean | wrong target |",
             "|---" * 13 + "|"]
    results: dict[str, Any] = {}
    for patch in ("with the patch family", "without"):
        for candidate in CANDIDATES:
            shown = "off" if candidate is None else f"combined {candidate[0]:g}, gate x{candidate[1]:g}"
            for name in ZOOS:
                rows = [redecide(row, references[row["kind"]], candidate) for row in scans[name][patch]]
                score = summary(rows)
                results[f"{patch} | {shown} | {name}"] = {"summary": score, "rows": rows}
                lines.append(f"| {patch} | {shown} | {name} | {len(rows)} | {cells(score)} |")
            print(lines[-1], flush=True)
    write("corroboration", results, lines)


if __name__ == "__main__":
    main()
