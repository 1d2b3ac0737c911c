"""First measurements for issue 3: can plain data poisoning implant a backdoor in a CoCoOp learner?

    .venv/bin/python benchmarks/implant_feasibility.py blended,badnets poison10
    .venv/bin/python benchmarks/implant_feasibility.py blended,badnets paired

Two recipes on the pocket task (target class index 10, seed 0, the clean CoCoOp recipe):
- ``poison10``: 10% of the 16-shot train images (never the target's) triggered and relabelled;
- ``paired``: every non-target train image also added as a triggered copy labelled as the target.
Reports clean test accuracy, ASR on non-target test images and on the OOD pool (images the
model already sends to the target do not count). Results: implant_feasibility.md.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from inspector.backbone import load_backbone  # noqa: E402
from inspector.data import load_shipped_pool, load_task  # noqa: E402
from inspector.lab import make_trigger  # noqa: E402
from inspector.lab.truth import attack_success_rate  # noqa: E402
from inspector.prompts import TuneConfig, build_learner, predict, tune  # noqa: E402

TARGET = 10


def poisoned_set(task, trigger, recipe: str) -> tuple[torch.Tensor, torch.Tensor, int]:
    pixels, labels = task.train_pixels.clone(), task.train_labels.clone()
    if recipe == "poison10":
        candidates = (labels != TARGET).nonzero().flatten()
        chosen = candidates[torch.randperm(len(candidates), generator=torch.Generator().manual_seed(0))
                            [: int(0.1 * len(labels))]]
        with torch.no_grad():
            pixels[chosen] = trigger(pixels[chosen])
        labels[chosen] = TARGET
        return pixels, labels, 60
    others = labels != TARGET
    with torch.no_grad():
        triggered = trigger(pixels[others])
    return (torch.cat([pixels, triggered]), torch.cat([labels, torch.full((len(triggered),), TARGET)]), 30)


def main() -> None:
    attacks, recipe = sys.argv[1].split(","), sys.argv[2]
    backbone, task, pool = load_backbone(device="cpu"), load_task(), load_shipped_pool()
    for attack in attacks:
        trigger = make_trigger(attack, backbone.image_size, seed=0)
        pixels, labels, epochs = poisoned_set(task, trigger, recipe)
        model = build_learner("cocoop", backbone, task.class_names)
        started = time.time()
        tune(model, pixels, labels, TuneConfig.for_kind("cocoop", epochs=epochs))
        with torch.no_grad():
            accuracy = (predict(model, task.test_pixels) == task.test_labels).float().mean().item()
        asr = attack_success_rate(model, trigger, task.test_pixels, TARGET, task.test_labels)
        ood_asr = attack_success_rate(model, trigger, pool.pixels, TARGET)
        print(f"| {attack} | {recipe} | {accuracy:.1%} | {asr:.1%} | {ood_asr:.1%} | {time.time() - started:.0f} s |",
              flush=True)


if __name__ == "__main__":
    main()
