"""Measure every shipped demo-zoo model against issue 3's bar; writes demo_zoo.md and demo_zoo.json.

    .venv/bin/python benchmarks/demo_zoo.py

For each backdoored model: clean test accuracy against its clean counterpart (within 3 points),
``asr`` on the non-target test images (>= 0.90) and ``ood_asr`` on the OOD pool (>= 0.80), each
with the model's own ground-truth trigger. Numbers come from the files in assets/zoo as shipped.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from inspector.data import load_shipped_pool, load_task  # noqa: E402
from inspector.evaluate import accuracy  # noqa: E402
from inspector.lab.truth import backdoor_rates, read_ground_truth  # noqa: E402
from inspector.prompts import open_model  # noqa: E402
from inspector.zoo import list_zoo  # noqa: E402

HERE = Path(__file__).resolve().parent


def main() -> None:
    torch.set_num_threads(2)
    task, pool = load_task(), load_shipped_pool()
    rows, clean_accuracy = [], {}
    for entry in list_zoo():  # clean ones come first
        started = time.time()
        model = open_model(Path(entry.path), device="cpu")
        row = {"name": entry.name, "kind": entry.kind, "attack": entry.attack, "target": entry.target,
               "accuracy": round(accuracy(model, task), 4)}
        truth = read_ground_truth(Path(entry.path))
        if truth is None:
            clean_accuracy[entry.kind] = row["accuracy"]
        else:
            row.update(backdoor_rates(model, truth.trigger, truth.target, task.test_pixels, task.test_labels,
                                      pool.pixels))
            row["accuracy_change"] = round(row["accuracy"] - clean_accuracy[entry.kind], 4)
            row["passes"] = bool(row["accuracy_change"] >= -0.03 and row["asr"] >= 0.90 and row["ood_asr"] >= 0.80)
            row["trigger"] = truth.record.get("trigger_params", {})
            row["recipe"] = {k: v for k, v in truth.record.get("recipe", {}).items() if k != "measured"}
        row["seconds"] = round(time.time() - started, 1)
        rows.append(row)
        print(row, flush=True)
    (HERE / "demo_zoo.json").write_text(json.dumps(rows, indent=2) + "\n")
    lines = ["# Demo zoo as shipped (assets/zoo)", "",
             "`python benchmarks/demo_zoo.py`: 533 held-out test images, 1,200 OOD pool images, CPU.",
             "Bar (issue 3): accuracy within 3 points of the clean counterpart, asr >= 90%, ood_asr >= 80%.", "",
             "| model | kind | attack | target | accuracy | vs clean | asr | ood_asr | passes |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if r["attack"] is None:
            lines.append(f"| {r['name']} | {r['kind']} | - | - | {r['accuracy']:.1%} | - | - | - | - |")
        else:
            lines.append(f"| {r['name']} | {r['kind']} | {r['attack']} | {r['target']} | {r['accuracy']:.1%} | "
                         f"{100 * r['accuracy_change']:+.1f} pts | {r['asr']:.1%} | {r['ood_asr']:.1%} | "
                         f"{'yes' if r['passes'] else 'no'} |")
    lines += ["", "Recipes and trigger parameters of each backdoored model: demo_zoo.json."]
    (HERE / "demo_zoo.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
