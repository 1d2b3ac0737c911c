"""How the repair recipe was chosen (issue 4): recipes compared on backdoored models, ground truth measured.

    .venv/bin/python benchmarks/repair_recipes.py [--models a,b] [--threads 2]

Each model's trigger for its true target class is inverted with the faithful schedule on three candidate
classes (in that schedule a class's trigger does not depend on the others, so it is exactly the one a full
scan reconstructs); every recipe then repairs a fresh copy of the model against it. Measured: the attack's
own trigger (ground truth) on the non-target test images, and clean test accuracy, before and after.
Writes benchmarks/repair_recipes.md / .json.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from inspector.candidates import candidate_from_tensors  # noqa: E402
from inspector.data import load_shipped_pool, load_task  # noqa: E402
from inspector.invert import ScanConfig, run_scan, split_pool  # noqa: E402
from inspector.lab.truth import attack_success_rate, read_ground_truth  # noqa: E402
from inspector.prompts import open_model  # noqa: E402
from inspector.repair import RepairConfig, run_repair  # noqa: E402
from inspector.zoo import resolve_model  # noqa: E402

HERE = Path(__file__).resolve().parent
RECIPES = {
    "10 ep, lr 2e-3": RepairConfig(epochs=10, lr=2e-3),
    "20 ep, lr 5e-3": RepairConfig(epochs=20, lr=5e-3),
    "10 ep, lr 5e-3": RepairConfig(epochs=10, lr=5e-3),
    "20 ep, lr 5e-3, re-invert every 5": RepairConfig(epochs=20, lr=5e-3, refresh_every=5),
    "10 ep, lr 5e-3, re-invert every 2": RepairConfig(epochs=10, lr=5e-3, refresh_every=2),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", default="blended-cocoop,wanet-cocoop,badnets-cocoop,badclip-cocoop")
    parser.add_argument("--recipes", default=";".join(RECIPES), help="';'-separated names of RECIPES")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    task, pool = load_task(), load_shipped_pool().pixels
    rows: list[dict[str, Any]] = []
    for name in [m for m in args.models.split(",") if m]:
        path = resolve_model(name)
        truth = read_ground_truth(path)
        model = open_model(path, device="cpu")
        others = [k for k in range(len(model.class_names)) if k != truth.target][:2]
        config = ScanConfig(schedule="faithful", classes=(truth.target, *others))
        result = run_scan(model, pool, config)
        trigger = candidate_from_tensors("inspector", result.triggers[truth.target], result.settings["epsilon"])
        fit, held = split_pool(pool, config.pool_size, config.holdout, config.seed)
        for recipe in [r for r in args.recipes.split(";") if r]:
            model = open_model(path, device="cpu")
            before = attack_success_rate(model, truth.trigger, task.test_pixels, truth.target, task.test_labels)
            started = time.time()
            finished = run_repair(model, trigger, truth.target, task.train_pixels, task.train_labels,
                                  task.test_pixels, task.test_labels, held, RECIPES[recipe], invert_pixels=fit)
            after = attack_success_rate(model, truth.trigger, task.test_pixels, truth.target, task.test_labels)
            rows.append({"model": name, "attack": truth.attack, "recipe": recipe, "asr_before": round(before, 4),
                         "asr_after": round(after, 4), "accuracy_before": finished.before.accuracy,
                         "accuracy_after": finished.after.accuracy, "trigger_asr_after": finished.after.flip_rate,
                         "seconds": round(time.time() - started, 1)})
            print(rows[-1], flush=True)
    write(rows)


def write(rows: list[dict[str, Any]]) -> None:
    (HERE / "repair_recipes.json").write_text(json.dumps(rows, indent=1) + "\n")
    lines = ["# Repair recipes compared (issue 4)", "",
             "`python benchmarks/repair_recipes.py`: the true target's reconstructed trigger (faithful schedule), "
             "each recipe on a fresh copy; asr = the attack's own trigger on the non-target test images.", "",
             "| recipe | mean asr before | mean asr after | mean accuracy before | after | worst accuracy change |",
             "|---|---|---|---|---|---|"]
    for recipe in dict.fromkeys(r["recipe"] for r in rows):
        part = [r for r in rows if r["recipe"] == recipe]

        def mean(key: str, part: list[dict[str, Any]] = part) -> float:
            return sum(r[key] for r in part) / len(part)

        worst = min(r["accuracy_after"] - r["accuracy_before"] for r in part)
        lines.append(f"| {recipe} | {mean('asr_before'):.1%} | {mean('asr_after'):.1%} | "
                     f"{mean('accuracy_before'):.1%} | {mean('accuracy_after'):.1%} | {worst * 100:+.1f} pts |")
    lines += ["", "| model | recipe | asr | accuracy | reconstructed trigger after | s |", "|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['model']} ({r['attack']}) | {r['recipe']} | {r['asr_before']:.1%} -> "
                     f"{r['asr_after']:.1%} | {r['accuracy_before']:.1%} -> {r['accuracy_after']:.1%} | "
                     f"{r['trigger_asr_after']:.1%} | {r['seconds']:.0f} |")
    (HERE / "repair_recipes.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
