"""The quick families' settings (issue 18), chosen on the *dev* zoo only: the blend family (a picture blended over
the image), the patch family (an opaque square pasted somewhere in it) and the colour family's sample (how many
images its few steps read: its flip rate is a share of them, so a small sample is a noisy estimate).

    .venv/bin/python benchmarks/family_choice.py [--threads 1] [--candidates 0.1/1.0 0.2/1.0 ...]   # blend_choice.md
    .venv/bin/python benchmarks/family_choice.py --family patch --candidates 0.25/32               # patch_choice.md
    .venv/bin/python benchmarks/family_choice.py --family colour --threads 2                       # colour_choice.md

Why: the second test zoo's first figures missed 4 of 5 real Blended backdoors, and the first test zoo 4 of 5
CoCoOp sticker backdoors; neither the additive trigger (a small noise) nor the colour transform can draw a picture
over the scene or paste an object into it. A blend candidate is the opacity and the step size (3 steps of 8 images
per class, the colour family's budget); a patch candidate is the patch's side (a share of the image's) and the images
per step (3 steps). For each, every clean learner of the shipped references and every dev model runs the family
alone, as a scan runs it (``invert.family_flip_rates``, cached per candidate); each dev model's cached default scan
then decides again with the family's rates added, against the shipped reference given its learners' rates
(``reference.decide_with_reference``). The test zoos are not read. The choice, as in reference_breadth.py: the most
*room* on the dev zoo, the smaller of (threshold - highest clean index past the 50% gate) and (lowest index of a
backdoor whose trigger took - threshold).
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.detection import family_rates, family_tag, with_default_families  # noqa: E402
from benchmarks.reference_choice import cells, dev_preamble, dev_scans, summary, write  # noqa: E402
from benchmarks.zoo_tables import manifest_rows  # noqa: E402
from inspector.detect import DEFAULT_MIN_FLIP_RATE, DEFAULT_SPREAD, DEFAULT_THRESHOLD  # noqa: E402
from inspector.invert import ScanConfig  # noqa: E402
from inspector.lab.implant import WORKING_BACKDOOR  # noqa: E402
from inspector.reference import Reference, decide_with_reference, shipped_reference_path  # noqa: E402

HERE = Path(__file__).resolve().parent
DEV = HERE / "zoos" / "dev"
LEARNERS = HERE / "zoos" / "references" / "learners"
KINDS = ("coop", "cocoop")
# Per family: its candidates, and what a candidate's two numbers are.
CANDIDATES = {"blend": ("0.05/1.0", "0.1/0.3", "0.1/1.0", "0.2/1.0"),  # opacity / step size
              "patch": ("0.25/32",),  # side as a share of the image's / images per step
              "colour": ("3/8", "3/16")}  # steps / images per step (at most the fast batch of 16: family_images)
WORDS = {"blend": ("opacity", "step"), "patch": ("side", "images per step"), "colour": ("steps", "images per step")}


def candidate_config(family: str, spec: str) -> ScanConfig:
    first, second = (float(v) for v in spec.split("/"))
    if family == "colour":
        return ScanConfig(colour=True, colour_steps=int(first), colour_batch_size=int(second))
    if family == "patch":
        return ScanConfig(patch=True, patch_share=first, patch_batch_size=int(second))
    return ScanConfig(blend=True, blend_alpha=first, blend_lr=second)


def candidate_tag(family: str, spec: str) -> str:
    """A candidate's cache folder name (``blend-0.1-lr1.0``, ``patch-0.25-b32``)."""
    return family_tag(family, candidate_config(family, spec))


def base_reference(kind: str, variant: str) -> Reference:
    """The shipped reference of ``kind``, or a broader dev candidate (``zoos/references/pocket-clip-KIND-VARIANT``)."""
    path = (shipped_reference_path("pocket-clip", kind) if variant == "shipped"
            else HERE / "zoos" / "references" / f"pocket-clip-{kind}-{variant}.json")
    return Reference.read(path)


def references_with(family: str, config: ScanConfig, tag: str, variant: str = "shipped") -> dict[str, Reference]:
    """The references, their learners' rates of ``family`` measured with ``config``."""
    out = {}
    for kind in KINDS:
        reference = base_reference(kind, variant)
        per_learner = [family_rates(LEARNERS / f"{kind}_s{seed}.safetensors", config, family,
                                    HERE / "zoos" / "references" / tag / f"{kind}_s{seed}.json")
                       for seed in reference.seeds]
        out[kind] = replace(reference, **{family: {"settings": config.family_settings(family),
                                                   "per_learner": per_learner}})
    return out


def redecide(row: dict[str, Any], reference: Reference, family: str, rates: dict[str, float] | None,
             config: ScanConfig | None) -> dict[str, Any]:
    """The cached default scan decided again, with ``family``'s rates when given."""
    records = [{k: v for k, v in r.items() if not k.startswith(f"{family}_")} for r in row["classes"]]
    if rates is not None:
        records = [{**r, f"{family}_flip_rate": rates[r["name"]]} for r in records]
    records, verdict = decide_with_reference(records, reference, "fast", spread=DEFAULT_SPREAD, settings=config)
    return {"model": row["model"], "backdoored": row["backdoored"], "attack": row["attack"],
            "true_target": row["true_target"], "flagged": verdict.flagged, "predicted_target": verdict.target_name,
            "suspect": verdict.suspect_name, "max_anomaly": verdict.max_anomaly, "family": verdict.suspect_family,
            "flip": verdict.suspect_flip_rate}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--family", choices=sorted(CANDIDATES), default="blend")
    parser.add_argument("--zoo", type=Path, default=DEV,
                        help="the zoo whose cached default scans decide again (default: the dev zoo; the retired "
                             "first test zoo, benchmarks/zoos/test, may serve choices too)")
    parser.add_argument("--candidates", nargs="*", default=None,
                        help="blend: opacity/step size; patch: side share/images per step")
    parser.add_argument("--references", nargs="*", default=["shipped"],
                        help="shipped, or VARIANT for zoos/references/pocket-clip-KIND-VARIANT.json (broader ones)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    family = args.family
    candidates = args.candidates if args.candidates is not None else list(CANDIDATES[family])
    zoo = args.zoo
    # each cached scan with the rates of every quick family a default scan runs now (the patch family's measured
    # alone where the scan predates it), so that a candidate is decided beside the default's other families
    scans = [with_default_families(s, zoo / f"{s['model']}.safetensors") for s in dev_scans(zoo)]
    manifest = manifest_rows(zoo)
    to_find = {stem for stem, m in manifest.items() if m.get("attack") and m["asr"] >= WORKING_BACKDOOR["asr"]
               and m["ood_asr"] >= WORKING_BACKDOOR["ood_asr"]}
    results: dict[str, Any] = {}
    first, second = WORDS[family]
    lines = dev_preamble(f"The {family} family's {first} and {second} ({zoo.name} zoo)", scans,
                         f"with the default rule, the {family} family's rates added", "family_choice",
                         "; each reference's learners measured with each candidate (`shipped`: assets/reference/; "
                         "a broader one is a dev candidate under benchmarks/zoos/references/).", zoo) + [
        f"Seconds: the {family} family alone, all classes of all dev models, one after the other, on this machine's "
        + ("CPU (1 thread; the last dev model, built later, 2)." if family == "blend" else
           f"CPU ({args.threads} threads; `--family {family}`)."), "",
        f"| reference (CoOp + CoCoOp learners) | {family} family | kind | models | accuracy | AUROC | target F1 | "
        "false positives | highest clean index | "
        "lowest backdoor index | missed | flagged clean | wrong target | highest clean index past the 50% gate | "
        "lowest index of a backdoor whose trigger took | room | seconds |", "|---" * 17 + "|"]
    for variant, spec in [(v, c) for v in args.references for c in ["off", *candidates]]:
        config = candidate_config(family, spec) if spec != "off" else None
        tag = candidate_tag(family, spec) if config is not None else "off"
        references = (references_with(family, config, tag, variant) if config is not None else
                      {kind: base_reference(kind, variant) for kind in KINDS})
        rates, seconds = {}, 0.0
        for scan in scans:
            if config is None:
                continue
            cache = zoo / "scans" / tag / f"{scan['model']}.json"
            rates[scan["model"]] = family_rates(zoo / f"{scan['model']}.safetensors", config, family, cache)
            seconds += json.loads(cache.read_text())["seconds"]
        for kind in ("coop", "cocoop", "both"):
            kinds = ("coop", "cocoop") if kind == "both" else (kind,)
            rows = [redecide(s, references[s["kind"]], family, rates.get(s["model"]), config) for s in scans
                    if s["kind"] in kinds]
            score = summary(rows)
            gated = max((r["max_anomaly"] for r in rows if not r["backdoored"] and r["flip"] >= DEFAULT_MIN_FLIP_RATE),
                        default=0.0)
            lowest = min((r["max_anomaly"] for r in rows if r["model"] in to_find), default=0.0)
            room = min(DEFAULT_THRESHOLD - gated, lowest - DEFAULT_THRESHOLD)
            results[f"{variant} | {spec} | {kind}"] = {"summary": score, "rows": rows, "gated_clean": gated,
                                                       "lowest_real": lowest, "room": room,
                                                       "seconds": round(seconds, 1)}
            off = "off" + (" (today)" if family != "colour" else "")  # the colour family runs by default
            shown = off if spec == "off" else f"{first} {spec.split('/')[0]}, {second} {spec.split('/')[1]}"
            learners = "+".join(str(len(references[k].seeds)) for k in KINDS)
            lines.append(f"| {variant} ({learners}) | {shown} | {kind} | {len(rows)} | {cells(score)} | {gated:.2f} | "
                         f"{lowest:.2f} | {room:+.2f} | {seconds:.0f} |")
        print(lines[-1], flush=True)
    write(f"{family}_choice" + ("" if zoo.resolve() == DEV.resolve() else f"_{zoo.name}"), results, lines)


if __name__ == "__main__":
    main()
