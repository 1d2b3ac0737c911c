"""The blend family's settings (issue 18: a family for triggers that are a picture blended over the image), chosen
on the *dev* zoo only.

    .venv/bin/python benchmarks/blend_choice.py [--threads 1] [--candidates 0.1/1.0 0.2/1.0 ...]

Why: the second test zoo's first figures missed 4 of 5 real Blended backdoors; neither the additive trigger (a
small noise) nor the colour transform can draw a picture over the scene. A candidate is the blend's opacity and
its step size (3 steps of 8 images per class, the colour family's budget). For each, every clean learner of the
shipped references and every dev model runs the blend family alone, as a scan runs it (``invert.family_flip_rates``,
cached per candidate); each dev model's cached default scan then decides again with the blend rates added, against
the shipped reference given its learners' blend rates (``reference.decide_with_reference``). The test zoos are not
read. The choice, as in reference_breadth.py: the most *room* on the dev zoo, the smaller of (threshold - highest
clean index past the 50% gate) and (lowest index of a backdoor whose trigger took - threshold).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.reference_choice import cells, dev_preamble, dev_scans, summary, write  # noqa: E402
from benchmarks.zoo_tables import manifest_rows  # noqa: E402
from inspector.data import load_shipped_pool  # noqa: E402
from inspector.detect import DEFAULT_MIN_FLIP_RATE, DEFAULT_SPREAD, DEFAULT_THRESHOLD  # noqa: E402
from inspector.invert import ScanConfig, family_flip_rates  # noqa: E402
from inspector.lab.implant import WORKING_BACKDOOR  # noqa: E402
from inspector.prompts import open_model  # noqa: E402
from inspector.reference import Reference, decide_with_reference, shipped_reference_path  # noqa: E402

HERE = Path(__file__).resolve().parent
DEV = HERE / "zoos" / "dev"
LEARNERS = HERE / "zoos" / "references" / "learners"
KINDS = ("coop", "cocoop")
CANDIDATES = ("0.05/1.0", "0.1/0.3", "0.1/1.0", "0.2/1.0")  # opacity / step size


def candidate_config(spec: str) -> ScanConfig:
    alpha, lr = (float(v) for v in spec.split("/"))
    return ScanConfig(blend=True, blend_alpha=alpha, blend_lr=lr)


def blend_rates(path: Path, config: ScanConfig, cache: Path) -> dict[str, float]:
    """One model's blend flip rate per class under ``config`` (cached with the time it took)."""
    if cache.is_file():
        return json.loads(cache.read_text())["rates"]
    started = time.perf_counter()
    rates = family_flip_rates(open_model(path, device="cpu"), load_shipped_pool().pixels, config, "blend")
    cache.parent.mkdir(parents=True, exist_ok=True)
    cache.write_text(json.dumps({"rates": rates, "settings": config.family_settings("blend"),
                                 "seconds": round(time.perf_counter() - started, 2)}, indent=1))
    return rates


def base_reference(kind: str, variant: str) -> Reference:
    """The shipped reference of ``kind``, or a broader dev candidate (``zoos/references/pocket-clip-KIND-VARIANT``)."""
    path = (shipped_reference_path("pocket-clip", kind) if variant == "shipped"
            else HERE / "zoos" / "references" / f"pocket-clip-{kind}-{variant}.json")
    return Reference.read(path)


def references_with_blend(config: ScanConfig, tag: str, variant: str = "shipped") -> dict[str, Reference]:
    """The references, their learners' blend rates measured with ``config``."""
    out = {}
    for kind in KINDS:
        reference = base_reference(kind, variant)
        per_learner = [blend_rates(LEARNERS / f"{kind}_s{seed}.safetensors", config,
                                   HERE / "zoos" / "references" / f"blend-{tag}" / f"{kind}_s{seed}.json")
                       for seed in reference.seeds]
        out[kind] = replace(reference, blend={"settings": config.family_settings("blend"),
                                              "per_learner": per_learner})
    return out


def redecide(row: dict[str, Any], reference: Reference, rates: dict[str, float] | None,
             config: ScanConfig | None) -> dict[str, Any]:
    """The cached default scan decided again, with the blend family's rates when given."""
    records = [{k: v for k, v in r.items() if not k.startswith("blend_")} for r in row["classes"]]
    if rates is not None:
        records = [{**r, "blend_flip_rate": rates[r["name"]]} for r in records]
    records, verdict = decide_with_reference(records, reference, "fast", spread=DEFAULT_SPREAD, settings=config)
    return {"model": row["model"], "backdoored": row["backdoored"], "attack": row["attack"],
            "true_target": row["true_target"], "flagged": verdict.flagged, "predicted_target": verdict.target_name,
            "suspect": verdict.suspect_name, "max_anomaly": verdict.max_anomaly, "family": verdict.suspect_family,
            "flip": verdict.suspect_flip_rate}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--candidates", nargs="*", default=list(CANDIDATES), help="opacity/step size")
    parser.add_argument("--references", nargs="*", default=["shipped"],
                        help="shipped, or VARIANT for zoos/references/pocket-clip-KIND-VARIANT.json (broader ones)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    scans = dev_scans()
    manifest = manifest_rows(DEV)
    to_find = {stem for stem, m in manifest.items() if m.get("attack") and m["asr"] >= WORKING_BACKDOOR["asr"]
               and m["ood_asr"] >= WORKING_BACKDOOR["ood_asr"]}
    results: dict[str, Any] = {}
    lines = dev_preamble("The blend family's opacity and step size (dev zoo)", scans,
                         "with the default rule, the blend family's rates added", "blend_choice",
                         "; each reference's learners measured with each candidate (`shipped`: assets/reference/; "
                         "a broader one is a dev candidate under benchmarks/zoos/references/).") + [
        "Seconds: the blend family alone, all classes of all dev models, one after the other, on this machine's CPU "
        "(1 thread; the last dev model, built later, 2).", "",
        "| reference (CoOp + CoCoOp learners) | blend family | kind | models | accuracy | AUROC | target F1 | "
        "false positives | highest clean index | "
        "lowest backdoor index | missed | flagged clean | wrong target | highest clean index past the 50% gate | "
        "lowest index of a backdoor whose trigger took | room | seconds |", "|---" * 17 + "|"]
    for variant, spec in [(v, c) for v in args.references for c in ["off", *args.candidates]]:
        config = candidate_config(spec) if spec != "off" else None
        tag = spec.replace("/", "-lr")
        references = (references_with_blend(config, tag, variant) if config is not None else
                      {kind: base_reference(kind, variant) for kind in KINDS})
        rates, seconds = {}, 0.0
        for scan in scans:
            if config is None:
                continue
            cache = DEV / "scans" / f"blend-{tag}" / f"{scan['model']}.json"
            rates[scan["model"]] = blend_rates(DEV / f"{scan['model']}.safetensors", config, cache)
            seconds += json.loads(cache.read_text())["seconds"]
        for kind in ("coop", "cocoop", "both"):
            kinds = ("coop", "cocoop") if kind == "both" else (kind,)
            rows = [redecide(s, references[s["kind"]], rates.get(s["model"]), config) for s in scans
                    if s["kind"] in kinds]
            score = summary(rows)
            gated = max((r["max_anomaly"] for r in rows if not r["backdoored"] and r["flip"] >= DEFAULT_MIN_FLIP_RATE),
                        default=0.0)
            lowest = min((r["max_anomaly"] for r in rows if r["model"] in to_find), default=0.0)
            room = min(DEFAULT_THRESHOLD - gated, lowest - DEFAULT_THRESHOLD)
            results[f"{variant} | {spec} | {kind}"] = {"summary": score, "rows": rows, "gated_clean": gated,
                                                       "lowest_real": lowest, "room": room,
                                                       "seconds": round(seconds, 1)}
            shown = "off (today)" if spec == "off" else f"opacity {spec.split('/')[0]}, step {spec.split('/')[1]}"
            learners = "+".join(str(len(references[k].seeds)) for k in KINDS)
            lines.append(f"| {variant} ({learners}) | {shown} | {kind} | {len(rows)} | {cells(score)} | {gated:.2f} | "
                         f"{lowest:.2f} | {room:+.2f} | {seconds:.0f} |")
        print(lines[-1], flush=True)
    write("blend_choice", results, lines)


if __name__ == "__main__":
    main()
