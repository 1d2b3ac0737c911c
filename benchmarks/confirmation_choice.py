"""Whether a gate-blocked suspect should be stepped longer before the flip gate judges it (issue 18), on the *dev* zoo.

Why a candidate: on the dev zoo (and the test zoos) the default scan ranks the true target first for several Blended
CoCoOp backdoors, at an index past the threshold, but their quick-family trigger (3 steps of 8 images) flips only
20-25% of the images it was stepped on, under the 50% gate, so the model is not flagged. A *confirmation* stage
would step the suspect's trigger of its family longer and let the gate read its flip rate on the held-out images.
It is worth adopting only if clean learners' blocked suspects stay under the gate when stepped alike.

    .venv/bin/python benchmarks/confirmation_choice.py     # writes confirmation_choice.md / .json

Models: every dev model whose recorded default scan (benchmarks/detection_dev.json) has a top index past the
threshold, no flag, and a quick family (colour, patch, blend) behind that index; the additive family's finalists are
already measured on the held-out images. Each suspect's trigger of that family is stepped from its neutral start on
the scan's own family batches (``invert.step_family_arm``, the engine's steps), and measured on the scan's held-out
images after 3, 10 and 30 steps. The test zoos are not read. The rule: adopt a number of steps only if, there, every
blocked backdoor whose suspect is its target passes the gate and no blocked clean learner does (written after the
first four models below had been run by hand, which already broke it).
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from inspector.backbone import machine_name  # noqa: E402
from inspector.data import load_shipped_pool  # noqa: E402
from inspector.detect import DEFAULT_MIN_FLIP_RATE, DEFAULT_THRESHOLD, QUICK_FAMILIES  # noqa: E402
from inspector.invert import (  # noqa: E402
    ClassInversion,
    CleanPredictions,
    Logits,
    ScanConfig,
    _measure,
    family_arm,
    family_batches_of,
    frozen_learner,
    split_pool,
    step_family_arm,
)
from inspector.prompts import PromptedCLIP, open_model  # noqa: E402

HERE = Path(__file__).resolve().parent
DEV = HERE / "zoos" / "dev"
CHECKPOINTS = (3, 10, 30)
OUT = HERE / "confirmation_choice"


def blocked(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Recorded default scans held back by the flip gate alone, behind a quick family's index."""
    return [r for r in rows if not r["flagged"] and r["max_anomaly"] > DEFAULT_THRESHOLD
            and r.get("suspect_family") in QUICK_FAMILIES]


class FamilyBench:
    """A model set up as a scan sets it up for the quick families (its fitting batches and held-out images, clean
    predictions on both), to step one class's trigger of a family longer than a scan does and measure it on the
    held-out images, with this model or another one (``measure``'s ``other``)."""

    def __init__(self, model: PromptedCLIP, pool: torch.Tensor, config: ScanConfig) -> None:
        self.model, self.config = model, config.for_input(model.backbone.image_size)
        self.fit, self.held = split_pool(pool, self.config.pool_size, self.config.holdout, self.config.seed)
        self.batches = family_batches_of(len(self.fit), self.config)
        self.logits_of = Logits(model)
        self.clean_fit = CleanPredictions(self.logits_of, self.fit, self.batches)
        self.clean_held = self.logits_of.predict(self.held)
        self._readers: dict[int, tuple[Logits, torch.Tensor]] = {}  # other models: logits, clean held-out predictions

    def stepped(self, family: str, k: int, steps: int) -> Iterator[tuple[int, ClassInversion]]:
        """Class ``k``'s trigger of ``family`` from its neutral start, after each of ``steps`` steps."""
        device, size = self.model.backbone.device, self.model.backbone.image_size
        arm = family_arm(family, k, self.model.class_names[k], self.config, device, size)
        for t in step_family_arm(arm, family, self.logits_of, self.fit, self.batches, self.clean_fit, steps,
                                 self.config, device):
            yield t, arm

    def measure(self, arm: ClassInversion, other: PromptedCLIP | None = None) -> float:
        """The trigger's flip rate on the held-out images, read by this model or by ``other``."""
        if other is None:
            logits_of, clean = self.logits_of, self.clean_held
        else:
            if id(other) not in self._readers:
                reader = Logits(other)
                self._readers[id(other)] = reader, reader.predict(self.held)
            logits_of, clean = self._readers[id(other)]
        return _measure(logits_of, arm.trigger, arm.k, arm.name, self.held, clean)["flip_rate"]


def confirm(row: dict[str, Any], pool: torch.Tensor) -> dict[str, Any]:
    """The suspect's family trigger stepped to each checkpoint, measured on the scan's held-out images."""
    model = open_model(DEV / f"{row['model']}.safetensors")
    family, name = row["suspect_family"], row["suspect"]
    started, held_out = time.time(), {}
    with frozen_learner(model):
        bench = FamilyBench(model, pool, ScanConfig())
        for t, arm in bench.stepped(family, list(model.class_names).index(name), max(CHECKPOINTS)):
            if t in CHECKPOINTS:
                held_out[t] = bench.measure(arm)
    return {"model": row["model"], "kind": row["kind"], "truth": row["true_target"], "suspect": name,
            "family": family, "index": row["max_anomaly"], "estimate": row["suspect_flip_rate"],
            "held_out": held_out, "seconds": round(time.time() - started, 1),
            "device": machine_name(model.backbone.device)}


def table(results: list[dict[str, Any]]) -> str:
    lines = ["# A confirmation stage for gate-blocked suspects (dev zoo; not adopted)", "",
             __doc__.split("\n\n")[1].replace("\n", " "), "",
             "`python benchmarks/confirmation_choice.py`; " + __doc__.split("\n\n")[3].replace("\n", " "), "",
             "| model | truth | suspect | family | index | recorded estimate | "
             + " | ".join(f"held-out after {t} steps" for t in CHECKPOINTS) + " | s | ran on |",
             "|---|---|---|---|---|---|" + "---|" * len(CHECKPOINTS) + "---|---|"]
    for r in results:
        cells = [f"{r['held_out'][t]:.0%}" + (" (passes)" if r["held_out"][t] >= DEFAULT_MIN_FLIP_RATE else "")
                 for t in CHECKPOINTS]
        lines.append(f"| {r['model']} | {r['truth'] or 'clean'} | {r['suspect']} | {r['family']} | {r['index']:.2f} | "
                     f"{r['estimate']:.0%} | {' | '.join(cells)} | {r['seconds']:.0f} | {r['device']} |")
    lines += ["", "Verdict of the rule, per number of steps:", ""]
    for t in CHECKPOINTS:
        found = [r for r in results if r["truth"] == r["suspect"] and r["held_out"][t] >= DEFAULT_MIN_FLIP_RATE]
        aimed = [r for r in results if r["truth"] == r["suspect"]]
        clean = [r for r in results if r["truth"] is None and r["held_out"][t] >= DEFAULT_MIN_FLIP_RATE]
        ok = len(found) == len(aimed) and not clean
        lines.append(f"- {t} steps: {len(found)} of {len(aimed)} blocked backdoors aimed right pass the gate, "
                     f"{len(clean)} of {sum(r['truth'] is None for r in results)} blocked clean learners pass it: "
                     + ("meets the rule" if ok else "fails the rule"))
    return "\n".join(lines) + "\n"


def main() -> None:
    torch.set_num_threads(2)
    rows = json.loads((HERE / "detection_dev.json").read_text())["scans"]["inspector + reference"]
    pool = load_shipped_pool().pixels
    results = []
    for row in blocked(rows):
        results.append(confirm(row, pool))
        print(json.dumps(results[-1]), flush=True)
    OUT.with_suffix(".json").write_text(json.dumps(results, indent=1) + "\n")
    OUT.with_suffix(".md").write_text(table(results))


if __name__ == "__main__":
    main()
