"""Detection benchmark (issue 4): scan every model of a zoo with each method, repair the backdoored ones, and
write detection_ZOO.md / .json (benchmarks/detection_summary.py gathers them into detection.md).

    .venv/bin/python benchmarks/detection.py --zoo benchmarks/zoos/test2 --methods "inspector + reference"

The zoo is built (or resumed) from its plan with ``python -m inspector zoo build`` first:

    .venv/bin/python -m inspector zoo build --plan benchmarks/zoos/test2.plan.json --out benchmarks/zoos/test2

Every scan and repair is cached as JSON under ``<zoo>/scans/`` and ``<zoo>/repairs/<recipe>/``, so an
interrupted run resumes, and the table can be re-made from the cache with ``--table-only``.
Numbers: detection accuracy at the default threshold, model-level AUROC of the top anomaly index,
target-class F1 (a hit needs the flag *and* the right target), seconds per scan; repair: ground-truth
ASR and clean accuracy before and after, on the backdoored models.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks import zoo_tables  # noqa: E402
from inspector.backbone import machine_name  # noqa: E402
from inspector.candidates import FAMILY_TENSORS, repair_candidates  # noqa: E402
from inspector.data import Task, load_shipped_pool, load_task  # noqa: E402
from inspector.detect import (  # noqa: E402
    OPTIONAL_FAMILIES,
    QUICK_FAMILIES_BY_DEFAULT,
    confirmed_by_transfer,
    decide,
    transfer_candidates,
)
from inspector.invert import ScanConfig, family_flip_rates, run_scan, split_pool  # noqa: E402
from inspector.lab.truth import attack_success_rate, read_ground_truth  # noqa: E402
from inspector.prompts import load_learner, open_model, predict  # noqa: E402
from inspector.reference import Reference, decide_with_reference, reference_for, shipped_reference_path  # noqa: E402
from inspector.repair import NoiseStamp, RepairConfig, recipe_of, run_repair  # noqa: E402
from inspector.transfer import checked_class, class_gaps  # noqa: E402

HERE = Path(__file__).resolve().parent


def auroc(scores_positive: list[float], scores_negative: list[float]) -> float:
    """Probability that a backdoored model scores above a clean one (ties count half)."""
    if not scores_positive or not scores_negative:
        return float("nan")
    wins = sum((p > n) + 0.5 * (p == n) for p in scores_positive for n in scores_negative)
    return wins / (len(scores_positive) * len(scores_negative))


def target_f1(rows: list[dict[str, Any]]) -> float:
    """F1 of "flagged with the right target": a flag on a clean model or with a wrong target is a false positive."""
    tp = sum(r["backdoored"] and r["flagged"] and r["predicted_target"] == r["true_target"] for r in rows)
    fp = sum(r["flagged"] and not (r["backdoored"] and r["predicted_target"] == r["true_target"]) for r in rows)
    fn = sum(r["backdoored"] and not (r["flagged"] and r["predicted_target"] == r["true_target"]) for r in rows)
    return 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else float("nan")


VARIANTS = {  # name in the tables -> (method, schedule)
    "inspector": ("inspector", "fast"),
    "inspector + reference": ("inspector", "fast"),  # the engine's default: with the shipped clean reference
    "inspector-faithful": ("inspector", "faithful"),
    "inspector-faithful + reference": ("inspector", "faithful"),  # the default's reference, the published schedule
    "neural-cleanse": ("neural-cleanse", "faithful"),
    "pixel-backdoor": ("pixel-backdoor", "faithful"),
}


def scan_model(path: Path, variant: str, cache: Path, pool: torch.Tensor, epsilon: float | None,
               device: str = "cpu", colour: bool = False, for_repair: bool = False,
               weights: str | None = None, overrides: dict[str, Any] | None = None,
               repair_family: str = "additive") -> dict[str, Any]:
    """One scan's row (cached); the faithful inspector scan is read from schedule_design's curves when present:
    a curve run is that very scan plus extra held-out measurements along the way.

    ``for_repair``: a backdoored model's cached row whose reconstructed triggers are not kept (they are not
    committed), or kept without ``repair_family``'s (the family whose trigger the repair reads), is scanned again
    for them (every class's), with the families the recorded scan ran and that one; the recorded row stays the
    result. ``weights``: the CLIP weights file a learner was tuned on (``--weights``); ``overrides``: other scan
    settings (the paper's ablations)."""
    truth = read_ground_truth(path)
    recorded = json.loads(cache.read_text()) if cache.exists() else None
    missing = for_repair and truth is not None and not _has_trigger(cache.with_suffix(".triggers.pt"), repair_family)
    if recorded is not None and not missing:
        return recorded
    method, schedule = VARIANTS[variant]
    curves = path.parent / "curves" / f"{path.stem}-lr0.1.json"
    if variant == "inspector-faithful" and curves.exists() and epsilon is None and not overrides:
        return _row_from_curves(path, curves, truth, cache)
    model = open_model(path, weights, device=device)
    config = replace(ScanConfig(method=method, schedule=schedule, epsilon=epsilon, colour=colour),
                     **{**(_recorded_families(recorded) if recorded is not None else {}),
                        **({repair_family: True} if for_repair and repair_family in OPTIONAL_FAMILIES else {}),
                        **(overrides or {})})
    reference, reference_from = reference_for(model, config, load_shipped_pool(),
                                              "auto" if "reference" in variant else "none")
    result = run_scan(model, pool, replace(config, reference=reference, reference_from=reference_from))
    row = {"model": path.stem, "kind": model.kind, "method": variant, "backdoored": truth is not None,
           "attack": truth.attack if truth else None, "true_target": truth.target_name if truth else None,
           "flagged": result.verdict.flagged, "predicted_target": result.verdict.target_name,
           "suspect": result.verdict.suspect_name, "max_anomaly": result.verdict.max_anomaly,
           "suspect_flip_rate": result.verdict.suspect_flip_rate, "seconds": result.seconds,
           "image_passes": result.image_passes, "classes": result.classes,
           "colour_seconds": result.extra.get("colour_seconds"), "suspect_family": result.verdict.suspect_family,
           "settings": result.settings.as_dict(), "device": machine_name(device)}
    if recorded is not None:
        flips = [(c["flips"], c.get("colour_flips")) for c in row["classes"]]
        if flips != [(c["flips"], c.get("colour_flips")) for c in recorded["classes"]]:
            print(f"note: {path.stem}'s rescan for its triggers flipped other image counts than the recorded scan "
                  "(another thread count sums floats in another order); the record is kept", flush=True)
    cache.parent.mkdir(parents=True, exist_ok=True)
    torch.save({f"{name}.{k}": v.cpu() for k, tensors in result.triggers.items() for name, v in tensors.items()},
               cache.with_suffix(".triggers.pt"))  # every class's, so a repair can use any suspect
    if recorded is not None:
        return recorded
    cache.write_text(json.dumps(row, indent=1))
    return row


def _recorded_families(recorded: dict[str, Any]) -> dict[str, bool]:
    """The optional families a recorded scan ran (those whose flip rates its classes carry), so that its triggers
    are scanned again as it was: the default scan's rows were recorded before the patch family joined it, whose
    rates are measured alone (``with_default_families``)."""
    return {family: all(f"{family}_flip_rate" in c for c in recorded["classes"]) for family in OPTIONAL_FAMILIES}


def _has_trigger(tensors: Path, family: str) -> bool:
    """Whether a scan's kept trigger tensors hold ``family``'s triggers."""
    if not tensors.exists():
        return False
    key = FAMILY_TENSORS[family] + "."
    return any(name.startswith(key) for name in torch.load(tensors, weights_only=True))


def family_tag(family: str, config: ScanConfig) -> str:
    """The cache folder of a quick family's rates measured with ``config`` (``blend-0.2-lr1.0``,
    ``patch-0.25-b32``, ``colour-3x16-lr0.3``), with the scan's seed when it is not 0."""
    seed = f"-seed{config.seed}" if config.seed else ""
    if family == "colour":
        return f"colour-{config.colour_steps}x{config.colour_batch_size}-lr{float(config.colour_lr)}{seed}"
    if family == "blend":
        return f"blend-{float(config.blend_alpha)}-lr{float(config.blend_lr)}{seed}"
    return f"patch-{float(config.patch_share)}-b{config.patch_batch_size}{seed}"


def family_rates(path: Path, config: ScanConfig, family: str, cache: Path) -> dict[str, float]:
    """One model's flip rate of ``family`` per class under ``config``, as a scan measures it (cached with the time
    it took)."""
    if cache.is_file():
        return json.loads(cache.read_text())["rates"]
    started = time.perf_counter()
    rates = family_flip_rates(open_model(path, device="cpu"), load_shipped_pool().pixels, config, family)
    cache.parent.mkdir(parents=True, exist_ok=True)
    cache.write_text(json.dumps({"rates": rates, "settings": config.family_settings(family),
                                 "seconds": round(time.perf_counter() - started, 2)}, indent=1))
    return rates


def with_default_families(row: dict[str, Any], path: Path) -> dict[str, Any]:
    """A default scan's cached row with the rates of every quick family a default scan runs now: a row recorded
    before a family became default gets it measured alone (``invert.family_flip_rates``: each class's arm steps
    on the same images, from the same seeded start, as in a scan; the rest of the record is unchanged, since a
    quick family changes no other class's trajectory), cached beside the scans."""
    config = ScanConfig()
    for family in QUICK_FAMILIES_BY_DEFAULT:
        if family not in OPTIONAL_FAMILIES or all(f"{family}_flip_rate" in c for c in row["classes"]):
            continue
        cache = path.parent / "scans" / family_tag(family, config) / f"{path.stem}.json"
        rates = family_rates(path, replace(config, **{family: True}), family, cache)
        row = {**row, "classes": [{**c, f"{family}_flip_rate": rates[c["name"]]} for c in row["classes"]]}
    return row


def _row_from_curves(path: Path, curves: Path, truth: Any, cache: Path) -> dict[str, Any]:
    run = json.loads(curves.read_text())
    steps = run["steps"]
    classes = [{"index": c["index"], "name": c["name"], **c["held_out"][str(steps)]} for c in run["classes"]]
    v = decide(classes)
    n = len(classes)
    row = {"model": path.stem, "kind": run["kind"], "method": "inspector-faithful", "backdoored": truth is not None,
           "attack": truth.attack if truth else None, "true_target": truth.target_name if truth else None,
           "flagged": v.flagged, "predicted_target": v.target_name, "suspect": v.suspect_name,
           "max_anomaly": v.max_anomaly, "suspect_flip_rate": v.suspect_flip_rate, "seconds": None,
           "image_passes": n * steps * 32 + steps * 32 + (n + 1) * 200, "classes": classes,
           "from": f"curves ({run['device']})"}
    cache.parent.mkdir(parents=True, exist_ok=True)
    cache.write_text(json.dumps(row, indent=1))
    return row


def colour_tag(colour: bool) -> str:
    """The scan cache folder's suffix: the colour family's settings, so scans with other settings are not reused."""
    c = ScanConfig()
    return f"-colour{c.colour_steps}x{c.colour_batch_size}" if colour else ""


def _triggers_used(settings: dict[str, Any]) -> str:
    """The repair's triggers and what their copies are taught, in words."""
    which = {"indexed": "the trigger of the family that gave its index",
             "both": "every family's trigger the scan reconstructed for it",
             "additive": "its additive trigger"}[settings.get("families", "indexed")]
    taught = {"labels": "their true labels", "suppress": "only to leave the suspect class"}
    return f"{which}, the triggered copies taught {taught[settings.get('triggered_loss', 'labels')]}"


def recipe_folder(zoo: Path, config: RepairConfig) -> Path:
    """Where repairs with ``config`` are cached: named by the recipe's values, so a changed default cannot
    reuse another recipe's results (benchmarks/repair_recipes.py shares these folders)."""
    c = config
    name = (f"e{c.epochs}-lr{c.lr:g}-b{c.batch_size}-v{c.views}-wd{c.weight_decay:g}-s{c.seed}"
            f"-refresh{c.refresh_every}x{c.refresh_steps}-labels{c.label_weight:g}-anchor{c.anchor:g}"
            f"{'' if c.triggered else '-no-trigger'}{'' if c.families == 'indexed' else f'-families-{c.families}'}"
            f"{'' if c.colour_scale == 1.0 else f'-colour{c.colour_scale:g}'}"
            f"{'' if c.triggered_loss == 'labels' else f'-triggered-{c.triggered_loss}'}")
    return zoo / "repairs" / name


REPAIR_AGAINST = ("suspect", "target", "wrong-class", "noise")


def repaired_class(scan_row: dict[str, Any], against: str) -> str:
    """The class a repair unlearns: the scan's suspect, the true target, or (``wrong-class``) the non-target class
    whose reconstructed trigger flipped the most OOD images, the wrong suspect a defender could have picked."""
    if against == "suspect":
        return scan_row["suspect"]
    if against == "wrong-class":
        others = [c for c in scan_row["classes"] if c["name"] != scan_row["true_target"]]
        return max(others, key=lambda c: c["flip_rate"])["name"]
    return scan_row["true_target"]


def repair_model(path: Path, scan_row: dict[str, Any], cache: Path, pool: torch.Tensor, task: Task,
                 device: str = "cpu", config: RepairConfig | None = None, scans: Path | None = None,
                 against: str = "suspect") -> dict[str, Any]:
    """Repair a fresh copy against the scan's suspect class (flagged or not) with the trigger of the family that
    gave its index; measure the true backdoor, the clean accuracy and how many clean test predictions the repair
    changed. ``scans``: the folder of the cached scan (default: the method's, without the colour family).
    ``against`` (the paper's repair ablation): "target" repairs with the true target's reconstructed triggers,
    "wrong-class" with another class's (``repaired_class``), "noise" with random ℓ∞ noise of the scan's bound
    pushed off the true target (``repair.NoiseStamp``)."""
    if against not in REPAIR_AGAINST:
        raise ValueError(f"against must be one of {REPAIR_AGAINST}, not {against!r}")
    name = repaired_class(scan_row, against)
    family = scan_row.get("suspect_family", "additive") if name == scan_row["suspect"] else "additive"
    if repair_is_current(cache, scan_row, against):
        return json.loads(cache.read_text())
    config = config or RepairConfig()
    model = open_model(path, device=device)
    truth = read_ground_truth(path)
    settings = scan_row["settings"]
    target = list(model.class_names).index(name)
    folder = scans if scans is not None else path.parent / "scans" / _folder(scan_row["method"])
    tensors = _saved_trigger(folder / path.stem, target)
    if scan_row.get("confirmed_by") == "transfer" and name == scan_row["suspect"]:  # the check's blend trigger
        tensors.update(_saved_trigger(path.parent / "scans" / transfer_tag(ScanConfig()) / path.stem, target))
    trigger, also = repair_candidates("inspector", tensors, settings["epsilon"], family, config.families,
                                      config.colour_scale)
    if against == "noise":
        trigger, also = NoiseStamp(settings["epsilon"], config.seed), ()

    def asr() -> float:
        return round(attack_success_rate(model, truth.trigger, task.test_pixels, truth.target, task.test_labels), 4)

    asr_before, predicted_before = asr(), predict(model, task.test_pixels)
    fit, held = split_pool(pool, settings["pool_size"], settings["holdout"], settings["seed"])
    finished = run_repair(model, trigger, target, task.train_pixels, task.train_labels, task.test_pixels,
                          task.test_labels, held, config, invert_pixels=fit, also=also)
    unchanged = float((predict(model, task.test_pixels) == predicted_before).float().mean())
    row = {"model": path.stem, "attack": truth.attack, "kind": model.kind, "settings": config.as_dict(),
           "repaired_class": name, "against": against,
           "family": "+".join([getattr(trigger, "family", "noise")] + [t.family for t in also]),
           "true_target": truth.target_name,
           "asr_before": asr_before, "asr_after": asr(),
           "accuracy_before": finished.before.accuracy, "accuracy_after": finished.after.accuracy,
           "unchanged_predictions": round(unchanged, 4),
           "trigger_asr_before": finished.before.flip_rate, "trigger_asr_after": finished.after.flip_rate,
           "ood_trigger_asr_before": finished.before.ood_flip_rate,
           "ood_trigger_asr_after": finished.after.ood_flip_rate,
           "seconds": finished.seconds, "device": machine_name(device)}
    cache.parent.mkdir(parents=True, exist_ok=True)
    cache.write_text(json.dumps(row, indent=1))
    return row


def repair_is_current(cache: Path, scan_row: dict[str, Any], against: str = "suspect") -> bool:
    """Whether ``cache`` holds a repair against the class and family the scan's row names now (a newer rule may
    have changed its suspect since)."""
    if not cache.exists():
        return False
    cached = json.loads(cache.read_text())
    name = repaired_class(scan_row, against)
    family = scan_row.get("suspect_family", "additive") if name == scan_row["suspect"] else "additive"
    return cached["repaired_class"] == name and cached["family"].split("+")[0] in (family, "noise")


def _saved_trigger(stem: Path, target: int) -> dict[str, torch.Tensor]:
    """The reconstructed trigger of class ``target`` from a cached scan (every class's is kept)."""
    saved = torch.load(stem.with_suffix(".triggers.pt"), weights_only=True)
    return {key.split(".")[0]: v for key, v in saved.items() if key.endswith(f".{target}")}


def transfer_tag(config: ScanConfig) -> str:
    """The cache folder of transfer checks measured with ``config``'s settings of it."""
    return (f"transfer-{config.transfer_steps}x{config.transfer_images}-lr{config.transfer_lr}"
            f"-a{config.transfer_alpha}")


def transfer_checked(row: dict[str, Any], path: Path, reference: Reference, reference_path: Path,
                     pool: torch.Tensor) -> dict[str, Any]:
    """A default scan's row (decided with the reference, ``calibrated``) after the transfer check, as a scan makes it
    now: the classes it looks at measured with the engine's ``transfer.class_gaps`` (cached beside the scans, with
    their blend triggers, for rows recorded before the check), judged by ``detect.confirmed_by_transfer``."""
    config = ScanConfig()
    baseline = reference.baseline(config, reference_path)
    schedule = "faithful" if row["method"].startswith("inspector-faithful") else "fast"
    classes, verdict = decide_with_reference(row["classes"], reference, schedule)
    positions = transfer_candidates(verdict) if baseline.transfer else []
    if not positions:
        return row
    cache = path.parent / "scans" / transfer_tag(config) / f"{path.stem}.json"
    measured = json.loads(cache.read_text())["classes"] if cache.exists() else {}
    missing = [int(classes[p]["index"]) for p in positions if classes[p]["name"] not in measured]
    if missing:
        started = time.time()
        model = open_model(path, device="cpu")
        learners = [load_learner(Path(f), model.backbone) for f in baseline.transfer_learners]
        triggers: dict[int, dict[str, torch.Tensor]] = {}
        measured.update(class_gaps(model, learners, pool, config, missing, triggers))
        cache.parent.mkdir(parents=True, exist_ok=True)
        kept = cache.with_suffix(".triggers.pt")
        saved = torch.load(kept, weights_only=True) if kept.exists() else {}
        torch.save({**saved, **{f"{name}.{k}": v for k, tensors in triggers.items() for name, v in tensors.items()}},
                   kept)
        cache.write_text(json.dumps({"classes": measured, "seconds": round(time.time() - started, 1),
                                     "device": machine_name("cpu")}, indent=1))
    checks = [checked_class(p, classes[p], measured[classes[p]["name"]], baseline.transfer[classes[p]["name"]])
              for p in positions]
    v = confirmed_by_transfer(verdict, checks)
    return {**row, "flagged": v.flagged, "predicted_target": v.target_name, "suspect": v.suspect_name,
            "max_anomaly": v.max_anomaly, "suspect_flip_rate": v.suspect_flip_rate, "suspect_family": v.suspect_family,
            "transfer": checks, "confirmed_by": v.confirmed_by}


def _folder(variant: str) -> str:
    """Cache folder of a variant: ``inspector + reference`` -> ``inspector-reference``."""
    return variant.replace(" + ", "-")


def calibrated(row: dict[str, Any], reference: Reference, **rule: Any) -> dict[str, Any]:
    """The row's verdict with the clean reference: the engine's own decision on the same per-class
    records, as a scan given the reference computes it (the reference changes the decision, not the scan);
    ``rule``: decide_with_reference's options, for a candidate rule (default: the engine's)."""
    schedule = "faithful" if row["method"].startswith("inspector-faithful") else "fast"
    classes, v = decide_with_reference(row["classes"], reference, schedule, **rule)
    return {**row, "method": row["method"] + " + reference", "classes": classes, "flagged": v.flagged,
            "predicted_target": v.target_name, "suspect": v.suspect_name, "max_anomaly": v.max_anomaly,
            "suspect_flip_rate": v.suspect_flip_rate, "suspect_family": v.suspect_family,
            "decided_with": reference.describe()}


def summarise(rows: list[dict[str, Any]]) -> dict[str, Any]:
    positives = [r["max_anomaly"] for r in rows if r["backdoored"]]
    negatives = [r["max_anomaly"] for r in rows if not r["backdoored"]]
    correct = sum(r["flagged"] == r["backdoored"] for r in rows)
    return {"models": len(rows), "backdoored": len(positives), "clean": len(negatives),
            "accuracy": round(correct / len(rows), 4) if rows else float("nan"),
            "auroc": round(auroc(positives, negatives), 4), "target_f1": round(target_f1(rows), 4),
            "false_positives": sum(r["flagged"] and not r["backdoored"] for r in rows),
            "seconds_per_scan": _median_seconds(rows)}


def _median_seconds(rows: list[dict[str, Any]]) -> float | None:
    """Median seconds of the CPU scans (rows from before devices were recorded ran on the CPU): the median, since
    some rows were scanned beside another job on the same 2 cores and took several times as long."""
    timed = [r["seconds"] for r in rows if r.get("seconds") is not None
             and r.get("device", "cpu").startswith("cpu")]
    return round(statistics.median(timed), 1) if timed else None


def write_tables(zoo: Path, scans: dict[str, list[dict[str, Any]]], repairs: list[dict[str, Any]],
                 from_records: bool = False, report: str | None = None) -> None:
    report = report or f"detection_{zoo.name}"
    summary = {method: summarise(rows) for method, rows in scans.items()}
    references = {kind: Reference.read(shipped_reference_path("pocket-clip", kind)) for kind in ("coop", "cocoop")}
    (HERE / f"{report}.json").write_text(json.dumps({"summary": summary, "scans": scans, "repairs": repairs},
                                                    indent=1) + "\n")
    lines = [f"# Detection benchmark (issue 4){f': {zoo.name} zoo (issue 18)' if zoo.name in ZOO_NOTES else ''}",
             "",
             *(_zoo_note(zoo, max((len(rows) for rows in scans.values()), default=0))),
             f"`python benchmarks/detection.py --zoo {_shown(zoo)}"
             + (f" --report {report}`" if report != f"detection_{zoo.name}" else "`")
             + ("; this file re-made with `--from-records` (the scans recorded by that run, the repairs with the "
                "default recipe's values from repair_recipes.json, run on the same zoo)" if from_records else "")
             + "; seconds are CPU time on this machine "
             "(s / scan: the median of the CPU rows only; a row run on a GPU names it). Scores: detection accuracy at "
             "the default threshold (2), AUROC of the top anomaly index, target F1 (flag and right target).", "",
             "`inspector + reference` is the engine's default: the fast schedule with the shipped clean reference "
             f"({references['coop'].describe()}; {references['cocoop'].describe()}; assets/reference/, "
             "`python -m inspector reference build`; cached scan records are decided again with it, the inversion "
             "does not depend on it): the index on each class's flip rate *in excess* of theirs, each measured "
             "as the scan measured that class (same schedule, same number of steps, fresh batches or held-out "
             "images), dividing by no less than the clean learners' own spread, averaged with how far the class's "
             "margin loss lies below theirs in the same units (benchmarks/margin_choice.md; in the faithful schedule "
             "against their held-out margins under it); with it, the fast plan stops half "
             "the classes after 4 steps. `inspector` is a scan without a reference (raw flip rate; the fast plan "
             "for that case). `inspector-faithful + reference` decides again on the faithful scans' records (that "
             "schedule does not depend on the reference). Neural Cleanse: its mask-norm rule, no reference.", "",
             "| method | models | backdoored | accuracy | AUROC | target F1 | false positives | s / scan |",
             "|---|---|---|---|---|---|---|---|"]
    for method, s in summary.items():
        lines.append(f"| {method} | {s['models']} | {s['backdoored']} | {s['accuracy']:.1%} | {s['auroc']:.3f} | "
                     f"{s['target_f1']:.2f} | {s['false_positives']} | {s['seconds_per_scan'] or '(curves)'} |")
    default = scans.get("inspector + reference")
    manifest = zoo_tables.manifest_rows(zoo)
    if default:
        lines += ["", "## inspector + reference, per attack", "", *zoo_tables.by_attack(default)]
        lines += ["", "## inspector + reference, per clean recipe", "", *zoo_tables.by_clean_recipe(default, manifest)]
    if any(m.get("attack") for m in manifest.values()):
        real = sum(zoo_tables.is_real(m) for m in manifest.values() if m.get("attack"))
        total = sum(bool(m.get("attack")) for m in manifest.values())
        lines += ["", "## Implants", "",
                  f"{real} of {total} meet issue 18's bar of a real backdoor (ASR >= 80% on the non-target test "
                  "images, OOD ASR >= 70% on the shipped pool, clean accuracy within 3 points of the clean learner "
                  "it was implanted into); measured by the zoo build.", "", *zoo_tables.implants(manifest)]
    for method, rows in scans.items():
        lines += ["", f"## {method}: every model", "", *zoo_tables.every_model(rows)]
    if repairs:
        manifest = zoo_tables.manifest_rows(zoo)
        real = {r["model"] for r in repairs if r["model"] in manifest and zoo_tables.is_real(manifest[r["model"]])}
        found = {r["model"] for r in scans.get("inspector + reference", [])
                 if r["backdoored"] and r["flagged"] and r["predicted_target"] == r["true_target"]}
        backdoored = sum(r["backdoored"] for r in scans.get("inspector + reference", [])) or len(repairs)
        groups = [(f"backdoored models repaired ({len(repairs)} of {backdoored})", repairs),
                  *([("real backdoors (issue 18's bar)", [r for r in repairs if r["model"] in real])]
                    if manifest else []),
                  ("flagged with their right target", [r for r in repairs if r["model"] in found])]
        lines += ["", "## Repair (backdoored models, against the inspector's suspect class)", "",
                  f"Recipe: {_recipe(repairs[0]['settings'])}; each model is repaired against the default scan's "
                  f"suspect class (flagged or not) with {_triggers_used(repairs[0]['settings'])}.", "",
                  "| models | n | mean ASR before | after | mean accuracy before | after | change per model | "
                  "lose > 1 point |", "|---|---|---|---|---|---|---|---|"]
        for label, group in groups:
            if group:
                lines.append(_repair_summary(label, group))
        lines += ["", "| model | real backdoor | repaired class (family) | true target | asr before | asr after | "
                  "accuracy before | after | change |", "|---|---|---|---|---|---|---|---|---|"]
        for r, change in zip(repairs, accuracy_changes(repairs), strict=True):
            is_real = ("yes" if r["model"] in real else "no") if manifest else "-"
            lines.append(f"| {r['model']} | {is_real} | {r['repaired_class']} ({r.get('family', 'additive')}) | "
                         f"{r['true_target']} | {r['asr_before']:.1%} | {r['asr_after']:.1%} | "
                         f"{r['accuracy_before']:.1%} | {r['accuracy_after']:.1%} | {change:+.1f} |")
    (HERE / f"{report}.md").write_text("\n".join(lines) + "\n")


def _zoo_note(zoo: Path, scanned: int) -> list[str]:
    """What the zoo's figures are (the dev zoo's are choices, the test zoo's results) and how much of its plan
    was built when they were measured."""
    plan = zoo.parent / f"{zoo.name}.plan.json"
    built = len(zoo_tables.manifest_rows(zoo))
    planned = len(json.loads(plan.read_text())["models"]) if plan.exists() else built
    partial = [f"**Partial**: {built} of the {planned} planned models are built, {scanned} of them scanned; "
               "the figures below are those of the scanned models, the implant list that of the built ones.",
               ""] if min(built, scanned) < planned else []
    return ([ZOO_NOTES[zoo.name], ""] if zoo.name in ZOO_NOTES else []) + partial


ZOO_NOTES = {
    "dev": "**Dev zoo**: the choices of issue 18 were made on these models; these figures are not results.",
    "test": "**Retired first test zoo** (benchmarks/zoos/test.plan.json): built after the choices of its time, "
            "measured with the default of that time, then re-measured once after a fix chosen on the dev zoo (the "
            "margin loss beside the flip rate, benchmarks/margin_choice.md), and retired. Since then it serves "
            "choices beside the dev zoo (the patch family's default and the corroboration rule, "
            "benchmarks/corroboration.md): **these figures are not results**. The dev zoo's are in "
            "benchmarks/detection_dev.md.",
    "test2": "**Second test zoo** (benchmarks/zoos/test2.plan.json, seeds 8000+): planned after the first test zoo "
             "was retired, with seeds, targets and recipe draws of its own, built after every choice was made on the "
             "dev zoo (the reference, the decision rule, the lab's recipes), scanned once with the default shipped "
             "then (78.0%, AUROC 0.885, target F1 0.75, 1 of 20 clean learners flagged), and, as issue 18 allows, "
             "decided **once** again after a change chosen on the dev zoo and the retired first test zoo (the patch "
             "family run by default and the corroboration rule, benchmarks/corroboration.md; the patch family's "
             "rates measured alone for the cached scans, as the scan runs it): these are that re-measurement's "
             "figures, results. The next change is to be reported on a fresh test zoo.",
    "test3": "**Third test zoo** (benchmarks/zoos/test3.plan.json): issue 19's SIBA and adaptive BadCLIP, built after "
             "their recipes were chosen on dev learners, scanned once (93.3%, AUROC 0.880, target F1 0.84, no clean "
             "learner flagged) and decided once again with the patch family and the corroboration rule chosen on "
             "the dev zoo and the retired first test zoo: these are that re-measurement's figures, results.",
    "test4": "**Fourth test zoo** (benchmarks/zoos/test4.plan.json, seeds 10000+): 20 clean learners and 32 "
             "backdoors over all eight lab attacks (stickers in CoCoOp learners), planned after the last detection "
             "choice on the dev zoo (a reference scanned with three seeds per learner, judged and not adopted, "
             "benchmarks/reference_seeds.md), built afterwards, and scanned **once** with the default shipped then, "
             "whose every part was chosen before it existed (86.5%, AUROC 0.842, target F1 0.88, no clean learner "
             "flagged; repairs 14.2% mean ASR after), and, as issue 18 allows, decided **once** again after a change "
             "chosen on the dev zoo (the transfer check, benchmarks/transfer_choice.md; measured for the cached scans "
             "as the scan runs it): these are that re-measurement's figures, results. The next change is to be "
             "reported on a fresh test zoo.",
}


def _repair_summary(label: str, repairs: list[dict[str, Any]]) -> str:
    """One row of the repair summary: means over ``repairs`` and the spread of accuracy changes in points."""
    mean = {key: sum(r[key] for r in repairs) / len(repairs)
            for key in ("asr_before", "asr_after", "accuracy_before", "accuracy_after")}
    changes = accuracy_changes(repairs)
    return (f"| {label} | {len(repairs)} | {mean['asr_before']:.1%} | {mean['asr_after']:.1%} | "
            f"{mean['accuracy_before']:.1%} | {mean['accuracy_after']:.1%} | {min(changes):+.1f} to "
            f"{max(changes):+.1f} | {sum(c < -1.0 - 1e-9 for c in changes)} of {len(changes)} |")


def accuracy_changes(repairs: list[dict[str, Any]]) -> list[float]:
    """Each repair's clean-accuracy change in points (issue 4's bar is stated in points)."""
    return [100 * (r["accuracy_after"] - r["accuracy_before"]) for r in repairs]


def recorded_results(config: RepairConfig) -> tuple[dict[str, list[dict[str, Any]]], list[dict[str, Any]]]:
    """The scans of the last full run (detection.json) and the repairs with ``config``'s values among every
    recipe run on the same zoo (repair_recipes.json): both are rows written by real runs, read back as they are."""
    scans = json.loads((HERE / "detection_insample.json").read_text())["scans"]
    recipes = json.loads((HERE / "repair_recipes.json").read_text())
    order = [row["model"] for row in scans["inspector + reference"] if row["backdoored"]]
    repairs = {row["model"]: {k: v for k, v in row.items() if k != "recipe"} for row in recipes
               if recipe_of(row["settings"]) == recipe_of(config.as_dict())}
    missing = [model for model in order if model not in repairs]
    if missing:
        raise SystemExit(f"repair_recipes.json has no repair of {', '.join(missing)} with {config.as_dict()}; "
                         "run benchmarks/repair_recipes.py with that recipe on the zoo first")
    return scans, [repairs[model] for model in order]


def _recipe(settings: dict[str, Any]) -> str:
    """The repair recipe in words, from the settings a repair row recorded."""
    kept = recipe_of(settings)
    return ", ".join(f"{key} {value:g}" if isinstance(value, float) else f"{key} {value}"
                     for key, value in kept.items())


def _shown(path: Path) -> str:
    """The zoo's path as the reader would type it from the repository root."""
    try:
        return str(path.resolve().relative_to(HERE.parent))
    except ValueError:
        return str(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--zoo", default=str(HERE / "zoos" / "dev"))
    parser.add_argument("--methods", default=",".join(VARIANTS), help="of: " + ", ".join(VARIANTS))
    parser.add_argument("--epsilon", type=float, default=None, help="/255 units (default: the engine's)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu", help="cpu or cuda (rows record which; seconds are CPU-only)")
    parser.add_argument("--no-repair", action="store_true",
                        help="run no repair (the tables still show the repairs already cached)")
    parser.add_argument("--report", default=None,
                        help="write benchmarks/REPORT.md and REPORT.json (default: detection_ZOO, ZOO the folder)")
    parser.add_argument("--colour", action=argparse.BooleanOptionalAction, default=True,
                        help="scan with the colour family too (cached apart; as the engine does with the shipped "
                             "reference)")
    parser.add_argument("--table-only", action="store_true", help="only re-make the tables from the cache")
    parser.add_argument("--real-first", action="store_true",
                        help="repair the real backdoors (issue 18's bar, from the zoo's manifest) before the others")
    parser.add_argument("--from-records", action="store_true",
                        help="re-make the tables without the zoo: the scans recorded in detection.json and the "
                             "repairs with the default recipe's values recorded in repair_recipes.json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    zoo = Path(args.zoo)
    if args.from_records:
        write_tables(zoo, *recorded_results(RepairConfig()), from_records=True, report="detection_insample")
        return
    manifest = json.loads((zoo / "manifest.json").read_text())
    paths = [zoo / m["file"] for m in manifest["models"]]
    paths.sort(key=lambda p: "cocoop" in p.stem)  # CoOp models first: their scans are the short ones
    pool = load_shipped_pool().pixels
    epsilon = args.epsilon / 255 if args.epsilon is not None else None
    scans: dict[str, list[dict[str, Any]]] = {}
    for method in [m.strip() for m in args.methods.split(",") if m.strip()]:
        scans[method] = []
        for path in paths:
            cache = zoo / "scans" / (_folder(method) + colour_tag(args.colour)) / f"{path.stem}.json"
            if args.table_only and not cache.exists():
                continue
            started = time.time()
            row = scan_model(path, method, cache, pool, epsilon, args.device, args.colour)
            if method == "inspector + reference":
                row = with_default_families(row, path)
            scans[method].append(row)
            print(f"{method:<15} {path.stem:<36} flagged={row['flagged']!s:<5} suspect={row['suspect']:<16} "
                  f"a={row['max_anomaly']:.2f} ({time.time() - started:.0f} s)", flush=True)
    references = {kind: Reference.read(shipped_reference_path("pocket-clip", kind)) for kind in ("coop", "cocoop")}
    if "inspector + reference" in scans:  # cached records decided with the reference and rule shipped now
        scans["inspector + reference"] = [
            transfer_checked({**calibrated(row, references[row["kind"]]), "method": row["method"]},
                             zoo / f"{row['model']}.safetensors", references[row["kind"]],
                             shipped_reference_path("pocket-clip", row["kind"]), pool)
            for row in scans["inspector + reference"]]
    if "inspector-faithful" in scans:  # the faithful schedule does not depend on the reference: decide again
        scans["inspector-faithful + reference"] = [calibrated(row, references[row["kind"]])
                                                   for row in scans["inspector-faithful"]]
    repairs = []
    task = load_task()
    if "inspector + reference" in scans:
        rows = scans["inspector + reference"]
        if args.real_first:
            real = zoo_tables.real_backdoors(zoo_tables.manifest_rows(zoo))
            rows = sorted(rows, key=lambda r: r["model"] not in real)
        for row in rows:  # against the default scan's suspect
            if row["backdoored"]:
                cache = recipe_folder(zoo, RepairConfig()) / f"{row['model']}.json"
                if (args.table_only or args.no_repair) and not cache.exists():
                    continue
                path, scans_folder = zoo / f"{row['model']}.safetensors", zoo / "scans" / (_folder(row["method"])
                                                                                          + colour_tag(args.colour))
                if not repair_is_current(cache, row):  # the suspect family's triggers, scanned again if not kept
                    family = "additive" if row.get("confirmed_by") == "transfer" else row["suspect_family"]
                    scan_model(path, "inspector + reference", scans_folder / f"{row['model']}.json", pool, epsilon,
                               args.device, args.colour, for_repair=True, repair_family=family)
                repairs.append(repair_model(path, row, cache, pool, task, args.device, scans=scans_folder))
                print(f"repair {row['model']:<36} asr {repairs[-1]['asr_before']:.1%} -> "
                      f"{repairs[-1]['asr_after']:.1%}", flush=True)
        order = [r["model"] for r in scans["inspector + reference"]]
        repairs.sort(key=lambda r: order.index(r["model"]))
    write_tables(zoo, scans, repairs, report=args.report)


if __name__ == "__main__":
    main()
