"""How the fast schedule was chosen (issue 6): full learning curves of every class, replayed under candidate
schedules.

Every class of a scan sees the same batches in the same order, and a class that runs on in a later
round of successive halving simply continues where it stopped. So one faithful-length run per class
(25 steps) that also measures the held-out flip rate at the steps where rounds could end gives, for
any successive-halving plan over those steps, exactly what that plan would have measured. The verdict
of the faithful schedule is the one at step 25.

    .venv/bin/python benchmarks/schedule_design.py collect [--zoo benchmarks/zoo] [--device cuda]
    .venv/bin/python benchmarks/schedule_design.py replay   # -> benchmarks/schedule_design.md

Curves are cached as JSON under ``<zoo>/curves/``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from itertools import product
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from inspector.candidates import make_candidate  # noqa: E402
from inspector.data import load_shipped_pool  # noqa: E402
from inspector.detect import decide  # noqa: E402
from inspector.invert import (  # noqa: E402
    ClassInversion,
    CleanPredictions,
    Logits,
    ScanConfig,
    _batches,
    _measure,
    frozen_learner,
    split_pool,
)
from inspector.lab.truth import read_ground_truth  # noqa: E402
from inspector.prompts import open_model  # noqa: E402
from inspector.zoo import list_zoo  # noqa: E402

HERE = Path(__file__).resolve().parent
CHECKPOINTS = (2, 3, 4, 6, 8, 12, 18, 25)


def model_paths(zoo: Path) -> list[Path]:
    """The shipped demo zoo plus every model of the benchmark zoo."""
    paths = [Path(entry.path) for entry in list_zoo()]
    manifest = zoo / "manifest.json"
    if manifest.exists():
        paths += [zoo / m["file"] for m in json.loads(manifest.read_text())["models"]]
    return paths


def collect_curves(path: Path, device: str, lr: float) -> dict[str, Any]:
    """Per class: the fresh-batch curve of 25 steps and the held-out flip rate / loss at each checkpoint."""
    model = open_model(path, device=device)
    config = ScanConfig(lr=lr).for_input(model.backbone.image_size)
    pool = load_shipped_pool(model.backbone.image_size).pixels
    fit, held = split_pool(pool, config.pool_size, config.holdout, config.seed)
    batches = _batches(len(fit), config)
    started = time.time()
    classes = []
    with frozen_learner(model):
        logits_of = Logits(model)
        clean_fit = CleanPredictions(logits_of, fit, batches)
        clean_held = logits_of.predict(held)
        for k, name in enumerate(model.class_names):
            trigger = make_candidate("inspector", model.backbone.image_size, config.epsilon, config.seed + k)
            arm = ClassInversion(k, name, trigger.to(model.backbone.device), config)
            held_out = {}
            for t in range(len(batches)):
                arm.step(logits_of, fit[batches[t]].to(model.backbone.device), clean_fit(t))
                if arm.steps in CHECKPOINTS or arm.steps == len(batches):
                    m = _measure(logits_of, arm.trigger, k, name, held, clean_held)
                    held_out[arm.steps] = {"flip_rate": m["flip_rate"], "loss": m["loss"]}
            classes.append({"index": k, "name": name, "curve": arm.curve, "held_out": held_out})
    truth = read_ground_truth(path)
    return {"model": path.stem, "kind": model.kind, "lr": lr, "steps": len(batches), "device": device,
            "seconds": round(time.time() - started, 1), "backdoored": truth is not None,
            "attack": truth.attack if truth else None, "target": truth.target if truth else None,
            "classes": classes}


def _fresh(curve: list[list[float]], upto: int, window: int) -> tuple[float, float]:
    part = curve[max(0, upto - window):upto]
    eligible = sum(e for _, e, _ in part)
    return (sum(f for f, _, _ in part) / eligible if eligible else 0.0), sum(m for _, _, m in part) / len(part)


def replay(run: dict[str, Any], rounds: tuple[int, ...], keep: float, finalists: int, window: int,
           rank_by: str) -> tuple[Any, int]:
    """The verdict a successive-halving plan would reach on these curves, and its image-encoder passes."""
    classes = run["classes"]
    n, batch = len(classes), 32
    active = list(range(n))
    records: dict[int, dict[str, Any]] = {}
    done = 0
    steps_run = 0
    for r, steps in enumerate(rounds):
        done += steps
        steps_run += steps * len(active)
        if r == len(rounds) - 1:
            break
        n_keep = min(n, max(finalists, -(-n * keep ** (r + 1) // 1)))
        score = {k: _fresh(classes[k]["curve"], done, steps)[0 if rank_by == "flip" else 1] for k in active}
        ranked = sorted(active, key=lambda k: -score[k] if rank_by == "flip" else score[k])
        for k in ranked[int(n_keep):]:
            flip, margin = _fresh(classes[k]["curve"], done, window)
            records[k] = {"index": k, "name": classes[k]["name"], "flip_rate": flip, "loss": margin}
        active = ranked[:int(n_keep)]
    for k in active:
        records[k] = {"index": k, "name": classes[k]["name"], **classes[k]["held_out"][str(done)]}
    passes = steps_run * batch + done * batch + (len(active) + 1) * 200  # steps, clean batches, held-out
    return decide([records[k] for k in range(n)]), passes


def faithful(run: dict[str, Any]) -> tuple[Any, int]:
    steps = run["steps"]
    records = [{"index": c["index"], "name": c["name"], **c["held_out"][str(steps)]} for c in run["classes"]]
    n = len(records)
    return decide(records), n * steps * 32 + steps * 32 + (n + 1) * 200


def cmd_collect(args: argparse.Namespace) -> None:
    torch.set_num_threads(args.threads)
    torch.backends.cudnn.allow_tf32 = False  # fp32 convolutions on CUDA, as on the CPU
    torch.backends.cuda.matmul.allow_tf32 = False
    out = Path(args.zoo) / "curves"
    out.mkdir(parents=True, exist_ok=True)
    wanted = [m for m in args.models.split(",") if m]
    for path in model_paths(Path(args.zoo)):
        if wanted and path.stem not in wanted:
            continue
        cache = out / f"{path.stem}-lr{args.lr:g}.json"
        if cache.exists():
            continue
        run = collect_curves(path, args.device, args.lr)
        cache.write_text(json.dumps(run))
        print(f"{path.stem:<40} {run['seconds']:.0f} s", flush=True)


def cmd_replay(args: argparse.Namespace) -> None:
    runs = [json.loads(p.read_text()) for p in sorted((Path(args.zoo) / "curves").glob(f"*-lr{args.lr:g}.json"))]
    reference = [faithful(run) for run in runs]
    rows = []
    grid = product([(2, 2, 3, 6), (3, 3, 4, 8), (2, 3, 5, 10), (3, 3, 6), (4, 4, 8), (2, 2, 2, 4, 8)],
                   [0.5, 0.4, 0.3], [2, 3], [2, 3], ["margin", "flip"])
    for rounds, keep, finalists, window, rank_by in grid:
        if window > rounds[0]:
            continue
        same_verdict = same_target = flagged = passes = ref_passes = 0
        for run, (ref, ref_cost) in zip(runs, reference, strict=True):
            verdict, cost = replay(run, rounds, keep, finalists, window, rank_by)
            same_verdict += verdict.flagged == ref.flagged
            if ref.flagged:
                flagged += 1
                same_target += verdict.flagged and verdict.target == ref.target
            passes += cost
            ref_passes += ref_cost
        rows.append({"rounds": rounds, "keep": keep, "finalists": finalists, "window": window, "rank_by": rank_by,
                     "verdict_agreement": same_verdict / len(runs), "target_agreement": same_target / max(flagged, 1),
                     "pass_ratio": ref_passes / passes})
    rows.sort(key=lambda r: (-r["verdict_agreement"], -r["target_agreement"], -r["pass_ratio"]))
    for r in rows[:25]:
        print(r)
    (HERE / "schedule_design.json").write_text(json.dumps({"models": len(runs), "rows": rows}, indent=1) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("command", choices=["collect", "replay"])
    parser.add_argument("--zoo", default=str(HERE / "zoo"))
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--lr", type=float, default=0.1)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--models", default="", help="comma-separated file stems (default: all)")
    args = parser.parse_args()
    (cmd_collect if args.command == "collect" else cmd_replay)(args)


if __name__ == "__main__":
    main()
