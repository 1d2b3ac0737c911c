"""Breakdowns of a zoo's detection rows (issue 18): per attack, per clean tuning recipe, and the list of
implants with what each measured, so a reader sees which backdoors are real and where a verdict fails.

Used by benchmarks/detection.py; reads the zoo's manifest.json (what each model is and measured).
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path
from typing import Any

from inspector.lab.implant import is_working as is_real  # issue 18's bar for an implant


def manifest_rows(zoo: Path) -> dict[str, dict[str, Any]]:
    """The zoo's manifest rows by file stem (empty when the zoo has no manifest)."""
    path = zoo / "manifest.json"
    if not path.exists():
        return {}
    return {Path(m["file"]).stem: m for m in json.loads(path.read_text())["models"]}


def real_backdoors(manifest: dict[str, dict[str, Any]]) -> set[str]:
    """The stems of the implants that meet issue 18's bar of a real backdoor."""
    return {stem for stem, m in manifest.items() if m.get("attack") and "asr" in m and is_real(m)}


def clean_recipe(row: dict[str, Any]) -> str:
    """A clean learner's tuning recipe in words, from its manifest row."""
    recipe = row.get("recipe") or {}
    if not recipe:
        return f"{row['kind']} default recipe"
    init = "random init" if "ctx_init" in recipe and recipe["ctx_init"] is None else "word init"
    return (f"{row['kind']} n_ctx {recipe.get('n_ctx', 4)}, {init}, {recipe.get('optimizer', 'adamw')} "
            f"lr {recipe.get('lr')}, {recipe.get('epochs')} epochs")


def by_attack(rows: list[dict[str, Any]]) -> list[str]:
    """Per attack and kind: how many were flagged, how many with their target, the lowest top index."""
    groups: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        if r["backdoored"]:
            groups[(r["attack"], r["kind"])].append(r)
    lines = ["| attack | kind | models | flagged | right target | lowest top index | families that found it |",
             "|---|---|---|---|---|---|---|"]
    for (attack, kind), group in sorted(groups.items()):
        right = sum(r["flagged"] and r["predicted_target"] == r["true_target"] for r in group)
        families = ", ".join(sorted({r.get("suspect_family") or "additive" for r in group if r["flagged"]})) or "-"
        lines.append(f"| {attack} | {kind} | {len(group)} | {sum(r['flagged'] for r in group)} | {right} | "
                     f"{min(r['max_anomaly'] for r in group):.2f} | {families} |")
    return lines


def by_clean_recipe(rows: list[dict[str, Any]], manifest: dict[str, dict[str, Any]]) -> list[str]:
    """Per clean recipe: how many learners, how many flagged, the highest top index and its class."""
    groups: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        if not r["backdoored"]:
            groups[clean_recipe(manifest[r["model"]]) if r["model"] in manifest else r["kind"]].append(r)
    lines = ["| clean recipe | learners | flagged | highest top index (class, flip rate) |", "|---|---|---|---|"]
    for recipe, group in sorted(groups.items()):
        top = max(group, key=lambda r: r["max_anomaly"])
        lines.append(f"| {recipe} | {len(group)} | {sum(r['flagged'] for r in group)} | "
                     f"{top['max_anomaly']:.2f} ({top['suspect']}, {top['suspect_flip_rate']:.0%}) |")
    return lines


def implants(manifest: dict[str, dict[str, Any]]) -> list[str]:
    """Every implant with its base, accuracies and success rates, whether it is a real backdoor, and how many tries
    the provider took (zoos built before the lab retried took one)."""
    lines = ["| model | implanted into | base accuracy | accuracy | change | ASR | OOD ASR | real backdoor | tries |",
             "|---|---|---|---|---|---|---|---|---|"]
    for stem, m in manifest.items():
        if m.get("attack") is None:
            continue
        change = 100 * (m["accuracy"] - m["clean_base_accuracy"])
        lines.append(f"| {stem} | {m['base']} | {m['clean_base_accuracy']:.1%} | {m['accuracy']:.1%} | "
                     f"{change:+.1f} | {m['asr']:.1%} | {m['ood_asr']:.1%} | {'yes' if is_real(m) else 'no'} | "
                     f"{m.get('attempts', 1)} |")
    return lines


def every_model(rows: list[dict[str, Any]]) -> list[str]:
    """One row per scanned model: its truth, the verdict, the suspect (predicted target when flagged) and its index."""
    lines = ["| model | kind | truth | flagged | predicted | top anomaly | its flip rate | s |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        truth = f"{r['attack']} -> {r['true_target']}" if r["backdoored"] else "clean"
        lines.append(f"| {r['model']} | {r['kind']} | {truth} | {'yes' if r['flagged'] else 'no'} | "
                     f"{r['predicted_target'] or '-'} ({r['suspect']}) | {r['max_anomaly']:.2f} | "
                     f"{r['suspect_flip_rate']:.0%} | {seconds_cell(r)} |")
    return lines


def seconds_cell(row: dict[str, Any]) -> str:
    """A scan's seconds, with the device when it was not a CPU."""
    if row.get("seconds") is None:
        return "-"
    device = row.get("device", "cpu")
    return f"{row['seconds']:.0f}" + ("" if device.startswith("cpu") else f" ({device.replace('NVIDIA ', '')})")
