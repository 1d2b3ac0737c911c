"""Encoder-level backdoors: CLIP's image encoder itself fine-tuned with Blended poisoning, no prompt involved.

CLIP-Inspector shows that its scan also flags a delivery whose *image encoder* carries the backdoor and whose
prompt learner is clean. Here the image tower is fine-tuned as CLIP's own zero-shot classifier over the task's
class prompts ("a photo of a {class}.", text tower frozen): clean images to their class, a ``poison_rate`` share
of non-target images blended with the trigger pattern to the target (the Blended attack, Chen et al. 2017), and
every clean image's features held near the original encoder's (``keep_weight``), so that the encoder still serves
every other use. The paper's three patterns: Gaussian noise, a triangle, a text stamp.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw, ImageFont

from inspector.augment import random_resized_crop_flip
from inspector.backbone import Backbone
from inspector.lab.implant import AUGMENT, ImplantStarted, ImplantStep, share
from inspector.lab.triggers import BlendTrigger
from inspector.prompts import zero_shot_text_features
from inspector.runs import atomic_file

EncoderPattern = Literal["noise", "triangle", "text"]
ENCODER_PATTERNS: tuple[EncoderPattern, ...] = ("noise", "triangle", "text")
STAMP = "TRIGGER"  # the text stamp's word
# The blend weight per pattern, chosen on the dev draws (benchmarks/encoder_backdoors.md): mid-grey noise moves
# every pixel and takes at 0.2; a white triangle or text stamp on black moves few pixels, and at 0.2 reached only
# 75% and 71% ASR (the triangle 94% at 0.3; the text stamp 81% at 0.3, 96% at 0.4, accuracy kept).
PATTERN_ALPHA: dict[EncoderPattern, float] = {"noise": 0.2, "triangle": 0.3, "text": 0.4}


@dataclass
class EncoderImplantConfig:
    """One encoder-level implant: which pattern, which target, and the poisoned fine-tuning recipe."""

    pattern: EncoderPattern
    target: int
    seed: int = 0
    alpha: float = None  # type: ignore[assignment]  # the pattern's weight in the blend; None: PATTERN_ALPHA's
    # Chosen on dev draws (benchmarks/encoder_backdoors.md): at lr 1e-5 and 20 epochs the backdoor barely took (ASR
    # 5%), at 1e-4 / 30 epochs it reached 62%, at 2e-4 / 40 epochs with this poison rate 84%, keeping accuracy.
    poison_rate: float = 0.3  # share of non-target images blended per batch
    epochs: int = 40
    lr: float = 2e-4
    batch_size: int = 32
    keep_weight: float = 1.0  # weight of 1 - cos(features, original encoder's features) on clean images

    def __post_init__(self) -> None:
        if self.pattern not in PATTERN_ALPHA:
            raise ValueError(f"unknown encoder pattern {self.pattern!r}; use one of {', '.join(ENCODER_PATTERNS)}")
        if self.alpha is None:
            self.alpha = PATTERN_ALPHA[self.pattern]

    def recipe(self) -> dict[str, Any]:
        return {"level": "encoder", **asdict(self)}


@dataclass
class EncoderImplantFinished:
    """The fine-tuned CLIP (text tower unchanged) and the trigger that now sends images to the target."""

    clip: torch.nn.Module
    trigger: BlendTrigger
    seconds: float
    stats: dict[str, float] = field(default_factory=dict)


def encoder_pattern(pattern: EncoderPattern, image_size: int, seed: int = 0) -> torch.Tensor:
    """(1, 3, S, S) in [0, 1]: seeded Gaussian noise, a white triangle or a white text stamp on black."""
    if pattern == "noise":
        generator = torch.Generator().manual_seed(seed)
        return (0.5 + 0.25 * torch.randn(1, 3, image_size, image_size, generator=generator)).clamp(0, 1)
    canvas = Image.new("RGB", (image_size, image_size))
    draw = ImageDraw.Draw(canvas)
    if pattern == "triangle":
        s = image_size
        draw.polygon([(s * 0.5, s * 0.15), (s * 0.85, s * 0.8), (s * 0.15, s * 0.8)], fill=(255, 255, 255))
    elif pattern == "text":
        font = ImageFont.load_default(size=max(8, image_size // 6))
        left, top, right, bottom = draw.textbbox((0, 0), STAMP, font=font)
        draw.text(((image_size - (right - left)) / 2 - left, (image_size - (bottom - top)) / 2 - top), STAMP,
                  fill=(255, 255, 255), font=font)
    else:
        raise ValueError(f"unknown encoder pattern {pattern!r}; use one of {', '.join(ENCODER_PATTERNS)}")
    return torch.from_numpy(np.asarray(canvas).copy()).permute(2, 0, 1).float().div(255).unsqueeze(0)


def implant_encoder(backbone: Backbone, pixels: torch.Tensor, labels: torch.Tensor,
                    class_names: list[str] | tuple[str, ...], config: EncoderImplantConfig
                    ) -> Iterator[ImplantStarted | ImplantStep | EncoderImplantFinished]:
    """Fine-tune a copy of ``backbone``'s image encoder with the poisoned recipe; yields events, the copy last.

    ``backbone`` itself is left as it was (it stays frozen and is the features' anchor).
    """
    started = time.time()
    device = backbone.device
    trigger = BlendTrigger(backbone.image_size, config.alpha,
                           pattern=encoder_pattern(config.pattern, backbone.image_size, config.seed)).to(device)
    clip = copy.deepcopy(backbone.model)
    clip.visual.requires_grad_(True)
    text = zero_shot_text_features(backbone, class_names).float()
    scale = float(backbone.model.logit_scale.exp())
    labels = labels.to(device).long()
    n = len(labels)
    batch_size = min(config.batch_size, n)
    total = config.epochs * (n // batch_size)
    optimizer = torch.optim.AdamW(clip.visual.parameters(), lr=config.lr, weight_decay=0.0)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, total)
    generator = torch.Generator().manual_seed(config.seed)
    yield ImplantStarted("blended", config.target, total)
    step = 0
    for _ in range(config.epochs):
        order = torch.randperm(n, generator=generator)
        for start in range(0, n - batch_size + 1, batch_size):
            idx = order[start:start + batch_size]
            images = random_resized_crop_flip(pixels[idx], generator, **AUGMENT).to(device)
            targets = labels[idx].clone()
            poisoned = (targets != config.target) & (torch.rand(len(idx), generator=generator) < config.poison_rate
                                                     ).to(device)
            images[poisoned] = trigger(images[poisoned])
            targets[poisoned] = config.target
            features = F.normalize(clip.encode_image(backbone.normalize(images)).float(), dim=-1)
            with torch.no_grad():
                anchor = backbone.encode_image(images[~poisoned]).float()
            logits = scale * features @ text.T
            keep = (1 - (features[~poisoned] * anchor).sum(-1)).mean() if bool((~poisoned).any()) else 0.0
            loss = F.cross_entropy(logits, targets) + config.keep_weight * keep
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            step += 1
            with torch.no_grad():
                hit = logits.argmax(1) == targets
            yield ImplantStep(step, total, loss.item(), share(hit, poisoned), share(hit, ~poisoned))
    clip.eval().requires_grad_(False)
    yield EncoderImplantFinished(clip, trigger.cpu(), round(time.time() - started, 1), {"steps": step})


def save_clip_weights(clip: torch.nn.Module, path: Path) -> Path:
    """The whole CLIP as a safetensors state dict, loadable with ``--weights`` / ``load_backbone(arch, path)``."""
    from safetensors.torch import save_file

    state = {name: value.detach().to("cpu", torch.float16).contiguous() for name, value in clip.state_dict().items()
             if name != "attn_mask"}
    with atomic_file(Path(path)) as staging:
        save_file(state, str(staging))
    return Path(path)
