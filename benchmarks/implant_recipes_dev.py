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
import math
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
from inspector.lab.implant import (  # noqa: E402
    ATTACK_BARS,
    IMPLANT_ATTEMPTS,
    KIND_RECIPES,
    WORKING_BACKDOOR,
    ImplantConfig,
    context_rms_of,
    is_working,
    next_attempt,
    run_implant,
)
from inspector.lab.truth import backdoor_rates, noisy_trigger_asr  # noqa: E402
from inspector.lab.zoo_builder import ZooItem, read_plan  # noqa: E402
from inspector.prompts import load_learner  # noqa: E402

HERE = Path(__file__).resolve().parent
DEV = HERE / "zoos" / "dev"
RUNS = HERE / "implant_recipes_dev.json"


def parse_value(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return text


def dev_item(prefix: str) -> ZooItem:
    """The dev plan's first backdoor named ``prefix…``."""
    plan = read_plan(HERE / "zoos" / "dev.plan.json")
    items = [item for item in plan if item.attack and item.name.startswith(prefix)]
    if not items:
        raise SystemExit(f"no dev backdoor is named {prefix}…")
    return items[0]


def run(prefix: str, overrides: dict[str, Any]) -> dict[str, Any]:
    """Implant the dev plan's first backdoor named ``prefix…`` with ``overrides``; its measurements."""
    item = dev_item(prefix)
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
    if item.attack == "badclip-adaptive":  # how wide the basin stays: the trigger plus the phase-2 noise
        sigma = config.adaptive_noise * finished.trigger.epsilon
        rates["noisy_asr"] = noisy_trigger_asr(model, finished.trigger, sigma, task.test_pixels, task.test_labels,
                                               target)
    return {"model": item.name, "base": item.base, "overrides": overrides, "recipe": config.recipe(64),
            "base_accuracy": round(base_accuracy, 4), "accuracy": round(accuracy(model, task), 4), **rates,
            "seconds": round(time.time() - started, 1)}


def as_try(row: dict[str, Any]) -> dict[str, Any]:
    """A run as one of the provider's tries (``implant.next_attempt``)."""
    return {**row, "poison_weight": row["recipe"]["poison_weight"], "clean_base_accuracy": row["base_accuracy"]}


def base_context_rms(name: str) -> float:
    """RMS of a dev learner's context vectors (read from its file)."""
    return context_rms_of(load_file(DEV / (name.replace("-", "_") + ".safetensors"))["ctx"])


def passes(row: dict[str, Any]) -> bool:
    return is_working(as_try(row), dev_item(row["model"]).attack)


def ran_with(row: dict[str, Any], key: str, value: Any) -> bool:
    """Whether a run used ``value`` for ``key`` (given, or in the recipe it recorded; 32/255 and 0.1255 alike)."""
    used = row["overrides"].get(key, row["recipe"].get(key))
    if isinstance(used, (int, float)) and isinstance(value, (int, float)):
        return math.isclose(used, value, rel_tol=1e-3)
    return used == value


def table(rows: list[dict[str, Any]]) -> str:
    lines = ["# Implant recipes fitted on the dev zoo (issue 18)", "",
             "Dev models only (benchmarks/zoos/dev.plan.json): each run implants one dev backdoor into its dev clean "
             "base with the attack's recipe (`ImplantConfig.for_attack`) plus the overrides shown (`target` / `seed`: "
             "another target or trigger draw on the same base). Runs 1-16 and 43-66 ran on 2 CPU threads (45 beside a "
             "test run; 60-66 with a zoo build paused), runs 17-42 and 67-69 on 1 thread beside a zoo build, runs "
             "70-96 (SIBA and the adaptive BadCLIP, issue 19) on 2 threads alone, so seconds compare only within a "
             "group. "
             f"Bar: ASR >= {WORKING_BACKDOOR['asr']:.0%}, OOD ASR >= {WORKING_BACKDOOR['ood_asr']:.0%}, clean "
             f"accuracy at most {WORKING_BACKDOOR['accuracy_drop'] * 100:.0f} points under the base's; for the "
             "adaptive BadCLIP, whose trigger gives up reach to be narrow, ASR and OOD ASR >= "
             f"{ATTACK_BARS['badclip-adaptive']['asr']:.0%} (CLIP-Inspector's bar for it). "
             "`python benchmarks/implant_recipes_dev.py MODEL-PREFIX key=value ...`", "",
             "| run | model | overrides | base accuracy | accuracy | ASR | OOD ASR | meets the bar | s |",
             "|---|---|---|---|---|---|---|---|---|"]
    for i, row in enumerate(rows, 1):
        over = ", ".join(f"{k} {v}" for k, v in row["overrides"].items()) or "(attack recipe)"
        over = f"provider's try {row['try']}: {over}" if "try" in row else over
        over += f" ({row['note']})" if "note" in row else ""
        over += f"; noisy-trigger ASR {row['noisy_asr']:.1%}" if "noisy_asr" in row else ""
        lines.append(f"| {i} | {row['model']} | {over} | {row['base_accuracy']:.1%} | {row['accuracy']:.1%} | "
                     f"{row['asr']:.1%} | {row['ood_asr']:.1%} | {'yes' if passes(row) else 'no'} | "
                     f"{row['seconds']:.0f} |")
    distilled = [str(i) for i, row in enumerate(rows, 1) if "distill" in row["overrides"]]
    if distilled:
        lines += ["", f"Runs {', '.join(distilled)} added a knowledge-distillation term (KL to the starting model's "
                      "predictions on clean images, T = 2); it lowered the ASR without keeping the accuracy, and "
                      "was not kept."]
    frozen = [str(i) for i, row in enumerate(rows, 1) if row["overrides"].get("context_step") == 0]
    if frozen:
        lines += ["", f"Run{'s' * (len(frozen) > 1)} {', '.join(frozen)} left CoCoOp's context where it was and "
                      "trained the meta-net alone (`context_step` 0); it cost more accuracy than moving both, and "
                      "was not kept."]
    scaled = [str(i) for i, row in enumerate(rows, 1) if "context_rms" in row["overrides"]]
    if scaled:
        bases = ", ".join(sorted({f"{row['base']} {base_context_rms(row['base']):.2f}"
                                  for row in (rows[int(i) - 1] for i in scaled)}))
        defaults = "; ".join(f"{kind} " + ", ".join(f"{base_context_rms(f'clean-{kind}-default-s{seed}'):.3f}"
                                                    for seed in seeds)
                             for kind, seeds in (("coop", (2000, 2001)), ("cocoop", (2100, 2101))))
        lines += ["", f"Runs {', '.join(scaled)} scale the context's step by its own RMS over the context RMS the "
                      f"recipes were fitted at (`ImplantConfig.context_rms`; `implant.CONTEXT_RMS`: the dev zoo's "
                      f"default-recipe learners, {defaults}); their bases' context RMS: {bases}. It is not in "
                      "`KIND_RECIPES`: the zoo builder's provider turns it on for the try after one whose trigger "
                      "did not take (`implant.next_attempt`; runs marked *provider's try* are such retries)."]
    lines += ["", "## Chosen", "", "Recipes now in `KIND_RECIPES` (on top of `ATTACK_RECIPES`, which the other "
                  "attacks keep), with the runs that chose them:", ""]
    for kind, recipes in KIND_RECIPES.items():
        for attack, recipe in recipes.items():
            chosen = [str(i) for i, row in enumerate(rows, 1) if row["model"].startswith(f"{attack}-{kind}")
                      and all(ran_with(row, k, v) for k, v in recipe.items())]
            met = any(passes(rows[int(i) - 1]) for i in chosen)
            lines.append(f"- {kind} {attack}: {', '.join(f'{k} {v:g}' for k, v in recipe.items())} "
                         f"(run {', '.join(chosen) or 'none'}{'' if met else '; the best found, short of the bar'})")
    lines += ["", "In CoOp learners that SGD tuned with a large step (context RMS 1-4, runs 55-59, 63-66), no WaNet "
                  "or BadNets recipe met both bars: the trigger takes only at a poison weight that costs more than 3 "
                  "points (up to 9). "
                  "So the zoo builder's provider, after `IMPLANT_ATTEMPTS` tries in its planned base, implants into "
                  "the plan's first default-recipe learner of the kind (`zoo_builder.fallback_base`), and the "
                  "implants table names the base each backdoor was delivered in. In those learners an unscaled step "
                  "both missed the trigger and cost accuracy (the dev build's first try of badnets-coop-s2802: 4% "
                  "ASR at -9.4 points; run 64: 11% at -9.0) where the scaled one did not (runs 56, 66: 66-70% at "
                  "-0.4 to -0.6), so after a try whose trigger reached under half the bar and cost accuracy, the "
                  "provider scales the step first, at the same weight (`implant.next_attempt`)."]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("model", nargs="?", help="prefix of a dev backdoor's name, e.g. sticker-coop")
    parser.add_argument("overrides", nargs="*", help="ImplantConfig overrides, key=value")
    parser.add_argument("--table", action="store_true", help="only re-make the table")
    parser.add_argument("--provider", action="store_true",
                        help="try again as the zoo builder's provider does (implant.next_attempt) until it works")
    parser.add_argument("--tried", default="", help="with --provider: runs (table numbers) that were its first tries")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (the table's s column ran with 2)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rows = json.loads(RUNS.read_text()) if RUNS.exists() else []
    if not args.table:
        overrides = {k: parse_value(v) for k, v in (pair.split("=", 1) for pair in args.overrides)}
        tries = [as_try(rows[int(n) - 1]) for n in args.tried.split(",") if n]
        item = dev_item(args.model)
        while True:
            row = run(args.model, overrides) | ({"try": len(tries) + 1} if args.provider else {})
            print(json.dumps(row))
            rows.append(row)
            RUNS.write_text(json.dumps(rows, indent=1) + "\n")
            tries.append(as_try(row))
            recipe = {k: v for k, v in overrides.items() if k not in ("target", "seed")}
            config = ImplantConfig.for_attack(item.attack, item.target, item.kind, **recipe)
            change = next_attempt(config, item.kind, tries) if args.provider else None
            if change is None or len(tries) >= IMPLANT_ATTEMPTS:
                break
            overrides = {**overrides, **change}
    (HERE / "implant_recipes_dev.md").write_text(table(rows))


if __name__ == "__main__":
    main()
