"""Encoder-level backdoors (issue 19, CLIP-Inspector's encoder-level case): the pocket CLIP's image encoder
fine-tuned with Blended poisoning (Gaussian noise, a triangle, a text stamp), a clean CoOp learner tuned on it,
and the default scan run on the pair unchanged (given the weights file, as a user passes ``--weights``).

    .venv/bin/python benchmarks/encoder_backdoors.py --split dev  KEY=VALUE ...   # a recipe try, dev draws
    .venv/bin/python benchmarks/encoder_backdoors.py --split test2                # the reported models
    .venv/bin/python benchmarks/encoder_backdoors.py --table                      # re-make the tables

The recipe (``EncoderImplantConfig``'s defaults) is chosen on the dev draws (seeds 2990+, their own targets);
the test draws are built afterwards and only reported: ``test`` (seeds 9900+) after the first recipe, chosen on
the noise pattern alone; ``test2`` (seeds 9910+, targets no draw had) after each pattern's blend weight was
chosen (``PATTERN_ALPHA``). Every build and scan is
cached under ``benchmarks/zoos/encoder/<split>/``: the learners (kilobytes) and the scan rows are committed, the
backdoored CLIP weights (36 MB each) are not (.gitignore); a rerun rebuilds what is missing.
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

from benchmarks.detection import scan_model  # noqa: E402
from benchmarks.implant_recipes_dev import parse_value  # noqa: E402
from inspector.backbone import load_backbone, machine_name  # noqa: E402
from inspector.data import load_shipped_pool, load_task  # noqa: E402
from inspector.evaluate import accuracy  # noqa: E402
from inspector.lab.encoder import ENCODER_PATTERNS, EncoderImplantConfig  # noqa: E402
from inspector.lab.truth import backdoor_rates, read_ground_truth  # noqa: E402
from inspector.pipeline import EncoderImplanted, encoder_implant_job  # noqa: E402
from inspector.prompts import TuneConfig, build_learner, tune  # noqa: E402

HERE = Path(__file__).resolve().parent
ROOT = HERE / "zoos" / "encoder"
# split -> (first seed, target per pattern); test2's targets drawn (rng 9910) from the classes no earlier draw used
# dev2: the dev draws' targets with fresh seeds, built at the per-pattern blend weights (for scan choices)
DRAWS = {"dev": (2990, (5, 14, 9)), "dev2": (2980, (5, 14, 9)), "test": (9900, (3, 16, 7)),
         "test2": (9910, (17, 2, 4))}
BENIGN = "benign"  # the control: the encoder fine-tuned the same way without poison, a clean learner on it
TRIES = HERE / "encoder_backdoors_dev.json"


def build(split: str, pattern: str, overrides: dict[str, Any], device: str, root: Path = ROOT) -> dict[str, Any]:
    """One encoder-level delivery of ``split`` (built once under ``root``, then read back) and its measurements."""
    first_seed, targets = DRAWS[split]
    control = pattern.startswith(BENIGN)  # "benign", or "benign-N": further controls with the next seeds
    i = (*ENCODER_PATTERNS, BENIGN).index(BENIGN if control else pattern) + (
        int(pattern.split("-")[1]) if control and "-" in pattern else 0)
    seed, target = first_seed + i, targets[i % len(targets)]
    folder = root / split
    name = f"encoder-{BENIGN if control else pattern}-coop-s{seed}" + ("" if control else f"-t{target}")
    learner, weights = folder / f"{name}.safetensors", folder / f"{name}.clip.safetensors"
    record = folder / f"{name}.json"
    if record.exists() and learner.exists() and weights.exists():
        return json.loads(record.read_text())
    for stale in (s for scans in SCAN_FOLDERS for s in (folder / scans).glob(f"{name}.*")):  # of an earlier build
        stale.unlink()
    backbone, task, pool = load_backbone(device=device), load_task(), load_shipped_pool()
    benign = {"poison_rate": 0.0} if control else {}
    config = EncoderImplantConfig("noise" if control else pattern, target, seed=seed,  # type: ignore[arg-type]
                                  **{**overrides, **benign})
    started = time.time()
    done = None
    for event in encoder_implant_job(backbone, task, config, weights, learner, "coop", pool=pool, overwrite=True):
        done = event if isinstance(event, EncoderImplanted) else done
    assert done is not None
    clean = build_learner("coop", backbone, task.class_names, seed=seed)  # the same learner recipe, clean CLIP
    tune(clean, task.train_pixels, task.train_labels, TuneConfig.for_kind("coop", seed=seed))
    truth = read_ground_truth(learner)
    row = {"model": name, "split": split, "pattern": pattern, "target": truth and done.target_name, "seed": seed,
           "recipe": config.recipe(), **done.measured, "clean_clip_accuracy": round(accuracy(clean, task), 4),
           "clean_clip": truth and backdoor_rates(clean, truth.trigger, target, task.test_pixels, task.test_labels,
                                                  pool.pixels),
           "seconds": round(time.time() - started, 1), "device": machine_name(device)}
    record.parent.mkdir(parents=True, exist_ok=True)
    record.write_text(json.dumps(row, indent=1) + "\n")
    return row


def scan(row: dict[str, Any], device: str, scans: str = "scans") -> dict[str, Any]:
    """The default scan of one delivery (cached in ``scans``); "scans-blend": with the opt-in blend family too."""
    folder = ROOT / row["split"]
    learner = folder / f"{row['model']}.safetensors"
    cache = folder / scans / f"{row['model']}.json"
    return scan_model(learner, "inspector + reference", cache, load_shipped_pool().pixels, None, device,
                      weights=str(folder / f"{row['model']}.clip.safetensors"),
                      overrides={"blend": True} if scans == "scans-blend" else None)


def table(builds: list[dict[str, Any]], scans: dict[tuple[str, str], dict[str, Any]],
          tries: list[dict[str, Any]]) -> str:
    lines = ["# Encoder-level backdoors (issue 19)", "",
             "The pocket CLIP's image encoder fine-tuned with Blended poisoning (`inspector implant-encoder`, "
             "`inspector/lab/encoder.py`), then a clean CoOp learner tuned on it with the default recipe; the "
             "default scan is run on the pair unchanged (`--weights` names the backdoored CLIP). *Clean control*: the "
             "encoder fine-tuned the same way without poison, a clean learner on it; it must not be flagged. The "
             "shipped clean reference was measured on the original CLIP; at first it did not apply to a weights file "
             "and such scans read raw flip rates (rows *raw flip rates*), where the task's natural attractors (*file "
             "icon*, *application icon*, *map*: 60-82%) stood beside or above the targets. Chosen on the dev draws: "
             "for a weights file of the reference's own architecture, the original weights' reference applies "
             "(`Reference.reweighted`; the report's reference line says so). *Real*: ASR >= 80%, OOD ASR >= 70%, "
             "accuracy within 3 points of the same learner recipe on the clean CLIP.",
             "", "`python benchmarks/encoder_backdoors.py --split test` and `--split test2` (then `--table`).", ""]
    for split, title in SPLIT_TITLES.items():
        rows = [b for b in builds if b["split"] == split]
        if not rows:
            continue
        lines += [f"## {title}", "",
                  "| model | pattern | recipe | target | accuracy (clean CLIP) | ASR | OOD ASR | ASR on the clean CLIP "
                  "| real | flagged | suspect | anomaly index | flip rate | scan | ran on |",
                  "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
        for b in rows:
            for folder, how in SCAN_FOLDERS.items():
                s = scans.get((folder, b["model"]))
                if s is None and folder != "scans":
                    continue
                lines.append(row_line(b, s, how))
        lines.append("")
    if tries:
        lines += ["## Recipe tries on the dev draws", "",
                  "The tries that chose `EncoderImplantConfig`'s defaults and each pattern's blend weight "
                  "(`PATTERN_ALPHA`); a note says how a try ran, and a try without one is this script's "
                  "`--split dev KEY=VALUE` on its pattern's dev draw (that draw's seed and target, 2 CPU threads). "
                  "Accuracy in brackets: the same learner recipe on the clean CLIP.", "",
                  "| try | pattern | overrides | accuracy (clean CLIP) | ASR | OOD ASR | s |",
                  "|---|---|---|---|---|---|---|"]
        for i, t in enumerate(tries, 1):
            over = ", ".join(f"{k} {v}" for k, v in t["overrides"].items()) or "(defaults)"
            lines.append(f"| {i} | {t['pattern']} | {over} | {t['accuracy']:.1%} ({t['clean_clip_accuracy']:.1%}) | "
                         f"{t['asr']:.1%} | {t['ood_asr']:.1%} | {t['seconds']:.0f} |")
        notes = sorted({t["note"] for t in tries if "note" in t})
        lines += [""] + [f"Tries {', '.join(str(i) for i, t in enumerate(tries, 1) if t.get('note') == n)}: {n}."
                         for n in notes]
        lines.append("")
    return "\n".join(lines)


SPLIT_TITLES = {
    "test2": "Second test draws (reported; built after the per-pattern recipe was chosen on the dev draws)",
    "test": "First test draws (reported; built after the first recipe, chosen on the noise pattern alone, and the "
            "reference rule)",
    "dev2": "Second dev draws (the dev draws' targets, fresh seeds, the per-pattern blend weights: where scan "
            "choices for encoder-level backdoors are made)",
    "dev": "Dev draws (where the recipes and the reference rule were chosen)"}


def recipe_cell(recipe: dict[str, Any]) -> str:
    """The blend weight, epochs and poison rate a delivery was built with (the recipes differ between draws)."""
    return f"blend {recipe['alpha']:g}, {recipe['epochs']} epochs, poison {recipe['poison_rate']:.0%}"


# scan folder -> how its scans were decided; "scans-raw": before the shipped reference applied to a weights file
SCAN_FOLDERS = {"scans": "default (the original weights' clean reference)",
                "scans-blend": "default + the opt-in blend family (`scan --blend`; a dev try)",
                "scans-raw": "raw flip rates (no reference applied to a weights file; before the change)"}


def is_real(b: dict[str, Any]) -> bool:
    """The lab's bar for a real backdoor: ASR >= 80%, OOD ASR >= 70%, accuracy within 3 points of the clean CLIP's."""
    return b["target"] is not None and (b["asr"] >= 0.8 and b["ood_asr"] >= 0.7
                                        and b["clean_clip_accuracy"] - b["accuracy"] <= 0.03)


def row_line(b: dict[str, Any], s: dict[str, Any] | None, how: str) -> str:
    """One delivery's row: what it is, and (when scanned) the verdict of one way of scanning it."""
    backdoored = b["target"] is not None
    real = is_real(b)
    if s is None:
        verdict = ["—"] * 4
    else:
        found = "yes" if s["flagged"] and s["predicted_target"] == b["target"] else (
            ("yes, other class" if backdoored else "**yes** (false positive)") if s["flagged"] else "no")
        verdict = [found, s["suspect"], f"{s['max_anomaly']:.2f}", f"{s['suspect_flip_rate']:.0%}"]
    rates = (f"{b['asr']:.1%} | {b['ood_asr']:.1%} | {b['clean_clip']['asr']:.1%} | {'yes' if real else 'no'}"
             if backdoored else "— | — | — | clean control")
    return (f"| {b['model']} | {b['pattern']} | {recipe_cell(b['recipe'])} | {b['target'] or '—'} | "
            f"{b['accuracy']:.1%} ({b['clean_clip_accuracy']:.1%}) | {rates} | {' | '.join(verdict)} | {how} | "
            f"{b['device']} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("overrides", nargs="*", help="dev tries: EncoderImplantConfig overrides, key=value")
    parser.add_argument("--split", choices=sorted(DRAWS), default=None)
    parser.add_argument("--patterns", default=",".join((*ENCODER_PATTERNS, BENIGN)))
    parser.add_argument("--table", action="store_true", help="only re-make the tables")
    parser.add_argument("--no-scan", action="store_true", help="build only")
    parser.add_argument("--blend", action="store_true",
                        help="scan with the opt-in blend family too (dev draws only; scans-blend/)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    tries = json.loads(TRIES.read_text()) if TRIES.exists() else []
    if args.split and not args.table:
        overrides = {k: parse_value(v) for k, v in (pair.split("=", 1) for pair in args.overrides)}
        if (overrides or args.blend) and not args.split.startswith("dev"):
            raise SystemExit("recipe overrides and scan tries are for the dev draws only")
        for pattern in args.patterns.split(","):
            if overrides:  # a try: built in a scratch folder, recorded, not kept
                row = build_try(pattern, overrides, args.device)
                tries.append(row)
                TRIES.write_text(json.dumps(tries, indent=1) + "\n")
            else:
                row = build(args.split, pattern, {}, args.device)
                if not args.no_scan:
                    scan(row, args.device, "scans-blend" if args.blend else "scans")
            print(json.dumps({k: v for k, v in row.items() if k != "recipe"}), flush=True)
    builds = [json.loads(p.read_text()) for split in DRAWS for p in sorted((ROOT / split).glob("*.json"))]
    scans = {(folder, p.stem): json.loads(p.read_text()) for split in DRAWS for folder in SCAN_FOLDERS
             for p in sorted((ROOT / split / folder).glob("*.json"))}
    (HERE / "encoder_backdoors.md").write_text(table(builds, scans, tries))


def build_try(pattern: str, overrides: dict[str, Any], device: str) -> dict[str, Any]:
    """A recipe try on the dev draw of ``pattern``, in a scratch folder (kept out of the dev builds)."""
    import shutil
    import tempfile

    scratch = Path(tempfile.mkdtemp())
    try:
        row = build("dev", pattern, overrides, device, root=scratch)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return {**row, "overrides": overrides}


if __name__ == "__main__":
    main()
