"""Does the transfer gap tell a prompt-level Blended backdoor from a natural blend attractor? (issue 18, dev zoo)

Why a candidate: the blend family finds 3 of the 4 real dev Blended backdoors the default misses but flags clean
learners whose blends reach *led light* (benchmarks/blend_choice.md), and the Blended CoCoOp backdoors' colour
evidence does not hold on held-out images (benchmarks/confirmation_choice.md). On encoder-level backdoors, a blend
trigger that carries over least to clean learners named each target (benchmarks/encoder_transfer.md). Here the same
measurement (``encoder_transfer.transfer_gaps``: every class's blend trigger at 10% opacity stepped 40 times on the
delivered model, measured on the scan's held-out images there and on three clean CoCoOp reference learners of
varied recipes) on the dev zoo's blocked Blended CoCoOp backdoors and on clean CoCoOp learners, among them the one
the blend family flags; then on two default-recipe clean learners and a BadNets CoCoOp backdoor the default misses.

    .venv/bin/python benchmarks/transfer_choice.py        # writes transfer_choice.md / .json

Only dev models are read; nothing here is adopted.
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
CLEAN = (3100, 3104, 3108)  # three of the shipped CoCoOp reference's learners (varied recipes)
MODELS = ("blended_cocoop_s2952_t2", "blended_cocoop_s2953_t13", "blended_cocoop_s2954_t17",
          "clean_cocoop_c4_sgd_s2103", "clean_cocoop_c8_adamw_s2300", "clean_cocoop_c4_sgd_s2302",
          # then: two default-recipe clean learners and a BadNets backdoor the default also misses
          "clean_cocoop_default_s2100", "clean_cocoop_default_s2101", "badnets_cocoop_s2955_t10")
OUT = HERE / "transfer_choice"


def table(results: list[dict]) -> str:
    lines = ["# The transfer gap on prompt-level dev models (not adopted)", "",
             __doc__.split("\n\n")[1].replace("\n", " "), "", "`python benchmarks/transfer_choice.py`.", "",
             "| model | truth | top class | its index | its trigger: delivered / clean learners | the truth's index "
             "| s | ran on |", "|---|---|---|---|---|---|---|---|"]
    for r in results:
        top = next(c for c in r["classes"] if c["name"] == r["suspect"])
        truth = next((c for c in r["classes"] if c["name"] == r["truth"]), None)
        lines.append(f"| {r['model']} | {r['truth'] or 'clean'} | {r['suspect']} | {r['index']:.2f} | "
                     f"{top['delivered']:.0%} / {top['clean']:.0%} | {truth['index'] if truth else '—'} | "
                     f"{r['seconds']:.0f} | {r['device']} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    pool, clean, done = prepared("cocoop", CLEAN, OUT)
    results = []
    for name in MODELS:
        if name not in done:
            path = DEV / f"{name}.safetensors"
            truth = read_ground_truth(path)
            done[name] = {"model": name, "truth": truth.target_name if truth else None,
                          **transfer_gaps(open_model(path), clean, pool)}
            OUT.with_suffix(".json").write_text(json.dumps(list(done.values()), indent=1) + "\n")
        results.append(done[name])
        print(json.dumps({k: v for k, v in done[name].items() if k != "classes"}), flush=True)
    OUT.with_suffix(".md").write_text(table(results))


if __name__ == "__main__":
    main()
