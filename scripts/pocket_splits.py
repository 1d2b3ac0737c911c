"""Decide which rendered image goes where: the labelled task, the OOD pool, the CLIP corpus.

Rules (DESIGN §3): task classes are clip-art categories with enough distinct drawings; the test
split takes whole source ids, so variants of one drawing never straddle train and test; the OOD
pool comes only from categories disjoint from the task; the task's test drawings are held out of
the pocket CLIP's training corpus, so zero-shot and prompt-tuned accuracy are measured on unseen
drawings.
"""

from __future__ import annotations

import hashlib
import random
from collections import defaultdict
from dataclasses import dataclass

import numpy as np
from pocket_sources import SourceImage

SHOTS = 16
MIN_TEST_SOURCES = 10
MAX_TEST_IMAGES = 30
MAX_VIEWS_PER_SOURCE = 3  # so one drawing with many variants cannot fill a class's test split
OOD_PER_CATEGORY = 60
OOD_POOL_SIZE = 1200

Selector = str | tuple[int, int]  # a clip-art folder prefix, or an emoji code point range

# Task classes: visually coherent kinds of picture that a 64-px CLIP trained on ~9k images can
# tell apart (semantic categories such as "bird" or "fruit" measured at a 50% linear-probe ceiling
# with this corpus, see README). Names are what a user would type; they need not match captions.
TASK_CLASSES: dict[str, tuple[Selector, ...]] = {
    "star": ("shapes/stars",),
    "arrow": ("shapes/arrows",),
    "road sign": ("transportation/roadsigns",),
    "national flag": ("signs_and_symbols/flags/europe", "signs_and_symbols/flags/africa",
                      "signs_and_symbols/flags/asia", "signs_and_symbols/flags/america",
                      "signs_and_symbols/flags/oceania"),
    "semaphore flag": ("signs_and_symbols/flags/semaphore",),
    "playing card": ("recreation/games/cards",),
    "stick figure": ("people/stickmen",),
    "computer": ("computer/hardware",),
    "pattern": ("special/patterns",),
    "pictogram": ("transportation/aiga-symbols",),
    "led light": ("signs_and_symbols/led",),
    "file icon": ("computer/icons/lemon-theme/mimetypes",),
    "application icon": ("computer/icons/lemon-theme/apps",),
    "toolbar icon": ("computer/icons/flat-theme/action",),
    "button": ("computer/buttons",),
    "map": ("geography",),
    "balloon": ("recreation/party",),
    "speech bubble": ("shapes/callouts",),
    "smiley face": ((0x1F600, 0x1F64F), (0x1F910, 0x1F92F)),
    "clock": ((0x1F550, 0x1F567), (0x23F0, 0x23F3)),
}

# OOD: only categories disjoint from every task class (the rest of clip art and emoji is neither).
OOD_PREFIXES = ("animals", "food", "plants", "people/bodypart", "people/clothing", "recreation/music",
                "recreation/sports", "recreation/toys", "recreation/holiday", "recreation/religion",
                "transportation/vehicles", "transportation/boating", "tools", "office", "education",
                "electronics", "decorations", "buildings", "science", "containers")
OOD_EMOJI_RANGES = [(0x1F330, 0x1F37F), (0x1F400, 0x1F43F), (0x1F950, 0x1F96F), (0x1F980, 0x1F9AF),
                    (0x1F3B7, 0x1F3BB), (0x1F3C0, 0x1F3CA)]


@dataclass
class Splits:
    class_names: list[str]
    train: list[tuple[int, int]]  # (image index, label)
    test: list[tuple[int, int]]
    ood: list[int]
    corpus: list[int]  # images the pocket CLIP may train on


def _under(category: str, prefix: str) -> bool:
    return category == prefix or category.startswith(prefix + "/")


def _codepoint(meta: SourceImage) -> int:
    return int(meta.source_id.split(":")[1], 16)


def _task_class(meta: SourceImage) -> str | None:
    for name, selectors in TASK_CLASSES.items():
        for sel in selectors:
            if isinstance(sel, tuple):
                if meta.origin == "emoji" and sel[0] <= _codepoint(meta) <= sel[1]:
                    return name
            elif meta.origin == "openclipart" and _under(meta.category, sel):
                return name
    return None


def _is_ood(meta: SourceImage) -> bool:
    if meta.origin == "emoji":
        return any(lo <= _codepoint(meta) <= hi for lo, hi in OOD_EMOJI_RANGES)
    return any(_under(meta.category, p) for p in OOD_PREFIXES)


def content_hashes(images: np.ndarray) -> list[bytes]:
    """Hash of the rendered pixels: equal for the same drawing filed in two folders."""
    return [hashlib.blake2b(image.tobytes(), digest_size=16).digest() for image in images]


def make_splits(meta: list[SourceImage], images: np.ndarray, seed: int = 0) -> Splits:
    """Task, OOD pool and corpus; duplicates (same pixels) never cross the held-out line."""
    rng = random.Random(seed)
    hashes = content_hashes(images)
    by_class: dict[str, dict[str, list[int]]] = defaultdict(lambda: defaultdict(list))
    for index, m in enumerate(meta):
        name = _task_class(m)
        if name:
            by_class[name][m.source_id].append(index)
    class_names = [n for n in TASK_CLASSES if len(by_class[n]) >= SHOTS + MIN_TEST_SOURCES]
    train, test, held_out = [], [], set()
    for label, name in enumerate(class_names):
        sources = sorted(by_class[name])
        rng.shuffle(sources)
        for source in sources[:SHOTS]:  # one image per source: 16 distinct drawings
            train.append((rng.choice(by_class[name][source]), label))
        train_hashes = {hashes[i] for s in sources[:SHOTS] for i in by_class[name][s]}
        taken: list[int] = []
        used_sources = 0
        for source in sources[SHOTS:]:  # whole drawings until both the image cap and the source floor
            if len(taken) >= MAX_TEST_IMAGES and used_sources >= MIN_TEST_SOURCES:
                break
            fresh = [i for i in by_class[name][source] if hashes[i] not in train_hashes]
            fresh = fresh[:MAX_VIEWS_PER_SOURCE]
            if fresh:
                taken.extend(fresh)
                used_sources += 1
            held_out.update(by_class[name][source])  # every variant of a test drawing stays unseen
        test.extend((i, label) for i in sorted(taken))
    ood_by_category: dict[str, list[int]] = defaultdict(list)
    for index, m in enumerate(meta):
        if _is_ood(m):
            ood_by_category[m.category].append(index)
    ood = []
    for category in sorted(ood_by_category):
        members = ood_by_category[category]
        rng.shuffle(members)
        ood.extend(members if category == "emoji" else members[:OOD_PER_CATEGORY])
    ood = sorted(rng.sample(ood, min(OOD_POOL_SIZE, len(ood))))
    held_hashes = {hashes[i] for i in held_out}
    corpus = [i for i in range(len(meta)) if i not in held_out and hashes[i] not in held_hashes]
    return Splits(class_names, train, test, ood, corpus)
