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
import math
import sys
import time
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
CHECKPOINTS = (2, 3, 4, 6, 8, 12, 16, 18, 25)


def model_paths(zoo: Path) -> list[Path]:
    """The shipped demo zoo plus every model of the benchmark zoo."""
    paths = [Path(entry.path) for entry in list_zoo()]
    manifest = zoo / "manifest.json"
    if manifest.exists():
        paths += [zoo / m["file"] for m in json.loads(manifest.read_text())["models"]]
    return paths


def collect_curves(path: Path, device: str, lr: float, batch_size: int = 32, steps: int = 25,
                   checkpoints: tuple[int, ...] = CHECKPOINTS) -> dict[str, Any]:
    """Per class: the fresh-batch curve of ``steps`` steps and the held-out flip rate / loss at each checkpoint."""
    model = open_model(path, device=device)
    config = ScanConfig(lr=lr, batch_size=batch_size).for_input(model.backbone.image_size)
    pool = load_shipped_pool(model.backbone.image_size).pixels
    fit, held = split_pool(pool, config.pool_size, config.holdout, config.seed)
    batches = _batches(len(fit), batch_size, config.epochs, config.seed)[:steps]
    started = time.time()
    classes = []
    with frozen_learner(model):
        logits_of = Logits(model)
        clean_fit = CleanPredictions(logits_of, fit, batches)
        clean_held = logits_of.predict(held)
        for k, name in enumerate(model.class_names):
            trigger = make_candidate("inspector", model.backbone.image_size, config.epsilon, config.seed + k)
            arm = ClassInversion(k, name, trigger.to(model.backbone.device), "inspector", lr)
            held_out = {}
            for t in range(len(batches)):
                arm.step(logits_of, fit[batches[t]].to(model.backbone.device), clean_fit(t))
                if arm.steps in checkpoints or arm.steps == len(batches):
                    m = _measure(logits_of, arm.trigger, k, name, held, clean_held)
                    held_out[arm.steps] = {"flip_rate": m["flip_rate"], "loss": m["loss"]}
            classes.append({"index": k, "name": name, "curve": arm.curve, "held_out": held_out})
    truth = read_ground_truth(path)
    return {"model": path.stem, "kind": model.kind, "lr": lr, "batch_size": batch_size, "steps": len(batches),
            "device": device,
            "seconds": round(time.time() - started, 1), "backdoored": truth is not None,
            "attack": truth.attack if truth else None, "target": truth.target if truth else None,
            "classes": classes}


def _fresh(curve: list[list[float]], upto: int, window: int) -> tuple[float, float]:
    """Flip rate and margin over the ``window`` steps before ``upto``, on batches the trigger had not seen."""
    part = curve[max(0, upto - window):upto]
    eligible = sum(e for _, e, _ in part)
    return (sum(f for f, _, _ in part) / eligible if eligible else 0.0), sum(m for _, _, m in part) / len(part)


def replay(run: dict[str, Any], rounds: tuple[int, ...], keep: float, window: int, measured: int) -> tuple[Any, int]:
    """The verdict a plan would reach on these curves, and its image-encoder passes.

    Successive halving over ``rounds`` (steps per round; after each, the ``keep`` share of the classes still
    running go on, ranked by fresh margin loss); every class's estimate is its fresh-batch flip rate and
    margin over its last ``window`` steps, except the ``measured`` classes with the highest estimates,
    which are measured on the held-out images (as every class is in the faithful schedule).
    """
    classes, batch = run["classes"], run.get("batch_size", 32)
    n = len(classes)
    active, last_step, done, steps_run = list(range(n)), {}, 0, 0
    for r, steps in enumerate(rounds):
        done += steps
        steps_run += steps * len(active)
        for k in active:
            last_step[k] = done
        if r < len(rounds) - 1:
            n_keep = min(len(active), max(2, math.ceil(n * keep ** (r + 1))))
            active = sorted(active, key=lambda k: _fresh(classes[k]["curve"], done, steps)[1])[:n_keep]
    records = []
    for k, c in enumerate(classes):
        flip, margin = _fresh(c["curve"], last_step[k], window)
        records.append({"index": k, "name": c["name"], "flip_rate": flip, "loss": margin, "at": last_step[k]})
    for rec in sorted(records, key=lambda r: -r["flip_rate"])[:measured]:
        rec.update(classes[rec["index"]]["held_out"][str(rec["at"])])
    passes = steps_run * batch + done * batch + (measured + 1) * 200  # steps, clean batches, held-out
    return decide(records), passes


def faithful(run: dict[str, Any]) -> tuple[Any, int]:
    """The faithful schedule's verdict: every class's held-out flip rate after the full epoch."""
    steps = run["steps"]
    records = [{"index": c["index"], "name": c["name"], **c["held_out"][str(steps)]} for c in run["classes"]]
    n = len(records)
    return decide(records), n * steps * 32 + steps * 32 + (n + 1) * 200


PLANS = [(r, keep, w, m) for r, keep in [((8,), 0.5), ((12,), 0.5), ((18,), 0.5), ((6, 6), 0.75), ((6, 8), 0.75),
                                         ((4, 14), 0.5), ((6, 12), 0.5), ((6, 12), 0.6), ((6, 12), 0.75),
                                         ((6, 6, 6), 0.5), ((6, 6, 6), 0.6), ((6, 6, 6), 0.75)]
         for w in [3, 6, 10] for m in [0, 1, 2] if w <= sum(r) and (m == 0 or sum(r) in (8, 12, 18))]


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
        suffix = f"-lr{args.lr:g}" + (f"-b{args.batch}" if args.batch != 32 else "")
        cache = out / f"{path.stem}{suffix}.json"
        if cache.exists():
            continue
        checkpoints = tuple(int(c) for c in args.checkpoints.split(",")) if args.checkpoints else CHECKPOINTS
        run = collect_curves(path, args.device, args.lr, args.batch, args.steps, checkpoints)
        cache.write_text(json.dumps(run))
        print(f"{path.stem:<40} {run['seconds']:.0f} s", flush=True)


def cmd_replay(args: argparse.Namespace) -> None:
    """Every plan of ``PLANS`` on the candidate curves, against the faithful verdict of the same model."""
    folder = Path(args.zoo) / "curves"
    suffix = f"-lr{args.lr:g}" + (f"-b{args.batch}" if args.batch != 32 else "")
    pairs = []
    for path in sorted(folder.glob(f"*{suffix}.json")):
        reference = folder / f"{path.name[:-len(suffix + '.json')]}-lr0.1.json"
        if reference.exists():
            pairs.append((json.loads(path.read_text()), json.loads(reference.read_text())))
    rows = []
    for rounds, keep, window, measured in PLANS:
        same_verdict = same_target = flagged = passes = ref_passes = 0
        for run, ref_run in pairs:
            ref, ref_cost = faithful(ref_run)
            verdict, cost = replay(run, rounds, keep, window, measured)
            same_verdict += verdict.flagged == ref.flagged
            if ref.flagged:
                flagged += 1
                same_target += verdict.flagged and verdict.target == ref.target
            passes, ref_passes = passes + cost, ref_passes + ref_cost
        rows.append({"rounds": rounds, "keep": keep, "window": window, "measured": measured,
                     "verdict_agreement": round(same_verdict / len(pairs), 3),
                     "target_agreement": round(same_target / max(flagged, 1), 3),
                     "pass_ratio": round(ref_passes / passes, 2)})
    rows.sort(key=lambda r: (-r["verdict_agreement"], -r["target_agreement"], -r["pass_ratio"]))
    print(f"{len(pairs)} models with curves {suffix} and faithful references")
    for r in rows[:args.top]:
        print(r)
    lines = [f"# Choosing the fast schedule (issue 6): {len(pairs)} models, curves {suffix} vs the faithful schedule",
             "", f"`python benchmarks/schedule_design.py replay --lr {args.lr:g} --batch {args.batch}`: "
             "every plan replayed on the "
             "same learning curves; agreement with the faithful verdict of each model, image-encoder passes of the "
             "faithful schedule / the plan's.", "",
             "| rounds (steps) | keep | window | measured on held-out | same verdict | same target (flagged) | "
             "passes ratio |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {'+'.join(map(str, r['rounds']))} | {r['keep']} | {r['window']} | {r['measured']} | "
                     f"{r['verdict_agreement']:.0%} | {r['target_agreement']:.0%} | {r['pass_ratio']}x |")
    (HERE / f"schedule_design{suffix}.md").write_text("\n".join(lines) + "\n")
    out = HERE / f"schedule_design{suffix}.json"
    out.write_text(json.dumps({"models": len(pairs), "curves": suffix, "rows": rows}, indent=1) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("command", choices=["collect", "replay"])
    parser.add_argument("--zoo", default=str(HERE / "zoo"))
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--lr", type=float, default=0.1)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--steps", type=int, default=25, help="collect: steps per class")
    parser.add_argument("--checkpoints", default="", help="collect: steps with a held-out measurement")
    parser.add_argument("--top", type=int, default=25, help="replay: rows to print")
    parser.add_argument("--models", default="", help="comma-separated file stems (default: all)")
    args = parser.parse_args()
    (cmd_collect if args.command == "collect" else cmd_replay)(args)


if __name__ == "__main__":
    main()
