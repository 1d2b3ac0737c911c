"""What a trigger does to the model, for the views an analyst reaches for after a scan.

- ``probe``: one picture of the user's, its top classes without and with each trigger;
- ``transitions``: the held-out OOD images' predicted class before × after a class's trigger
  (a backdoor's trigger sends every row to one column; a natural attractor's moves a few);
- ``feature_map``: the held-out images' features, clean and triggered, in 2-D with the classes'
  text features, so the collapse of the triggered ones toward the target is seen.

Each reads the scan's own held-out images (``ScanResult.held_out``), so the views and the flip rates
are about the same images. No drawing here: ``figures`` draws them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from inspector.invert import ScanResult
from inspector.prompts import PromptedCLIP, predict

Stamp = Callable[[torch.Tensor], torch.Tensor]  # pixels (B, 3, S, S) in [0, 1] -> triggered pixels


@dataclass
class Probe:
    """One picture as the model saw it under one trigger (or none), and the classes it gave most."""

    condition: str  # "clean", or the name the caller gave the trigger
    picture: torch.Tensor  # (3, S, S) in [0, 1]: what the model saw
    top: list[tuple[str, float]]  # class name, softmax probability; most likely first


@torch.inference_mode()
def probe(model: PromptedCLIP, picture: torch.Tensor, triggers: Sequence[tuple[str, Stamp]],
          top: int = 5) -> list[Probe]:
    """``picture`` (3, S, S) at the model's input size, clean and stamped with each named trigger."""
    device = model.backbone.device
    clean = picture.unsqueeze(0).to(device)
    shown = [("clean", clean)] + [(name, stamp(clean)) for name, stamp in triggers]
    batch = torch.cat([pixels for _, pixels in shown])
    probabilities = model(batch).float().softmax(dim=-1).cpu()
    names = model.class_names
    k = min(top, len(names))
    out = []
    for (condition, pixels), row in zip(shown, probabilities, strict=True):
        values, indices = row.topk(k)
        out.append(Probe(condition, pixels[0].cpu(), [(names[int(i)], float(v)) for v, i in zip(values, indices,
                                                                                                  strict=True)]))
    return out


@dataclass
class Transitions:
    """How a class's trigger moves the held-out OOD images: ``counts[a, b]`` images predicted ``a`` clean and
    ``b`` with the trigger."""

    class_names: list[str]
    trigger_class: int
    counts: torch.Tensor  # (C, C) integer counts

    @property
    def images(self) -> int:
        return int(self.counts.sum())

    def sent_to(self, k: int | None = None) -> float:
        """Share of the images predicted ``k`` (default: the trigger's class) once triggered."""
        column = self.trigger_class if k is None else k
        return float(self.counts[:, column].sum()) / max(self.images, 1)

    def flip_rate(self) -> float:
        """The scan's flip rate: of the images not predicted the trigger's class clean, the share that are with it."""
        k = self.trigger_class
        eligible = self.images - int(self.counts[k].sum())
        flips = int(self.counts[:, k].sum()) - int(self.counts[k, k])
        return flips / eligible if eligible else 0.0

    def moved(self) -> float:
        """Share of the images whose prediction the trigger changed, to any class."""
        return 1.0 - float(self.counts.diagonal().sum()) / max(self.images, 1)


def transitions(model: PromptedCLIP, result: ScanResult, pool_pixels: torch.Tensor, k: int) -> Transitions:
    """Class ``k``'s reconstructed trigger on the scan's held-out images, counted by class."""
    images = result.held_out(pool_pixels)
    trigger = result.trigger(k).to(model.backbone.device)
    before = predict(model, images)
    after = predict(model, _stamped(trigger, images, model.backbone.device))
    n = len(model.class_names)
    counts = torch.bincount(before * n + after, minlength=n * n).reshape(n, n)
    return Transitions(list(model.class_names), k, counts)


@dataclass
class FeatureMap:
    """Clean and triggered image features and the classes' text features, in the same 2-D plane."""

    class_names: list[str]
    trigger_class: int
    clean: torch.Tensor  # (n, 2)
    triggered: torch.Tensor  # (n, 2)
    text: torch.Tensor  # (C, 2)
    clean_predicted: list[int]
    triggered_predicted: list[int]
    explained: tuple[float, float]  # share of the images' feature variance along each axis

    def distance_to_class(self, k: int | None = None) -> tuple[float, float]:
        """Mean 2-D distance of the clean and of the triggered images to class ``k``'s text point (default: the
        trigger's class): the triggered ones closer is the collapse the view shows."""
        point = self.text[self.trigger_class if k is None else k]
        return (float((self.clean - point).norm(dim=1).mean()), float((self.triggered - point).norm(dim=1).mean()))


@torch.inference_mode()
def feature_map(model: PromptedCLIP, result: ScanResult, pool_pixels: torch.Tensor, k: int,
                count: int = 200) -> FeatureMap:
    """The first ``count`` held-out images' features, clean and with class ``k``'s trigger, projected on the two
    principal axes of those image features, with the classes' text features projected on the same axes.

    CLIP keeps images and texts apart in its space (the modality gap), so each side is centred on its own mean
    before projecting, and the text points are scaled to the images' spread: a class's logit only depends on its
    text feature up to a shift shared by all classes, so the centred text points keep the order the model ranks
    classes in. CoCoOp's text features depend on the image: a class's point is its mean over the clean images.
    """
    device = model.backbone.device
    images = result.held_out(pool_pixels)[:count]
    trigger = result.trigger(k).to(device)
    clean = _features(model, images)
    triggered = _features(model, _stamped(trigger, images, device))
    text = model.text_features() if model.kind == "coop" else _mean_text(model, clean)
    both = torch.cat([clean, triggered]).float()
    centre = both.mean(dim=0)
    _, singular, axes = torch.linalg.svd(both - centre, full_matrices=False)
    plane = axes[:2].T
    variance = singular.pow(2)
    explained = (float(variance[0] / variance.sum()), float(variance[1] / variance.sum()))
    image_points = (both - centre) @ plane
    text_centred = text.float() - text.float().mean(dim=0)
    text_points = text_centred @ plane
    scale = image_points.norm(dim=1).mean() / text_points.norm(dim=1).mean().clamp_min(1e-8)
    logits_clean = model.logits_from_features(clean)
    logits_triggered = model.logits_from_features(triggered)
    n = len(images)
    return FeatureMap(list(model.class_names), k, image_points[:n].cpu(), image_points[n:].cpu(),
                      (text_points * scale).cpu(), logits_clean.argmax(1).tolist(),
                      logits_triggered.argmax(1).tolist(), explained)


def _features(model: PromptedCLIP, pixels: torch.Tensor, batch_size: int = 128) -> torch.Tensor:
    device = model.backbone.device
    return torch.cat([model.image_features(pixels[i:i + batch_size].to(device))
                      for i in range(0, len(pixels), batch_size)])


def _mean_text(model: PromptedCLIP, image_features: torch.Tensor, batch_size: int = 32) -> torch.Tensor:
    """CoCoOp: each class's text feature averaged over the images' own prompts, unit norm again."""
    total = sum(model.text_features(image_features[i:i + batch_size]).sum(dim=0)
                for i in range(0, len(image_features), batch_size))
    assert isinstance(total, torch.Tensor)
    return total / total.norm(dim=-1, keepdim=True)


@torch.inference_mode()
def _stamped(trigger: Stamp, images: torch.Tensor, device: torch.device, batch_size: int = 128) -> torch.Tensor:
    return torch.cat([trigger(images[i:i + batch_size].to(device)).cpu() for i in range(0, len(images), batch_size)])
