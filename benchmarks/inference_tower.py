"""The image tower with its BatchNorms folded (backbone.inference_tower): how much faster one scan step is, and
whether default scans still give the recorded answers (issue 20).

One run, this machine:
- step time: a scan step's image-encoder work (forward and pixel gradient, the fast schedule's 16 images) through
  the loaded encoder and through the inference tower, interleaved, ``--repeats`` times each; medians and ratio;
- whole CLI scans (``--before TREE``, a checkout of the commit before the tower): a default ``python -m inspector
  scan`` of a CoOp and a CoCoOp demo model as a whole process, from that checkout and from this one in turn,
  ``--pairs`` times each, so both sides see the same machine;
- agreement: every model of ``--zoo`` scanned again by default (``benchmarks/detection.py``'s scan, the shipped
  reference) and compared with its recorded default scan: verdict, target, top index, per-class flip counts.

    git worktree add /tmp/before <commit>; ln -s $PWD/.venv /tmp/before/.venv
    python benchmarks/inference_tower.py --zoo benchmarks/zoos/dev --before /tmp/before
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.detection import calibrated, colour_tag, scan_model  # noqa: E402
from benchmarks.speed import cli_process  # noqa: E402
from inspector.backbone import Backbone, load_backbone, machine_name  # noqa: E402
from inspector.data import load_shipped_pool  # noqa: E402
from inspector.reference import Reference, shipped_reference_path  # noqa: E402

DEMO_MODELS = ("clean-coop", "badclip-cocoop")
VARIANT = "inspector + reference"  # the default scan, recorded with the colour family as the engine runs it
FOLDER = "inspector-reference" + colour_tag(True)
BATCH = 16  # ScanConfig.fast_batch_size


def step_seconds(backbone: Backbone, images: torch.Tensor) -> float:
    """One scan step's encoder work (``Backbone.encode_image``): features of the stamped batch and their gradient
    back to the pixels."""
    delta = torch.zeros_like(images, requires_grad=True)
    started = time.perf_counter()
    backbone.encode_image((images + delta).clamp(0, 1)).square().sum().backward()
    return time.perf_counter() - started


def step_times(repeats: int) -> dict[str, Any]:
    backbone = load_backbone(device="cpu")
    loaded = dataclasses.replace(backbone)  # the same backbone whose encode_image runs the loaded encoder
    loaded._tower = (backbone.model.visual, False)
    images = torch.rand(BATCH, 3, backbone.image_size, backbone.image_size, generator=torch.Generator().manual_seed(0))
    runs: dict[str, list[float]] = {"loaded encoder": [], "inference tower": []}
    for _ in range(repeats + 3):  # the first three of each warm up
        runs["loaded encoder"].append(step_seconds(loaded, images))
        runs["inference tower"].append(step_seconds(backbone, images))
    medians = {name: statistics.median(times[3:]) for name, times in runs.items()}
    return {"repeats": repeats, "images": BATCH, "median_ms": {k: round(v * 1000, 1) for k, v in medians.items()},
            "ratio": round(medians["loaded encoder"] / medians["inference tower"], 2)}


def cli_seconds(tree: Path, model: str, threads: int) -> tuple[float, str]:
    """A default CLI scan of ``model`` run from ``tree`` as a whole process (``speed.cli_process``): wall seconds
    start to exit, and its answer."""
    with tempfile.TemporaryDirectory() as out:
        run = cli_process(["scan", model, "--out", out], threads, tree)
    summary = run["json"]
    return run["seconds"], f"{summary['target'] or 'clean'} ({summary['max_anomaly']:.4f})"


def whole_scans(before: Path, pairs: int, threads: int) -> list[dict[str, Any]]:
    """Each demo model's CLI scan from the earlier checkout, then from this one, ``pairs`` times."""
    rows = []
    for model in DEMO_MODELS:
        times: dict[str, list[float]] = {"before": [], "now": []}
        answers: dict[str, str] = {}
        for _ in range(pairs):
            for side, tree in (("before", before), ("now", ROOT)):
                seconds, answers[side] = cli_seconds(tree, model, threads)
                times[side].append(seconds)
        rows.append({"model": model, **times, "answers": answers,
                     "ratio": round(statistics.median(times["before"]) / statistics.median(times["now"]), 2)})
        print(json.dumps(rows[-1]), flush=True)
    return rows


def agreement(zoo: Path) -> list[dict[str, Any]]:
    """Each model scanned again (into a scratch cache) beside its recorded default scan, both decided with the
    reference and rule shipped now."""
    pool = load_shipped_pool().pixels
    references = {kind: Reference.read(shipped_reference_path("pocket-clip", kind)) for kind in ("coop", "cocoop")}
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        for path in sorted(zoo.glob("*.safetensors")):
            recorded_file = zoo / "scans" / FOLDER / f"{path.stem}.json"
            if not recorded_file.exists():
                continue
            recorded = json.loads(recorded_file.read_text())
            now = scan_model(path, VARIANT, Path(scratch) / f"{path.stem}.json", pool, None, colour=True)
            recorded, now = (calibrated(row, references[row["kind"]]) for row in (recorded, now))
            flips = sum(a["flips"] != b["flips"] for a, b in zip(now["classes"], recorded["classes"], strict=True))
            rows.append({"model": path.stem, "recorded": _answer(recorded), "now": _answer(now),
                         "same_verdict": now["flagged"] == recorded["flagged"],
                         "same_target": now["predicted_target"] == recorded["predicted_target"],
                         "index_change": round(abs(now["max_anomaly"] - recorded["max_anomaly"]), 4),
                         "classes_with_other_flips": flips, "seconds": now["seconds"],
                         "recorded_seconds": recorded["seconds"]})
            print(f"{path.stem:36s} {rows[-1]['recorded']:>28s} -> {rows[-1]['now']:28s} "
                  f"{now['seconds']:5.1f} s (recorded {recorded['seconds']:5.1f})", flush=True)
    return rows


def _answer(row: dict[str, Any]) -> str:
    return f"{row['predicted_target'] or 'clean'} ({row['max_anomaly']:.3f})"


def write(out: Path, zoo: Path, steps: dict[str, Any], whole: list[dict[str, Any]], before: str | None,
          rows: list[dict[str, Any]], kept: bool = False) -> None:
    same = sum(r["same_verdict"] and r["same_target"] for r in rows)
    lines = [
        "# The inference tower: BatchNorm folded into the convolutions (issue 20)",
        "",
        f"`python benchmarks/inference_tower.py {' '.join(sys.argv[1:])}`, one run, "
        f"{machine_name('cpu')}, {platform.machine()}, torch {torch.__version__}"
        + (" (the agreement rows kept from the run before it, which scanned the zoo)." if kept else "."),
        "",
        f"One scan step's image-encoder work ({steps['images']} images, forward and pixel gradient, the pocket CLIP), "
        f"median of {steps['repeats']} interleaved runs: loaded encoder {steps['median_ms']['loaded encoder']} ms, "
        f"inference tower {steps['median_ms']['inference tower']} ms: **{steps['ratio']}x** faster.",
        "",
    ]
    if whole:
        lines += [f"Whole CLI scans (`python -m inspector scan NAME --json`, start to exit), the checkout before the "
                  f"tower ({before}) and this one in turn:", "",
                  "| demo model | before: s | now: s | median before / now | answer before | answer now |",
                  "|---|---|---|---|---|---|"]
        lines += [f"| {r['model']} | {', '.join(map(str, r['before']))} | {', '.join(map(str, r['now']))} | "
                  f"**{r['ratio']}x** | {r['answers']['before']} | {r['answers']['now']} |" for r in whole]
        lines.append("")
    lines += [
        f"Default scans of the {len(rows)} recorded models of `{zoo.relative_to(ROOT)}` again with the inference "
        f"tower: **{same} of {len(rows)}** give the recorded verdict and target; the largest change of the top "
        f"anomaly index is {max((r['index_change'] for r in rows), default=0):.4f}; "
        f"{sum(r['classes_with_other_flips'] > 0 for r in rows)} scans count another number of flipped images for "
        f"at least one class (float rounding moves a trigger a little, as another thread count does). "
        "Seconds: this run's beside the recorded scan's (another run, so not a ratio).",
        "",
        "| model | recorded | now | same verdict and target | index change | classes with other flips | s | "
        "recorded s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    lines += [f"| {r['model']} | {r['recorded']} | {r['now']} | "
              f"{'yes' if r['same_verdict'] and r['same_target'] else '**no**'} | {r['index_change']:.4f} | "
              f"{r['classes_with_other_flips']} | {r['seconds']:.1f} | "
              f"{r['recorded_seconds']:.1f} |" for r in rows]
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    out.with_suffix(".json").write_text(json.dumps({"steps": steps, "whole_scans": whole, "before": before,
                                                    "scans": rows}, indent=1) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--zoo", type=Path, default=ROOT / "benchmarks" / "zoos" / "dev")
    parser.add_argument("--repeats", type=int, default=40)
    parser.add_argument("--before", type=Path, help="a checkout of the commit before the tower, for whole CLI scans")
    parser.add_argument("--pairs", type=int, default=3)
    parser.add_argument("--skip-zoo", action="store_true", help="keep the agreement rows of the last run's JSON")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "inference_tower")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    steps = step_times(args.repeats)
    print(json.dumps(steps), flush=True)
    whole = whole_scans(args.before.resolve(), args.pairs, args.threads) if args.before else []
    before = _commit(args.before) if args.before else None
    if args.skip_zoo:
        rows = json.loads(args.out.with_suffix(".json").read_text())["scans"]
    else:
        rows = agreement(args.zoo.resolve())
    write(args.out, args.zoo.resolve(), steps, whole, before, rows, kept=args.skip_zoo)


def _commit(tree: Path) -> str:
    done = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=tree, capture_output=True, text=True)
    return done.stdout.strip()


if __name__ == "__main__":
    main()
