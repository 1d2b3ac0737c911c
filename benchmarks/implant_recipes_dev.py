"""Fit the lab's implant recipes on the *dev* zoo (issue 18): every backdoor of the test zoo must be a real one
(ASR >= 0.8, OOD ASR >= 0.7, clean accuracy within 3 points of the clean learner it was implanted into).

    .venv/bin/python benchmarks/implant_recipes_dev.py sticker-coop epochs=80 poison_weight=4 sticker_size=16
    .venv/bin/python benchmarks/implant_recipes_dev.py --table      # re-make implant_recipes_dev.md

Each run implants one of the dev plan's backdoors (named by a prefix of its name) into its dev clean base
with ``ImplantConfig.for_attack`` plus the overrides given, measures it as the zoo builder does, and is
appended to ``implant_recipes_dev.json``; the model itself is not kept. Only dev models are ever used here.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from inspector.backbone import load_backbone  # noqa: E402
from inspector.data import load_shipped_pool, load_task  # noqa: E402
from inspector.evaluate import accuracy  # noqa: E402
from inspector.lab.implant import KIND_RECIPES, ImplantConfig, context_rms_of, run_implant  # noqa: E402
from inspector.lab.truth import backdoor_rates  # noqa: E402
from inspector.lab.zoo_builder import read_plan  # noqa: E402
from inspector.prompts import load_learner  # noqa: E402

HERE = Path(__file__).resolve().parent
DEV = HERE / "zoos" / "dev"
RUNS = HERE / "implant_recipes_dev.json"
BAR = {"asr": 0.8, "ood_asr": 0.7, "accuracy_drop": 0.03}


def parse_value(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return text


def run(prefix: str, overrides: dict[str, Any]) -> dict[str, Any]:
    """Implant the dev plan's first backdoor named ``prefix…`` with ``overrides``; its measurements."""
    plan = read_plan(HERE / "zoos" / "dev.plan.json")
    items = [item for item in plan if item.attack and item.name.startswith(prefix)]
    if not items:
        raise SystemExit(f"no dev backdoor is named {prefix}…")
    item = items[0]
    backbone, task, pool = load_backbone(), load_task(), load_shipped_pool()
    assert item.base is not None
    model = load_learner(DEV / (item.base.replace("-", "_") + ".safetensors"), backbone)
    base_accuracy = accuracy(model, task)
    target, seed = overrides.get("target", item.target), overrides.get("seed", item.seed)  # another draw, same base
    recipe = {k: v for k, v in overrides.items() if k not in ("target", "seed")}
    config = ImplantConfig.for_attack(item.attack, target, item.kind, seed=seed, **recipe)
    started = time.time()
    finished = run_implant(model, task.train_pixels, task.train_labels, config)
    rates = backdoor_rates(model, finished.trigger, target, task.test_pixels, task.test_labels, pool.pixels)
    return {"model": item.name, "base": item.base, "overrides": overrides, "recipe": config.recipe(64),
            "base_accuracy": round(base_accuracy, 4), "accuracy": round(accuracy(model, task), 4), **rates,
            "seconds": round(time.time() - started, 1)}


def base_context_rms(name: str) -> float:
    """RMS of a dev learner's context vectors (read from its file)."""
    return context_rms_of(load_file(DEV / (name.replace("-", "_") + ".safetensors"))["ctx"])


def passes(row: dict[str, Any]) -> bool:
    return (row["asr"] >= BAR["asr"] and row["ood_asr"] >= BAR["ood_asr"]
            and row["base_accuracy"] - row["accuracy"] <= BAR["accuracy_drop"])


def table(rows: list[dict[str, Any]]) -> str:
    lines = ["# Implant recipes fitted on the dev zoo (issue 18)", "",
             "Dev models only (benchmarks/zoos/dev.plan.json): each run implants one dev backdoor into its dev clean "
             "base with the attack's recipe (`ImplantConfig.for_attack`) plus the overrides shown (`target` / `seed`: "
             "another target or trigger draw on the same base). Runs 1-16 ran alone on 2 CPU threads; later runs "
             "on 1 thread beside a zoo build, so their seconds are not comparable. "
             f"Bar: ASR >= {BAR['asr']:.0%}, OOD ASR >= {BAR['ood_asr']:.0%}, clean accuracy at most "
             f"{BAR['accuracy_drop'] * 100:.0f} points under the base's. "
             "`python benchmarks/implant_recipes_dev.py MODEL-PREFIX key=value ...`", "",
             "| run | model | overrides | base accuracy | accuracy | ASR | OOD ASR | meets the bar | s |",
             "|---|---|---|---|---|---|---|---|---|"]
    for i, row in enumerate(rows, 1):
        over = ", ".join(f"{k} {v}" for k, v in row["overrides"].items()) or "(attack recipe)"
        lines.append(f"| {i} | {row['model']} | {over} | {row['base_accuracy']:.1%} | {row['accuracy']:.1%} | "
                     f"{row['asr']:.1%} | {row['ood_asr']:.1%} | {'yes' if passes(row) else 'no'} | "
                     f"{row['seconds']:.0f} |")
    distilled = [str(i) for i, row in enumerate(rows, 1) if "distill" in row["overrides"]]
    if distilled:
        lines += ["", f"Runs {', '.join(distilled)} added a knowledge-distillation term (KL to the starting model's "
                      "predictions on clean images, T = 2); it lowered the ASR without keeping the accuracy, and "
                      "was not kept."]
    scaled = [str(i) for i, row in enumerate(rows, 1) if "context_rms" in row["overrides"]]
    if scaled:
        bases = ", ".join(f"{base} {base_context_rms(base):.2f}" for base in (rows[int(i) - 1]["base"] for i in scaled))
        defaults = ", ".join(f"{base_context_rms(name):.2f}" for name in ("clean-coop-default-s2000",
                                                                         "clean-coop-default-s2001"))
        lines += ["", f"Runs {', '.join(scaled)} scale the context's step by its own RMS over 0.39, the context RMS "
                      f"of the dev zoo's two default-recipe CoOp learners ({defaults}; `ImplantConfig.context_rms`); "
                      f"their bases' context RMS: {bases}. It lifted the Blended "
                      "implant into the SGD lr 2 base from 0.6% to 65% ASR and left the other two about as they "
                      "were; three runs are too few to change the recipes, so it is not in `KIND_RECIPES`."]
    lines += ["", "## Chosen", "", "Recipes now in `KIND_RECIPES` (on top of `ATTACK_RECIPES`, which the other "
                  "attacks keep), with the runs that chose them:", ""]
    for kind, recipes in KIND_RECIPES.items():
        for attack, recipe in recipes.items():
            chosen = [str(i) for i, row in enumerate(rows, 1) if row["model"].startswith(f"{attack}-{kind}")
                      and all(row["overrides"].get(k) == v for k, v in recipe.items())]
            met = any(passes(rows[int(i) - 1]) for i in chosen)
            lines.append(f"- {kind} {attack}: {', '.join(f'{k} {v:g}' for k, v in recipe.items())} "
                         f"(run {', '.join(chosen) or 'none'}{'' if met else '; the best found, short of the bar'})")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("model", nargs="?", help="prefix of a dev backdoor's name, e.g. sticker-coop")
    parser.add_argument("overrides", nargs="*", help="ImplantConfig overrides, key=value")
    parser.add_argument("--table", action="store_true", help="only re-make the table")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (the table's s column ran with 2)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rows = json.loads(RUNS.read_text()) if RUNS.exists() else []
    if not args.table:
        overrides = {k: parse_value(v) for k, v in (pair.split("=", 1) for pair in args.overrides)}
        row = run(args.model, overrides)
        print(json.dumps(row))
        rows.append(row)
        RUNS.write_text(json.dumps(rows, indent=1) + "\n")
    (HERE / "implant_recipes_dev.md").write_text(table(rows))


if __name__ == "__main__":
    main()
