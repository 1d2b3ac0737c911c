"""The fast schedule's classes stepped together (``invert.joint_step`` in its rounds): how much faster a scan is,
and whether default scans still give the recorded answers (issue 20).

The classes of a round that are at the same step read the same batch, so the engine now steps as many of them as
``ScanConfig.fast_joint_images`` images hold in one encoder pass (5 classes of 16 images) instead of one by one;
each class keeps its own trigger and Adam, so the updates are the same to float rounding. One run, this machine:
- class-step time: an additive step of each demo model's classes, one class per pass and five per pass,
  interleaved, ``--repeats`` times; medians;
- scans in one process: a default scan of each demo model with one class per pass (``fast_joint_images`` 16, the
  engine before) and with the default, in turn, ``--pairs`` times, the same process, so both see the same machine;
- whole CLI scans (``--before TREE``, a checkout of the commit before): ``python -m inspector scan`` from that
  checkout and from this one in turn (``inference_tower.whole_scans``);
- agreement: every model of each ``--zoos`` (of ``--kinds``) scanned by default twice on this machine, one class
  per pass and with the default groups, both decided with the shipped reference; beside them the recorded scan
  (made on another day's machine: float kernels differ between machines, so that column mixes both causes).

    git worktree add /tmp/before <commit>; ln -s $PWD/.venv /tmp/before/.venv
    python benchmarks/joint_steps.py --zoos benchmarks/zoos/dev --before /tmp/before
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.detection import calibrated, colour_tag, scan_model  # noqa: E402
from benchmarks.inference_tower import DEMO_MODELS, _answer, _commit, whole_scans  # noqa: E402
from inspector.backbone import machine_name  # noqa: E402
from inspector.candidates import AdditiveInversion  # noqa: E402
from inspector.data import load_shipped_pool  # noqa: E402
from inspector.invert import (  # noqa: E402
    ClassInversion,
    CleanPredictions,
    Logits,
    ScanConfig,
    frozen_learner,
    joint_step,
    run_scan,
)
from inspector.prompts import open_model  # noqa: E402
from inspector.reference import Reference, reference_for, shipped_reference_path  # noqa: E402
from inspector.zoo import resolve_model  # noqa: E402

ALONE = ScanConfig.fast_batch_size  # fast_joint_images that puts one class in each pass: the engine before


def class_step_times(name: str, repeats: int) -> dict[str, Any]:
    """Seconds per class-step of additive triggers on one fast-schedule batch, one class per pass and as many as the
    default groups, interleaved; the first three of each warm up."""
    model = open_model(resolve_model(name), device="cpu")
    config = ScanConfig().for_input(model.backbone.image_size)
    group = config.fast_joint_images // config.fast_batch_size
    pixels = load_shipped_pool().pixels[:config.fast_batch_size]
    runs: dict[str, list[float]] = {"alone": [], "together": []}
    with frozen_learner(model):
        logits_of = Logits(model)
        clean = CleanPredictions(logits_of, pixels, [torch.arange(len(pixels))])(0)
        arms = [ClassInversion(k, str(k), AdditiveInversion(model.backbone.image_size, config.epsilon), "inspector",
                               config.fast_lr) for k in range(group)]
        for _ in range(repeats + 3):
            started = time.perf_counter()
            for arm in arms:
                arm.step(logits_of, pixels, clean)
            runs["alone"].append((time.perf_counter() - started) / group)
            started = time.perf_counter()
            joint_step(arms, logits_of, pixels, clean)
            runs["together"].append((time.perf_counter() - started) / group)
    medians = {side: statistics.median(times[3:]) for side, times in runs.items()}
    return {"model": name, "kind": model.kind, "classes_per_pass": group, "repeats": repeats,
            "median_ms": {side: round(v * 1000, 1) for side, v in medians.items()},
            "ratio": round(medians["alone"] / medians["together"], 2)}


def scans_in_process(name: str, pairs: int) -> dict[str, Any]:
    """A default scan of ``name`` with one class per pass, then with the default groups, ``pairs`` times."""
    model = open_model(resolve_model(name), device="cpu")
    pool = load_shipped_pool()
    reference, _ = reference_for(model, ScanConfig(), pool)
    times: dict[str, list[float]] = {"alone": [], "together": []}
    answers: dict[str, str] = {}
    records: dict[str, list[tuple[Any, ...]]] = {}
    for _ in range(pairs):
        for side, images in (("alone", ALONE), ("together", ScanConfig.fast_joint_images)):
            started = time.perf_counter()
            result = run_scan(model, pool.pixels, replace(ScanConfig(reference=reference), fast_joint_images=images))
            times[side].append(round(time.perf_counter() - started, 2))
            answers[side] = f"{result.verdict.target_name or 'clean'} ({result.verdict.max_anomaly:.4f})"
            records[side] = [(c["name"], c["flips"], c["loss"], c["curve"], c.get("colour_flips"), c.get("patch_flips"))
                             for c in result.classes]
    return {"model": name, **times, "answers": answers, "records_equal": records["alone"] == records["together"],
            "ratio": round(statistics.median(times["alone"]) / statistics.median(times["together"]), 2)}


def pair_agreement(zoo: Path, kinds: tuple[str, ...]) -> list[dict[str, Any]]:
    """Each model of ``zoo`` with a recorded default scan, scanned one class per pass and with the default groups."""
    pool = load_shipped_pool().pixels
    references = {kind: Reference.read(shipped_reference_path("pocket-clip", kind)) for kind in ("coop", "cocoop")}
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        for path in sorted(zoo.glob("*.safetensors")):
            recorded_file = zoo / "scans" / ("inspector-reference" + colour_tag(True)) / f"{path.stem}.json"
            if not recorded_file.exists() or not any(f"_{kind}_" in path.stem for kind in kinds):
                continue
            decided = {side: calibrated(scan_model(path, "inspector + reference", Path(scratch) / f"{side}.json",
                                                   pool, None, colour=True, overrides={"fast_joint_images": images}),
                                        references[kind])
                       for side, images in (("alone", ALONE), ("together", ScanConfig.fast_joint_images))
                       for kind in [json.loads(recorded_file.read_text())["kind"]]}
            for side in decided:
                (Path(scratch) / f"{side}.json").unlink()
            recorded = calibrated(json.loads(recorded_file.read_text()), references[decided["alone"]["kind"]])
            alone, together = decided["alone"], decided["together"]
            rows.append({"model": path.stem, "alone": _answer(alone), "together": _answer(together),
                         "recorded": _answer(recorded),
                         "same": (alone["flagged"], alone["predicted_target"]) == (together["flagged"],
                                                                                   together["predicted_target"]),
                         "index_change": round(abs(alone["max_anomaly"] - together["max_anomaly"]), 4),
                         "classes_with_other_flips": sum(a["flips"] != b["flips"] for a, b in
                                                         zip(alone["classes"], together["classes"], strict=True)),
                         "seconds": {"alone": alone["seconds"], "together": together["seconds"]}})
            print(json.dumps(rows[-1]), flush=True)
    return rows


def agreement_lines(zoo: str, rows: list[dict[str, Any]]) -> list[str]:
    same = sum(r["same"] for r in rows)
    alone = sum(r["seconds"]["alone"] for r in rows)
    together = sum(r["seconds"]["together"] for r in rows)
    lines = [f"`{zoo}`, {len(rows)} models, each scanned one class per pass and with the default groups on this "
             f"machine: **{same} of {len(rows)}** give the same verdict and target; the largest change of the top "
             f"anomaly index is {max((r['index_change'] for r in rows), default=0):.4f}; "
             f"{sum(r['classes_with_other_flips'] > 0 for r in rows)} count another number of flipped images for at "
             f"least one class. Scan time summed: {alone:.0f} s one class per pass, {together:.0f} s together "
             f"(**{alone / together:.2f}x**). *Recorded*: the scan detection.md reports, made on another day "
             "(another machine's float kernels move borderline scans too).",
             "", "| model | one class per pass | together | same | index change | classes with other flips | "
             "recorded |", "|---|---|---|---|---|---|---|"]
    return lines + [f"| {r['model']} | {r['alone']} | {r['together']} | {'yes' if r['same'] else '**no**'} | "
                    f"{r['index_change']:.4f} | {r['classes_with_other_flips']} | {r['recorded']} |" for r in rows]


def write(out: Path, steps: list[dict[str, Any]], scans: list[dict[str, Any]], whole: list[dict[str, Any]],
          before: str | None, zoos: dict[str, list[dict[str, Any]]]) -> None:
    lines = [
        "# The fast schedule's classes stepped together (issue 20)",
        "",
        f"`python benchmarks/joint_steps.py {' '.join(sys.argv[1:])}`, one run, {machine_name('cpu')}, "
        f"{platform.machine()}, torch {torch.__version__}.",
        "",
        "An additive step of the fast schedule (16 images, forward, pixel gradient, Adam), per class, one class per "
        "encoder pass and the default's classes in one pass, interleaved (medians):",
        "",
        "| demo model | classes per pass | one per pass: ms per class | together: ms per class | ratio |",
        "|---|---|---|---|---|",
    ]
    lines += [f"| {r['model']} | {r['classes_per_pass']} | {r['median_ms']['alone']} | {r['median_ms']['together']} "
              f"| **{r['ratio']}x** |" for r in steps]
    lines += ["", "Default scans in one process (`run_scan`, the shipped reference; `fast_joint_images` 16 puts one "
              "class in each pass, as the engine did before), in turn:", "",
              "| demo model | one per pass: s | together: s | median ratio | answer one per pass | answer together | "
              "every class's flips, losses and curve equal |",
              "|---|---|---|---|---|---|---|"]
    lines += [f"| {r['model']} | {', '.join(map(str, r['alone']))} | {', '.join(map(str, r['together']))} | "
              f"**{r['ratio']}x** | {r['answers']['alone']} | {r['answers']['together']} | "
              f"{'yes' if r['records_equal'] else 'no'} |" for r in scans]
    if whole:
        lines += ["", f"Whole CLI scans (`python -m inspector scan NAME --json`, start to exit), the checkout before "
                  f"({before}) and this one in turn:", "",
                  "| demo model | before: s | now: s | median before / now | answer before | answer now |",
                  "|---|---|---|---|---|---|"]
        lines += [f"| {r['model']} | {', '.join(map(str, r['before']))} | {', '.join(map(str, r['now']))} | "
                  f"**{r['ratio']}x** | {r['answers']['before']} | {r['answers']['now']} |" for r in whole]
    for zoo, rows in zoos.items():
        lines += ["", *agreement_lines(zoo, rows)]
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    out.with_suffix(".json").write_text(json.dumps({"class_steps": steps, "scans": scans, "whole_scans": whole,
                                                    "before": before, "zoos": zoos}, indent=1) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--zoos", default="benchmarks/zoos/dev", help="zoo folders, comma-separated ('' for none)")
    parser.add_argument("--kinds", default="coop,cocoop", help="which learners of the zoos to scan")
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--pairs", type=int, default=2)
    parser.add_argument("--before", type=Path, help="a checkout of the commit before, for whole CLI scans")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "joint_steps")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    steps = [class_step_times(name, args.repeats) for name in DEMO_MODELS]
    scans = [scans_in_process(name, args.pairs) for name in DEMO_MODELS]
    print(json.dumps(steps), json.dumps(scans), flush=True)
    whole = whole_scans(args.before.resolve(), args.pairs, args.threads) if args.before else []
    zoos = {zoo: pair_agreement((ROOT / zoo).resolve(), tuple(args.kinds.split(","))) for zoo in args.zoos.split(",")
            if zoo}
    write(args.out, steps, scans, whole, _commit(args.before) if args.before else None, zoos)


if __name__ == "__main__":
    main()
