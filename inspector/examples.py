"""Before/after examples: held-out OOD images clean and with a class's reconstructed trigger.

Shared by the report's before/after row and the app's before/after view, so both show the same
images (the scan's own held-out split) with the model's prediction under each.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from inspector.invert import ScanResult
from inspector.prompts import PromptedCLIP, predict


@dataclass
class Example:
    """One OOD image clean and with a trigger, with the model's prediction under each."""

    clean: torch.Tensor
    triggered: torch.Tensor
    clean_prediction: str
    triggered_prediction: str

    @property
    def flipped(self) -> bool:
        return self.clean_prediction != self.triggered_prediction


@torch.no_grad()
def before_after(model: PromptedCLIP, result: ScanResult, pool_pixels: torch.Tensor,
                 class_index: int | None = None, count: int = 8) -> list[Example]:
    """``count`` held-out images, clean and stamped with ``class_index``'s trigger (default: the suspect's)."""
    k = result.verdict.suspect if class_index is None else class_index
    if k not in result.triggers:
        return []
    trigger = result.trigger(k)
    images = result.held_out(pool_pixels)[:count]
    stamped = trigger.to(model.backbone.device)(images.to(model.backbone.device)).cpu()
    before, after = predict(model, images), predict(model, stamped)
    names = model.class_names
    return [Example(images[i], stamped[i], names[int(before[i])], names[int(after[i])]) for i in range(len(images))]
