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
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from inspector.baseline import Baseline, fresh_flip_rate, with_baseline  # noqa: E402
from inspector.data import load_shipped_pool  # noqa: E402
from inspector.detect import decide  # noqa: E402
from inspector.invert import ScanConfig, class_curves  # noqa: E402
from inspector.lab.truth import read_ground_truth  # noqa: E402
from inspector.prompts import open_model  # noqa: E402
from inspector.reference import Reference, shipped_reference_path  # noqa: E402
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
    pool = load_shipped_pool(model.backbone.image_size).pixels
    started = time.time()
    classes = class_curves(model, pool, ScanConfig(), lr, batch_size, steps, checkpoints)
    truth = read_ground_truth(path)
    return {"model": path.stem, "kind": model.kind, "lr": lr, "batch_size": batch_size, "steps": steps,
            "device": device,
            "seconds": round(time.time() - started, 1), "backdoored": truth is not None,
            "attack": truth.attack if truth else None, "target": truth.target if truth else None,
            "classes": classes}


def _fresh(curve: list[list[float]], upto: int, window: int) -> tuple[float, float]:
    """Flip rate and margin over the ``window`` steps before ``upto``, on batches the trigger had not seen."""
    part = curve[max(0, upto - window):upto]
    return fresh_flip_rate(curve[:upto], window), sum(m for _, _, m in part) / len(part)


def replay(run: dict[str, Any], rounds: tuple[int, ...], keep: float, window: int, measured: int,
           baseline: Baseline | None = None) -> tuple[Any, int]:
    """The verdict a plan would reach on these curves, and its image-encoder passes.

    Successive halving over ``rounds`` (steps per round; after each, the ``keep`` share of the classes still
    running go on, ranked by fresh margin loss); every class's estimate is its fresh-batch flip rate and
    margin over its last ``window`` steps, except the ``measured`` finalists with the highest estimates,
    which are measured on the held-out images (as every class is in the faithful schedule). With a
    ``baseline`` (the clean reference under the fast schedule) the index reads the excess over it.
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
        records.append({"index": k, "name": c["name"], "flip_rate": flip, "loss": margin, "steps": last_step[k],
                        "measured_on": "fresh batches"})
    for rec in sorted((records[k] for k in active), key=lambda r: -r["flip_rate"])[:measured]:
        rec.update(classes[rec["index"]]["held_out"][str(rec["steps"])], measured_on="held-out")
    passes = steps_run * batch + done * batch + (measured + 1) * 200  # steps, clean batches, held-out
    return _decide(records, baseline), passes


def faithful(run: dict[str, Any], baseline: Baseline | None = None) -> tuple[Any, int]:
    """The faithful schedule's verdict: every class's held-out flip rate after the full epoch."""
    steps = run["steps"]
    records = [{"index": c["index"], "name": c["name"], **c["held_out"][str(steps)]} for c in run["classes"]]
    n = len(records)
    return _decide(records, baseline), n * steps * 32 + steps * 32 + (n + 1) * 200


def _decide(records: list[dict[str, Any]], baseline: Baseline | None) -> Any:
    if baseline is None:
        return decide(records)
    return decide([with_baseline(r, baseline.learner_values(r)) for r in records], "excess_flip_rate")


PLANS = [(r, keep, w, m) for r, keeps in [((6, 6, 6), (0.5, 0.6, 0.75)), ((4, 6, 8), (0.4, 0.5, 0.6, 0.75)),
                                          ((4, 4, 10), (0.4, 0.5, 0.6)), ((3, 5, 10), (0.4, 0.5, 0.6)),
                                          ((3, 3, 12), (0.4, 0.5)), ((2, 4, 12), (0.5,)), ((2, 6, 10), (0.4,)),
                                          ((6, 12), (0.5, 0.6, 0.75)), ((4, 14), (0.4, 0.5)),
                                          ((4, 4, 4, 6), (0.6, 0.7)), ((3, 3, 4, 8), (0.6, 0.7))]
         for keep in keeps for w in (6, 10) for m in (1, 2)]


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
    """Every plan of ``PLANS`` on the candidate curves, against the faithful verdict of the same model.

    By default both sides decide as a default scan does: on the excess over the shipped clean reference,
    each schedule against the reference measured under that schedule."""
    folder = Path(args.zoo) / "curves"
    suffix = f"-lr{args.lr:g}" + (f"-b{args.batch}" if args.batch != 32 else "")
    pairs = []
    for path in sorted(folder.glob(f"*{suffix}.json")):
        reference = folder / f"{path.name[:-len(suffix + '.json')]}-lr0.1.json"
        if reference.exists():
            pairs.append((json.loads(path.read_text()), json.loads(reference.read_text())))
    baselines = {}
    for kind in ("coop", "cocoop"):
        ref = Reference.read(shipped_reference_path("pocket-clip", kind))
        baselines[kind] = {schedule: None if args.no_reference else ref.baseline(ScanConfig(schedule=schedule))
                           for schedule in ("fast", "faithful")}
    rows = []
    for rounds, keep, window, measured in PLANS:
        same_verdict = same_target = flagged = passes = ref_passes = right = zoo_same = zoo = 0
        for run, ref_run in pairs:
            fast_baseline, faithful_baseline = baselines[run["kind"]]["fast"], baselines[run["kind"]]["faithful"]
            if fast_baseline is not None:
                fast_baseline = replace(fast_baseline, window=window)
            ref, ref_cost = faithful(ref_run, faithful_baseline)
            verdict, cost = replay(run, rounds, keep, window, measured, fast_baseline)
            same = verdict.flagged == ref.flagged
            same_verdict += same
            in_zoo = "_s" in run["model"]
            zoo, zoo_same = zoo + in_zoo, zoo_same + (in_zoo and same)
            right += verdict.target == run["target"] if run["backdoored"] else not verdict.flagged
            if ref.flagged:
                flagged += 1
                same_target += verdict.flagged and verdict.target == ref.target
            passes, ref_passes = passes + cost, ref_passes + ref_cost
        rows.append({"rounds": rounds, "keep": keep, "window": window, "measured": measured,
                     "verdict_agreement": round(same_verdict / len(pairs), 3),
                     "zoo_agreement": f"{zoo_same}/{zoo}", "target_agreement": f"{same_target}/{flagged}",
                     "target_share": round(same_target / max(flagged, 1), 3),
                     "right": f"{right}/{len(pairs)}", "pass_ratio": round(ref_passes / passes, 2)})
    rows.sort(key=lambda r: (-r["verdict_agreement"], -r["target_share"], -r["pass_ratio"]))
    print(f"{len(pairs)} models with curves {suffix} and faithful references")
    for r in rows[:args.top]:
        print(r)
    which = "raw flip rates" if args.no_reference else "the excess over the shipped clean reference"
    lines = [f"# Choosing the fast schedule (issue 6): {len(pairs)} models, curves {suffix} vs the faithful schedule",
             "", f"`python benchmarks/schedule_design.py replay --lr {args.lr:g} --batch {args.batch}"
             f"{' --no-reference' if args.no_reference else ''}`: every plan replayed on the same learning curves, "
             f"both schedules deciding on {which}; agreement with the faithful verdict of each model (all models, "
             "and the benchmark zoo alone), same target where the faithful schedule flags, the plan's verdicts "
             "right against the ground truth, image-encoder passes of the faithful schedule / the plan's.", "",
             "| rounds (steps) | keep | window | measured on held-out | same verdict | zoo | same target | right | "
             "passes ratio |", "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {'+'.join(map(str, r['rounds']))} | {r['keep']} | {r['window']} | {r['measured']} | "
                     f"{r['verdict_agreement']:.0%} | {r['zoo_agreement']} | {r['target_agreement']} | {r['right']} | "
                     f"{r['pass_ratio']}x |")
    name = f"schedule_design{suffix}{'-raw' if args.no_reference else ''}"
    (HERE / f"{name}.md").write_text("\n".join(lines) + "\n")
    (HERE / f"{name}.json").write_text(json.dumps({"models": len(pairs), "curves": suffix, "rows": rows},
                                                   indent=1) + "\n")


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
    parser.add_argument("--no-reference", action="store_true", help="replay: decide on raw flip rates")
    parser.add_argument("--models", default="", help="comma-separated file stems (default: all)")
    args = parser.parse_args()
    (cmd_collect if args.command == "collect" else cmd_replay)(args)


if __name__ == "__main__":
    main()
