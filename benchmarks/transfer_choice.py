"""Does the transfer gap tell a prompt-level Blended backdoor from a natural blend attractor? (issue 18, dev zoo)

Adopted as the scan's transfer check (inspector/transfer.py): the second table is the engine's check on every dev
model it looks at, read from benchmarks/detection_dev.json.

Why a candidate: the blend family finds 3 of the 4 real dev Blended backdoors the default misses but flags clean
learners whose blends reach *led light* (benchmarks/blend_choice.md), and the Blended CoCoOp backdoors' colour
evidence does not hold on held-out images (benchmarks/confirmation_choice.md). On encoder-level backdoors, a blend
trigger that carries over least to clean learners named each target (benchmarks/encoder_transfer.md). Here the same
measurement (``encoder_transfer.transfer_gaps``: every class's blend trigger at 10% opacity stepped 40 times on the
delivered model, measured on the scan's held-out images there and on three clean CoCoOp reference learners of
varied recipes) on the dev zoo's blocked Blended CoCoOp backdoors and on clean CoCoOp learners, among them the one
the blend family flags; then on two default-recipe clean learners and a BadNets CoCoOp backdoor the default misses.

    .venv/bin/python benchmarks/transfer_choice.py        # writes transfer_choice.md / .json

Only dev models are read.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.encoder_transfer import prepared, transfer_gaps  # noqa: E402
from inspector.lab.truth import read_ground_truth  # noqa: E402
from inspector.prompts import open_model  # noqa: E402

HERE = Path(__file__).resolve().parent
DEV = HERE / "zoos" / "dev"
CLEAN = {"coop": (3000, 3003, 3006), "cocoop": (3100, 3104, 3108)}  # three of each shipped reference's learners
MODELS = ("blended_cocoop_s2952_t2", "blended_cocoop_s2953_t13", "blended_cocoop_s2954_t17",
          "clean_cocoop_c4_sgd_s2103", "clean_cocoop_c8_adamw_s2300", "clean_cocoop_c4_sgd_s2302",
          # then: two default-recipe clean learners and a BadNets backdoor the default also misses
          "clean_cocoop_default_s2100", "clean_cocoop_default_s2101", "badnets_cocoop_s2955_t10",
          # then the rest of the dev models a confirmation would look at: unflagged by the default scan, some family's
          # top index past 2 (CoOp models against CoOp reference learners)
          "blended_coop_s2700_t11", "blended_coop_s2800_t16", "siba_coop_s2980_t3", "clean_coop_c4_sgd_s2200",
          "clean_cocoop_c16_adamw_s2301", "clean_cocoop_c8_adamw_s2105")
OUT = HERE / "transfer_choice"


def table(results: list[dict]) -> str:
    lines = ["# The transfer gap on prompt-level dev models (adopted as the transfer check)", "",
             __doc__.split("\n\n")[1].replace("\n", " "), "", __doc__.split("\n\n")[2].replace("\n", " "), "",
             "`python benchmarks/transfer_choice.py`.", "",
             "| model | truth | top class | its index | its trigger: delivered / clean learners | the truth's index "
             "| s | ran on |", "|---|---|---|---|---|---|---|---|"]
    for r in results:
        top = next(c for c in r["classes"] if c["name"] == r["suspect"])
        truth = next((c for c in r["classes"] if c["name"] == r["truth"]), None)
        lines.append(f"| {r['model']} | {r['truth'] or 'clean'} | {r['suspect']} | {r['index']:.2f} | "
                     f"{top['delivered']:.0%} / {top['clean']:.0%} | {truth['index'] if truth else '—'} | "
                     f"{r['seconds']:.0f} | {r['device']} |")
    return "\n".join(lines) + "\n"


def adopted_table() -> str:
    """The engine's transfer check on the dev models it looks at (from the dev zoo's detection table)."""
    rows = [r for r in json.loads((HERE / "detection_dev.json").read_text())["scans"]["inspector + reference"]
            if r.get("transfer")]
    lines = ["", "## The check adopted, on every dev model it looks at", "",
             "The scan's default (`detect.transfer_candidates`, `transfer.check`, `detect.confirmed_by_transfer`): "
             "when no index passes the rule but some family's top index passes the threshold 2, the scan's two "
             "highest classes get the blend trigger above; each class's gap is compared with the same class's gaps "
             "in the shipped reference's other clean learners (5 CoOp, 9 CoCoOp; 3 more of each carry the "
             "triggers over), in units of their spread (at least 0.05, the per-class floor). Flagged: index past "
             "3 (1.5 times the threshold) and the pattern flipping at least 70% of the delivered model's held-out "
             "images (the lab's bar for a real backdoor's OOD reach). Without the 70% gate, three clean learners "
             "passed (indices 2.42-3.02, patterns at 53-68%); with it and the threshold 2, one (*led light*, "
             "2.51, 84%); the backdoors' targets stood at 3.55-8.51 with patterns at 78-85%. "
             "`python benchmarks/detection.py --zoo benchmarks/zoos/dev --table-only` measures it.", "",
             "| model | truth | checked: delivered / clean learners / clean learners' own gap / index | verdict |",
             "|---|---|---|---|"]
    for r in rows:
        checked = "; ".join(f"{c['name']} {c['delivered']:.0%} / {c['clean']:.0%} / {c['reference_gap']:+.0%} / "
                            f"{c['transfer_index']:.2f}" for c in r["transfer"])
        verdict = (f"**flagged**, {r['suspect']}" + (" (transfer)" if r.get("confirmed_by") else "")
                   if r["flagged"] else "not flagged")
        lines.append(f"| {r['model']} | {r['true_target'] or 'clean'} | {checked} | {verdict} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    pool, _, done = prepared("cocoop", (), OUT)
    learners: dict[str, list] = {}
    results = []
    for name in MODELS:
        if name not in done:
            path = DEV / f"{name}.safetensors"
            truth, model = read_ground_truth(path), open_model(path)
            if model.kind not in learners:
                learners[model.kind] = prepared(model.kind, CLEAN[model.kind], OUT)[1]
            done[name] = {"model": name, "truth": truth.target_name if truth else None,
                          **transfer_gaps(model, learners[model.kind], pool)}
            OUT.with_suffix(".json").write_text(json.dumps(list(done.values()), indent=1) + "\n")
        results.append(done[name])
        print(json.dumps({k: v for k, v in done[name].items() if k != "classes"}), flush=True)
    OUT.with_suffix(".md").write_text(table(results) + adopted_table())


if __name__ == "__main__":
    main()
