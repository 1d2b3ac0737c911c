"""benchmarks/paper.md: CLIP-Inspector's (arXiv 2604.09101) tables beside ours, row for row, from recorded runs only.

    .venv/bin/python benchmarks/paper.py

Sources, never re-scanned here: the test zoos' records written by benchmarks/detection.py (detection_test.json to
detection_test4.json: the default scan, Neural Cleanse and Pixel Backdoor where run, and the repairs), the
encoder-level test draws (benchmarks/encoder_backdoors.py) and the ablation scans of the third test
zoo (benchmarks/paper_ablations.py). The paper's figures are those of its abstract and of shared/DESIGN.md; where
its per-row figure is not in that material the cell says so instead of guessing it.
"""

from __future__ import annotations

import json
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from benchmarks import zoo_tables  # noqa: E402
from benchmarks.detection import summarise, target_f1  # noqa: E402
from benchmarks.detection_summary import DEFAULT, record  # noqa: E402
from benchmarks.encoder_backdoors import DRAWS, is_real, recipe_cell  # noqa: E402
from benchmarks.encoder_backdoors import ROOT as ENCODER_ROOT  # noqa: E402
from benchmarks.paper_ablations import (  # noqa: E402
    ABLATION_RECIPE,
    ABLATIONS,
    BASINS_FILE,
    REPAIR_SETTINGS,
    SSIM_FILE,
    recorded_repairs,
    setting_folder,
)
from inspector.repair import RepairConfig, recipe_of  # noqa: E402

TEST_ZOOS = ("test", "test2", "test3")
# the first test zoo was measured twice for issue 18 (benchmarks/detection.md) and retired; its detection records
# have since served a choice (benchmarks/corroboration.md), so they are no result and stay out of the detection tables
DETECTION_ZOOS = ("test2", "test3", "test4")
ZOO_LABELS = {"test": "test (retired)", "test2": "test2", "test3": "test3", "test4": "test4"}
METHODS = {"inspector + reference": "inspector (default scan)", "neural-cleanse": "Neural Cleanse",
           "pixel-backdoor": "Pixel Backdoor"}
# method -> (accuracy, AUROC, target F1) as published; None: not in the material available here
PAPER_DETECTION = {"inspector + reference": (0.94, 0.973, 0.92), "neural-cleanse": (None, 0.495, None),
                   "pixel-backdoor": (None, 0.687, None)}
NOT_HERE = "not in the material here"


def cell(value: float | None, form: str) -> str:
    return NOT_HERE if value is None else format(value, form)


def records() -> dict[str, dict[str, Any]]:
    """Each test zoo's detection record, where its run wrote one (not the retired first one's)."""
    return {zoo: rec for zoo in DETECTION_ZOOS if (rec := record(zoo)) is not None}


def scans_of(recs: dict[str, dict[str, Any]], method: str) -> dict[str, list[dict[str, Any]]]:
    """Per test zoo, the method's rows (zoos where it has not run are left out)."""
    return {zoo: rec["scans"][method] for zoo, rec in recs.items() if rec["scans"].get(method)}


def planned(zoo: str) -> int:
    return len(json.loads((HERE / "zoos" / f"{zoo}.plan.json").read_text())["models"])


def detection_table(recs: dict[str, dict[str, Any]]) -> list[str]:
    lines = ["", "## Detection: accuracy, AUROC, target-class F1", "",
             "Ours: each test zoo (built after every choice) and all of them pooled; *scanned* counts the models the "
             "method has been run on of the zoo's planned models. Every implant counts as backdoored, real or not.", "",
             "| method | paper: accuracy / AUROC / target F1 | zoo | scanned | accuracy | AUROC | target F1 | "
             "clean flagged | median s per scan (CPU) |", "|---|---|---|---|---|---|---|---|---|"]
    for method, label in METHODS.items():
        acc, auc, f1 = PAPER_DETECTION[method]
        paper = f"{cell(acc, '.0%')} / {cell(auc, '.3f')} / {cell(f1, '.2f')}"
        per_zoo = scans_of(recs, method)
        if not per_zoo:
            lines.append(f"| {label} | {paper} | — | not run on a test zoo yet | | | | | |")
            continue
        groups = [*per_zoo.items()] + ([("pooled", [r for rows in per_zoo.values() for r in rows])]
                                       if len(per_zoo) > 1 else [])
        if method != DEFAULT:  # the default scan on exactly the models this baseline has scanned, to compare
            ours = scans_of(recs, DEFAULT)
            groups += [(f"{zoo}, the default scan on the same models",
                        [r for r in ours.get(zoo, []) if r["model"] in {b["model"] for b in rows}])
                       for zoo, rows in per_zoo.items()]
        for zoo, rows in groups:
            s = summarise(rows)
            of = sum(planned(z) for z in per_zoo) if zoo == "pooled" else planned(zoo.split(",")[0])
            clean = [r for r in rows if not r["backdoored"]]
            seconds = f"{s['seconds_per_scan']:.1f}" if s["seconds_per_scan"] is not None else "—"
            shown = f"{METHODS[DEFAULT]}, beside {label}" if zoo.endswith("same models") else label
            published = "—" if shown != label else paper
            lines.append(f"| {shown} | {published} | {ZOO_LABELS.get(zoo, zoo)} | {s['models']} of {of} | "
                         f"{s['accuracy']:.1%} | {s['auroc']:.3f} | {s['target_f1']:.2f} | "
                         f"{s['false_positives']} of {len(clean)} | {seconds} |")
    return lines + ["", "Why they differ: the paper scans CoCoOp learners on ViT-B/16 over 10 datasets with four "
                        "attacks; ours are CoOp and CoCoOp learners of the 64-px pocket CLIP on one 20-class task, "
                        "with clean learners of varied recipes and eight attacks (filter and sticker triggers are "
                        "not additive noise), and our default scan is the fast schedule with a clean reference and a "
                        "colour family (benchmarks/detection.md), not the paper's one-epoch scan on raw flip rates."]


def per_attack_table(recs: dict[str, dict[str, Any]]) -> list[str]:
    lines = ["", "## Per attack: found (flag and right target) and target F1, test zoos pooled", "",
             "| attack | models | real | " + " | ".join(f"{label}: found / F1" for label in METHODS.values()) + " |",
             "|---|---|---|" + "---|" * len(METHODS)]
    real = set().union(*(zoo_tables.real_backdoors(zoo_tables.manifest_rows(HERE / "zoos" / z)) for z in recs))
    by_method = {m: [r for rows in scans_of(recs, m).values() for r in rows] for m in METHODS}
    attacks = sorted({r["attack"] for r in by_method["inspector + reference"] if r["backdoored"]})
    for attack in attacks:
        default_rows = [r for r in by_method["inspector + reference"] if r["attack"] == attack]
        cells = []
        for method in METHODS:
            rows = [r for r in by_method[method] if r["attack"] == attack]
            found = sum(r["flagged"] and r["predicted_target"] == r["true_target"] for r in rows)
            cells.append(f"{found} of {len(rows)} / {target_f1(rows):.2f}" if rows else "not run")
        lines.append(f"| {attack} | {len(default_rows)} | {sum(r['model'] in real for r in default_rows)} | "
                     + " | ".join(cells) + " |")
    return lines + ["", f"The paper's per-attack target F1: {NOT_HERE} (its overall target F1 is 0.92). *Real*: the "
                        "implant met its bar when built (ASR >= 80%, OOD ASR >= 70%; the adaptive BadCLIP 50%; "
                        "accuracy within 3 points of its clean base)."]


def attack_count(recs: dict[str, dict[str, Any]], attack: str, title: str, paper: str) -> list[str]:
    rows = [r for rows in scans_of(recs, "inspector + reference").values() for r in rows if r["attack"] == attack]
    if not rows:
        return ["", f"## {title}", "", "No test-zoo model of this attack has been scanned yet (third test zoo)."]
    manifest = {stem: m for z in recs for stem, m in zoo_tables.manifest_rows(HERE / "zoos" / z).items()}
    real = zoo_tables.real_backdoors(manifest)
    lines = ["", f"## {title}", "", f"Paper: {paper}.", "",
             "| model | real | ASR | OOD ASR | accuracy (base) | flagged | suspect | family | anomaly index | "
             "flip rate |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        m = manifest.get(r["model"], {})
        accuracy = (f"{m['accuracy']:.1%} ({m['clean_base_accuracy']:.1%})" if "clean_base_accuracy" in m else "—")
        lines.append(f"| {r['model']} | {'yes' if r['model'] in real else 'no'} | {m.get('asr', float('nan')):.1%} | "
                     f"{m.get('ood_asr', float('nan')):.1%} | {accuracy} | {'yes' if r['flagged'] else 'no'} | "
                     f"{r['suspect']} | {r.get('suspect_family') or 'additive'} | {r['max_anomaly']:.2f} | "
                     f"{r['suspect_flip_rate']:.0%} |")
    found = [r for r in rows if r["flagged"] and r["predicted_target"] == r["true_target"]]
    found_real = [r for r in found if r["model"] in real]
    return lines + ["", f"Ours: {len(found)} of {len(rows)} flagged with their target ({len(found_real)} of "
                        f"{sum(r['model'] in real for r in rows)} real ones)."]


def basin_table(zoo: Path) -> list[str]:
    """The adaptive attack's point: a narrower trigger basin than BadCLIP's (noisy-trigger ASR against exact)."""
    path = zoo / "ablations" / BASINS_FILE
    if not path.exists():
        return []
    rows = json.loads(path.read_text())
    lines = ["", "How narrow the basins are (`paper_ablations.py --only basins`, the task's test images): the "
             "implanted trigger's ASR exact and with Gaussian noise of twice its bound added, BadCLIP of the first "
             "two test zoos beside the adaptive BadCLIP of the third.", "",
             "| attack | kind | models | ASR exact | ASR with the noisy trigger |", "|---|---|---|---|---|"]
    groups: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        groups[(r["attack"], r["kind"])].append(r)
    for (attack, kind), group in sorted(groups.items()):
        lines.append(f"| {attack} | {kind} | {len(group)} | {sum(r['asr'] for r in group) / len(group):.1%} | "
                     f"{sum(r['noisy_asr'] for r in group) / len(group):.1%} |")
    return lines


def encoder_table() -> list[str]:
    builds = [json.loads(p.read_text()) for split in DRAWS if not split.startswith("dev")  # every reported draw
              for p in sorted((ENCODER_ROOT / split).glob("*.json"))]
    lines = ["", "## Encoder-level backdoors: anomaly index per trigger (test draws)", "",
             f"Paper: the encoder-level models are flagged; its per-trigger index: {NOT_HERE}. Ours: "
             "benchmarks/encoder_backdoors.md (the encoder fine-tuned with Blended poisoning, a clean CoOp learner "
             "on it, the default scan unchanged). Where ours misses a real one, the target's own flip rate under its "
             "reconstructed trigger shows why: the scan's triggers (an additive pattern inside ε, a colour map, a "
             "patch) do not draw a sparse white shape blended over the whole image.", "",
             "| draw | trigger | recipe | target | ASR | real | flagged | suspect | anomaly index "
             "| target's flip rate (clean reference) |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for b in builds:
        scan = ENCODER_ROOT / b["split"] / "scans" / f"{b['model']}.json"
        if not scan.exists():
            continue
        s = json.loads(scan.read_text())
        backdoored = b["target"] is not None
        asr, real = (f"{b['asr']:.1%}", "yes" if is_real(b) else "no") if backdoored else ("— (clean control)", "—")
        lines.append(f"| {b['split']} | {b['pattern']} | {recipe_cell(b['recipe'])} | "
                     f"{b['target'] if backdoored else '—'} | {asr} | {real} | "
                     f"{'yes' if s['flagged'] else 'no'} | {s['suspect']} | {s['max_anomaly']:.2f} | "
                     f"{target_rate(s, b['target'])} |")
    return lines


def target_rate(scan: dict[str, Any], target: str | None) -> str:
    """The target class's additive flip rate in a scan, beside the clean reference's for that class."""
    row = next((c for c in scan["classes"] if c["name"] == target), None)
    if row is None:
        return "—"
    reference = row.get("reference_flip_rate")
    return f"{row['flip_rate']:.1%}" + (f" ({reference:.1%})" if reference is not None else "")


def repair_table(recs: dict[str, dict[str, Any]]) -> list[str]:
    default = recipe_of(RepairConfig().as_dict())
    recorded = [dict(r, zoo=zoo) for zoo, rec in recs.items() for r in rec.get("repairs", [])]
    repairs = [r for r in recorded if recipe_of(r["settings"]) == default]
    lines = ["", "## Repair per attack: clean accuracy and ASR before -> after (default recipe, test zoos)", "",
             "Paper (all attacks, CoCoOp): accuracy 80.6% -> 80.8%, ASR 84.4% -> 6.1%.", "",
             "| attack | kind | models | accuracy before -> after | ASR before -> after |", "|---|---|---|---|---|"]
    groups: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for r in repairs:
        groups[(r["attack"], r["kind"])].append(r)
        groups[("all", r["kind"])].append(r)
    if repairs:
        groups[("all", "both")] = repairs
    for (attack, kind), rows in sorted(groups.items(), key=lambda item: (item[0][0] == "all", item[0])):
        def mean(key: str, rows: list[dict[str, Any]] = rows) -> float:
            return sum(r[key] for r in rows) / len(rows)
        lines.append(f"| {attack} | {kind} | {len(rows)} | {mean('accuracy_before'):.1%} -> "
                     f"{mean('accuracy_after'):.1%} | {mean('asr_before'):.1%} -> {mean('asr_after'):.1%} |")
    zoos = sorted({r["zoo"] for r in repairs})
    other = len(recorded) - len(repairs)
    left_out = f" ({other} recorded with an earlier recipe are left out)" if other else ""
    return lines + ["", f"Repairs with the default recipe on: {', '.join(zoos) or 'none'}{left_out}."]


def repair_ablation_table() -> list[str]:
    """The paper's repair ablation: what the triggered copies carry, on every test zoo's models that have all four."""
    lines = ["", "## Repair ablation: what the triggered copies carry (one recipe otherwise)", "",
             "`python benchmarks/paper_ablations.py --only repair --zoo <zoo> --kinds <kind>`, every row with "
             f"{ABLATION_RECIPE.epochs} epochs at lr {ABLATION_RECIPE.lr:g} (the default when they were measured; "
             "the default now takes half the steps, the repair per attack above) and the default's other settings "
             "(a target-class repair of a model whose scan named its target is its repair against the scan's "
             "suspect; the triggers of the "
             "second zoo's CoCoOp models, not committed, were scanned again as recorded, colour family and no "
             "patch, for the other rows); the implanted trigger's ASR on the task's test images. Wrong class: the "
             "non-target class whose reconstructed trigger flipped "
             "the most OOD images. Random noise: a fresh uniform draw in the scan's L-inf box per triggered copy. "
             "Paper: clean-only fine-tuning leaves ASR at 64.6%; its other rows: " + NOT_HERE + ".", "",
             "| triggered copies carry | zoos | models | accuracy before -> after | ASR before -> after | "
             "models with ASR after > 20% |", "|---|---|---|---|---|---|"]
    found = {zoo: recorded_repairs(HERE / "zoos" / zoo) for zoo in TEST_ZOOS}
    kinds = sorted({r["kind"] for zoo in TEST_ZOOS for rows in found[zoo].values() for r in rows})
    for kind in kinds:
        for label in REPAIR_SETTINGS:
            rows = [r for zoo in TEST_ZOOS for r in found[zoo][label] if r["kind"] == kind]
            zoos = ", ".join(zoo for zoo in TEST_ZOOS if any(r["kind"] == kind for r in found[zoo][label]))
            def mean(key: str, rows: list[dict[str, Any]] = rows) -> float:
                return sum(r[key] for r in rows) / len(rows)
            lines.append(f"| {label} | {zoos} ({kind}) | {len(rows)} | {mean('accuracy_before'):.1%} -> "
                         f"{mean('accuracy_after'):.1%} | {mean('asr_before'):.1%} -> {mean('asr_after'):.1%} | "
                         f"{sum(r['asr_after'] > 0.2 for r in rows)} |")
    by_attack: dict[tuple[str, str], dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for zoo in TEST_ZOOS:
        for label in REPAIR_SETTINGS:
            for r in found[zoo][label]:
                by_attack[(r["attack"], r["kind"])][label].append(r["asr_after"])
    if by_attack:
        lines += ["", "ASR after repair per attack (mean over the same models):", "",
                  "| attack | kind | models | ASR before | " + " | ".join(REPAIR_SETTINGS) + " |",
                  "|---|---|---|---|" + "---|" * len(REPAIR_SETTINGS)]
        cleaned = [r for zoo in TEST_ZOOS for r in found[zoo]["clean-only"]]
        for (attack, kind), settings in sorted(by_attack.items()):
            befores = [r["asr_before"] for r in cleaned if r["attack"] == attack and r["kind"] == kind]
            cells = " | ".join(f"{sum(v) / len(v):.1%}" for v in (settings[label] for label in REPAIR_SETTINGS))
            lines.append(f"| {attack} | {kind} | {len(befores)} | {sum(befores) / len(befores):.1%} | {cells} |")
        lines += ["", "Why they differ: the CoOp learners here are a few context vectors, pulled back by "
                      f"{ABLATION_RECIPE.epochs} epochs on "
                      "the clean task, so clean-only fine-tuning already undoes their fixed-trigger implants; it does "
                      "not undo the adaptive BadCLIP, built to survive noise, nor SIBA, whose sparse 32/255 pattern "
                      "the scan's additive 14/255 trigger reproduces only in part (its repairs with the target's "
                      "trigger leave the most ASR). The CoCoOp rows, the paper's kind of learner (every CoCoOp "
                      "backdoor of the second and third test zoos), come closest to the paper's: the meta-net keeps "
                      "more of an implant through clean fine-tuning, so clean-only leaves about half of the ASR "
                      "(the paper: 64.6%), most for SIBA and the adaptive BadCLIP; random noise removes a little "
                      "more than clean fine-tuning, a wrong class's trigger no more, and only the target's "
                      "reconstructed trigger removes most of it."]
    return lines


def ablation_rows(scanned: dict[str, list[dict[str, Any]]], kind: str) -> list[str]:
    """One ablation's rows for one learner kind, shown once every setting has scanned the same models, clean ones
    among them (the settings are compared on the same models)."""
    models = [{r["model"] for r in rows} for rows in scanned.values()]
    complete = all(m == models[0] for m in models) and any(not r["backdoored"] for rows in scanned.values()
                                                           for r in rows)
    lines = []
    for label, rows in scanned.items():
        if not rows or not complete:
            lines.append(f"| {label} | {kind} | {len(rows)} so far (partial: shown once every setting has scanned the "
                         "same models, clean ones among them) | | | | |")
            continue
        s = summarise(rows)
        flagged = sorted(r["predicted_target"] for r in rows if r["flagged"] and not r["backdoored"])
        on = f" ({', '.join(flagged)})" if flagged else ""
        lines.append(f"| {label} | {kind} | {s['models']} | {s['accuracy']:.1%} | {s['auroc']:.3f} | "
                     f"{s['target_f1']:.2f} | {s['false_positives']} of {s['clean']}{on} |")
    return lines


def ablation_tables(zoo: Path) -> list[str]:
    lines = ["", "## Ablations (third test zoo, the paper's one-epoch scan on raw flip rates)", "",
             "One setting changed at a time from the paper's (margin loss, 1,000 OOD images, batch 32); "
             "`python benchmarks/paper_ablations.py`. The paper's ablation figures: " + NOT_HERE + ". Why ours sit "
             "far below the default scan: these scans read raw flip rates, and on the pocket task a few classes are "
             "reached from most images in clean learners too (*file icon* 77%, *application icon* 64% on average over "
             "the shipped reference's clean CoOp learners, assets/reference/pocket-clip-coop.json), "
             "so the MAD index sees them as outliers in clean models and hides a backdoor's target behind them; the "
             "clean reference of the default scan exists for that (benchmarks/detection.md). With 100 images the "
             "80 fitting images give 3 steps (the last a half batch), and no class got past a 33% flip rate: "
             "none reaches the 50% floor."]
    for name, settings in ABLATIONS.items():
        lines += ["", f"### {name}", "", "| setting | kind | models scanned | accuracy | AUROC | target F1 | "
                  "clean flagged |", "|---|---|---|---|---|---|---|"]
        scanned = {label: [json.loads(p.read_text()) for p in sorted(
            (zoo / "ablations" / setting_folder(overrides, images)).glob("*.json"))]
            for label, (overrides, images) in settings.items()}
        for kind in sorted({r["kind"] for rows in scanned.values() for r in rows}, reverse=True):  # CoOp first
            lines += ablation_rows({label: [r for r in rows if r["kind"] == kind] for label, rows in scanned.items()},
                                   kind)
    ssim_path = zoo / "ablations" / SSIM_FILE
    lines += ["", "### SSIM of clean against triggered images", ""]
    if not ssim_path.exists():
        return lines + ["Not measured yet."]
    rows = json.loads(ssim_path.read_text())
    lines += ["| attack | models | original trigger | reconstructed trigger (target class) |", "|---|---|---|---|"]
    groups: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        groups[r["attack"]].append(r)
    for attack, group in sorted(groups.items()):
        found = [r["reconstructed"] for r in group if r["reconstructed"] is not None]
        rebuilt = f"{sum(found) / len(found):.3f}" if found else "—"
        lines.append(f"| {attack} | {len(group)} | {sum(r['original'] for r in group) / len(group):.3f} | {rebuilt} |")
    return lines


def main() -> None:
    recs = records()
    lines = ["# CLIP-Inspector's tables beside ours (issue 19)", "",
             "The paper: ViT-B/16, CoCoOp with 4 context tokens, 10 datasets x {clean, BadCLIP, Blended, SIBA, "
             "WaNet}. Ours: the embedded pocket CLIP (64 px) on its 20-class task, CoOp and CoCoOp learners, the "
             "test zoos only (test, test2: issue 18's attacks; test3: SIBA and the adaptive BadCLIP; test4: all eight "
             "lab attacks), each built "
             "after the choices it is measured with. Made by `python benchmarks/paper.py` from recorded runs; "
             "every scan ran on 2 CPU threads unless its record says otherwise (no GPU was lent)."]
    lines += detection_table(recs)
    lines += per_attack_table(recs)
    lines += attack_count(recs, "siba", "SIBA (sparse, invisible trigger)", "a row of its four attacks; per-attack "
                          f"figure {NOT_HERE}")
    lines += attack_count(recs, "badclip-adaptive", "The adaptive BadCLIP: detected of 10",
                          f"detected of 10: {NOT_HERE}")
    lines += basin_table(HERE / "zoos" / "test3")
    lines += encoder_table()
    lines += repair_table(recs)
    lines += repair_ablation_table()
    lines += ablation_tables(HERE / "zoos" / "test3")
    (HERE / "paper.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
