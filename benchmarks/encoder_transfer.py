"""Does a trigger fitted on a delivered *encoder* carry over to clean learners on the original encoder? (issue 19, dev)

Why a candidate: the default scan misses encoder-level backdoors whose trigger is a sparse shape blended over the
image (benchmarks/encoder_backdoors.md: the triangle and the text stamp, on the test and the second dev draws). A
blended pattern strong enough to draw such a shape sends images to *any* class of the delivered model, so its flip
rate alone says nothing. But a pattern that reaches a class through a natural weakness of CLIP should also move clean
learners on the original encoder, while one that reaches the class through a backdoor in the delivered encoder
should not. So for every class: the blend family's trigger is stepped longer on the delivered model (the engine's
own arm and steps, ``invert.family_arm`` / ``step_family_arm``, here at opacity 10%, lr 0.1, 40 steps of 16
images), measured on the scan's held-out images, once on the delivered model and once on each of three clean CoOp
reference learners on the original CLIP (benchmarks/zoos/references/learners); a class's *transfer gap* is the
delivered flip rate minus the clean learners' mean, and the anomaly index (``detect.anomaly_index``) runs over the
gaps. Then, as the prompt-level scan compares a class with clean learners, each class's gap is compared with the
same class's gap in the *benign* encoder fine-tunes of the draws (each benign control against the others), in units
of their spread, and decided by the engine's rule (``detect.decide``: per-class spread, index past 2, the trigger
flipping at least 50% of the delivered model's held-out images).

    .venv/bin/python benchmarks/encoder_transfer.py        # the second dev draws; writes encoder_transfer.md / .json

Only the dev draws are read (the test draws are not); nothing here is adopted.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from statistics import mean, median, stdev
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.confirmation_choice import FamilyBench  # noqa: E402
from benchmarks.encoder_backdoors import ROOT  # noqa: E402
from inspector.backbone import machine_name  # noqa: E402
from inspector.data import load_shipped_pool  # noqa: E402
from inspector.detect import Verdict, anomaly_index, decide  # noqa: E402
from inspector.invert import ScanConfig, frozen_learner  # noqa: E402
from inspector.prompts import PromptedCLIP, open_model  # noqa: E402

HERE = Path(__file__).resolve().parent
LEARNERS = HERE / "zoos" / "references" / "learners"
CLEAN = (3000, 3003, 3006)  # three of the shipped CoOp reference's learners (varied recipes)
SETTINGS = {"blend_alpha": 0.1, "blend_lr": 0.1, "blend_batch_size": 16}
STEPS = 40
OUT = HERE / "encoder_transfer"


def transfer_gaps(model: PromptedCLIP, clean: list[PromptedCLIP], pool: torch.Tensor) -> dict[str, Any]:
    """Every class's blend trigger fitted on ``model``, measured there and on the ``clean`` learners; the index of
    the gaps."""
    started, classes = time.time(), []
    with frozen_learner(model):
        bench = FamilyBench(model, pool, ScanConfig(blend=True, **SETTINGS))
        for k, name in enumerate(model.class_names):
            *_, (_, arm) = bench.stepped("blend", k, STEPS)
            carried = [bench.measure(arm, other) for other in clean]
            classes.append({"name": name, "delivered": bench.measure(arm),
                            "clean": round(sum(carried) / len(carried), 4)})
    gaps = [c["delivered"] - c["clean"] for c in classes]
    for c, index in zip(classes, anomaly_index(gaps), strict=True):
        c["index"] = round(index, 2)
    top = max(classes, key=lambda c: c["index"])
    return {"suspect": top["name"], "index": top["index"], "median_gap": round(median(gaps), 3), "classes": classes,
            "seconds": round(time.time() - started, 1), "device": machine_name(model.backbone.device)}


def transfer(row: dict[str, Any], clean: list[PromptedCLIP], pool: torch.Tensor) -> dict[str, Any]:
    """``transfer_gaps`` of one encoder-level delivery (its learner on its own CLIP weights file)."""
    folder = ROOT / row["split"]
    model = open_model(folder / f"{row['model']}.safetensors", str(folder / f"{row['model']}.clip.safetensors"))
    return {"model": row["model"], "pattern": row["pattern"], "target": row["target"],
            **transfer_gaps(model, clean, pool)}


def against_benign(result: dict[str, Any], results: list[dict[str, Any]]) -> Verdict | None:
    """The engine's decision on ``result``'s gaps, each class's excess over the other benign controls' gaps."""
    controls = [r for r in results if r["target"] is None and r["model"] != result["model"]]
    if len(controls) < 2:
        return None
    records = []
    for k, c in enumerate(result["classes"]):
        others = [o["classes"][k]["delivered"] - o["classes"][k]["clean"] for o in controls]
        records.append({"index": k, "name": c["name"], "flip_rate": c["delivered"],
                        "reference_flip_rate": c["delivered"] - (c["delivered"] - c["clean"] - mean(others)),
                        "excess_flip_rate": c["delivered"] - c["clean"] - mean(others),
                        "reference_spread": stdev(others)})
    return decide(records, "excess_flip_rate", spread="per-class", evidence="flip", corroboration=None)


def table(results: list[dict[str, Any]]) -> str:
    lines = ["# Encoder-level backdoors: the transfer gap of a longer blend trigger (second dev draws; not adopted)",
             "", __doc__.split("\n\n")[0].replace("\n", " "), "", __doc__.split("\n\n")[1].replace("\n", " "), "",
             "`python benchmarks/encoder_transfer.py`. Per delivery: the class with the highest index of the gap, "
             "then the target's own row, then the next classes.", "",
             "| model | target | top class | its index | target: delivered / clean learners / index | next three "
             "(delivered / clean, index) | median gap | against the other benign controls: flagged, suspect, index "
             "| s | ran on |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        ranked = sorted(r["classes"], key=lambda c: -c["index"])
        target = next((c for c in r["classes"] if c["name"] == r["target"]), None)
        target_cell = (f"{target['delivered']:.0%} / {target['clean']:.0%} / {target['index']:.2f}" if target
                       else "— (benign)")
        rest = "; ".join(f"{c['name']} {c['delivered']:.0%} / {c['clean']:.0%}, {c['index']:.2f}"
                         for c in [c for c in ranked if c is not ranked[0]][:3])
        verdict = against_benign(r, results)
        benign = (f"{'**yes**' if verdict.flagged else 'no'}, {verdict.suspect_name}, {verdict.max_anomaly:.2f}"
                  if verdict else "—")
        lines.append(f"| {r['model']} | {r['target'] or '—'} | {r['suspect']} | {r['index']:.2f} | {target_cell} | "
                     f"{rest} | {r['median_gap']:+.2f} | {benign} | {r['seconds']:.0f} | {r['device']} |")
    return "\n".join(lines) + "\n"


def prepared(kind: str, seeds: tuple[int, ...], out: Path) -> tuple[torch.Tensor, list[PromptedCLIP],
                                                                   dict[str, dict[str, Any]]]:
    """The shipped pool, the clean reference learners a trigger is carried over to, the results kept in ``out``."""
    torch.set_num_threads(2)
    cached = out.with_suffix(".json")
    done = {r["model"]: r for r in json.loads(cached.read_text())} if cached.exists() else {}
    return (load_shipped_pool().pixels, [open_model(LEARNERS / f"{kind}_s{seed}.safetensors") for seed in seeds],
            done)


def main() -> None:
    pool, clean, done = prepared("coop", CLEAN, OUT)
    rows = [json.loads(p.read_text()) for p in sorted((ROOT / "dev2").glob("*.json"))]
    results = []
    for row in rows:
        results.append(done.get(row["model"]) or transfer(row, clean, pool))
        print(json.dumps({k: v for k, v in results[-1].items() if k != "classes"}), flush=True)
    OUT.with_suffix(".json").write_text(json.dumps(results, indent=1) + "\n")
    OUT.with_suffix(".md").write_text(table(results))


if __name__ == "__main__":
    main()
