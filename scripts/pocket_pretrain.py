"""Contrastive pre-training of the pocket CLIP on the clip-art + emoji corpus, on CPU.

The recipe, kept small enough for a 2-core machine (about 25 minutes):
- captions built like alt text from what the packages say about each image: the file name's
  words, the category folder's words (singular), or the emoji's Unicode name, inside one of a
  few templates ("a drawing of a ...");
- augmentation: random resized crop (scale 0.55-1), horizontal flip, brightness/contrast jitter;
- open_clip's ``pocket-clip`` config, AdamW (lr 1e-3, wd 0.1), warm-up then cosine, batch 256,
  symmetric InfoNCE with a learnable temperature, bf16 autocast on CPU.
"""

from __future__ import annotations

import math
import random
import re
import time
from pathlib import Path

import numpy as np
import open_clip
import torch
import torch.nn.functional as F
from pocket_sources import SourceImage

from inspector.augment import random_resized_crop_flip

TEMPLATES = ["a drawing of a {}.", "a picture of a {}.", "clip art of a {}.", "a photo of a {}.",
             "an illustration of a {}.", "{}.", "a small {}.", "an icon of a {}."]
GENERIC_FOLDER_WORDS = {"png", "theme", "flat", "lemon", "etiquette", "and", "misc", "unsorted",
                        "special", "simple", "bordered", "ornamental", "white"}


def singular(word: str) -> str:
    if word.endswith("ies") and len(word) > 4:
        return word[:-3] + "y"
    if re.search(r"(ss|sh|ch|x)es$", word):
        return word[:-2]
    if word.endswith("s") and not word.endswith("ss") and len(word) > 3:
        return word[:-1]
    return word


def folder_phrase(category: str) -> str:
    parts = [p for p in category.replace("-", "_").split("/")][::-1][:3]
    words = [singular(w) for p in parts for w in p.split("_") if w not in GENERIC_FOLDER_WORDS]
    return " ".join(words)


def caption(meta: SourceImage, rng: random.Random) -> str:
    if meta.origin == "emoji":
        subject = meta.words
        return rng.choice(["an emoji of {}.", "a {} emoji.", "{}."] + TEMPLATES).format(subject)
    folder = folder_phrase(meta.category)
    name_words = " ".join(meta.words.split()[:4])
    # The folder is the reliable part (file names carry author names too), so it is always there.
    subject = rng.choice([folder, folder, f"{name_words}, {folder}", f"{folder}, {name_words}"])
    return rng.choice(TEMPLATES).format(subject.strip(", "))


def pretrain(images: np.ndarray, meta: list[SourceImage], corpus: list[int], out: Path,
             epochs: int = 20, batch_size: int = 256, lr: float = 1e-3, seed: int = 0,
             monitor=None, device: str = "cpu", arch: str = "pocket-clip") -> open_clip.model.CLIP:
    """Train ``pocket-clip`` from scratch; saves a checkpoint after every epoch to ``out``."""
    torch.manual_seed(seed)
    rng = random.Random(seed)
    generator = torch.Generator().manual_seed(seed)
    model = open_clip.create_model(arch).to(device)
    mean = torch.tensor(open_clip.OPENAI_DATASET_MEAN, device=device).view(1, 3, 1, 1)
    std = torch.tensor(open_clip.OPENAI_DATASET_STD, device=device).view(1, 3, 1, 1)
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2 and "embedding" not in n]
    no_decay = [p for n, p in model.named_parameters() if not (p.ndim >= 2 and "embedding" not in n)]
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1},
                                   {"params": no_decay, "weight_decay": 0.0}], lr=lr, betas=(0.9, 0.98))
    steps_per_epoch = len(corpus) // batch_size
    total, warmup = epochs * steps_per_epoch, 2 * steps_per_epoch
    step = 0
    for epoch in range(epochs):
        model.train()
        order = corpus[:]
        rng.shuffle(order)
        started, running = time.time(), 0.0
        for b in range(steps_per_epoch):
            idx = order[b * batch_size:(b + 1) * batch_size]
            pixels = torch.from_numpy(images[idx]).permute(0, 3, 1, 2).float() / 255
            pixels = (random_resized_crop_flip(pixels, generator).to(device) - mean) / std
            texts = open_clip.tokenize([caption(meta[i], rng) for i in idx], context_length=32).to(device)
            progress = (step - warmup) / (total - warmup)
            factor = step / warmup if step < warmup else 0.5 * (1 + math.cos(math.pi * progress))
            for group in optimizer.param_groups:
                group["lr"] = lr * factor
            with torch.autocast(device, dtype=torch.bfloat16):
                image_f, text_f, logit_scale = model(pixels, texts)
            logits = logit_scale.float() * image_f.float() @ text_f.float().T
            targets = torch.arange(len(idx), device=device)
            loss = (F.cross_entropy(logits, targets) + F.cross_entropy(logits.T, targets)) / 2
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            with torch.no_grad():
                model.logit_scale.clamp_(0, math.log(100))
            running += loss.item()
            step += 1
        model.eval()
        note = monitor(model) if monitor else ""
        print(f"epoch {epoch + 1}/{epochs} loss {running / steps_per_epoch:.3f} "
              f"({time.time() - started:.0f}s) {note}", flush=True)
        torch.save({k: v.cpu() for k, v in model.state_dict().items()}, out)
    return model
