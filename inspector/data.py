"""Image sets as pixel-space tensors: the shipped task and OOD pool (user pools: ``inspector.pools``).

Everything leaves this module as float pixels in [0, 1] at the backbone's input size, so that a
trigger can be added before the model's own normalisation.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from inspector.backbone import ASSETS_DIR, uint8_to_pixels
from inspector.errors import InputError

TASK_FILE = ASSETS_DIR / "task.npz"
OOD_FILE = ASSETS_DIR / "ood_pool.npz"


SHIPPED = "shipped"  # source and fingerprint of the shipped task and pool


@dataclass
class Task:
    """A labelled task: a few-shot train split for tuning and repair, a test split for accuracy.

    ``class_names`` give the label order. A task read from a folder without a test split has empty
    test tensors (``has_test`` False).
    """

    class_names: list[str]
    train_pixels: torch.Tensor
    train_labels: torch.Tensor
    test_pixels: torch.Tensor
    test_labels: torch.Tensor
    source: str = SHIPPED  # "shipped" (the pocket task), or the folder / zip it was read from
    fingerprint: str = SHIPPED  # content hash of its images and labels (inspector.pools.fingerprint_of)
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (file, reason) of every file not used

    @property
    def has_test(self) -> bool:
        return len(self.test_labels) > 0

    def describe(self) -> str:
        split = f", {len(self.test_labels)} test" if self.has_test else ", no test split"
        return f"{len(self.class_names)} classes, {len(self.train_labels)} train{split} images"


@dataclass
class ImagePool:
    """Unlabelled images (the defender's OOD pool) plus what was skipped while reading it."""

    pixels: torch.Tensor
    names: list[str]
    skipped: list[tuple[str, str]]  # (file, reason)
    unread: int = 0  # image files past the reading limit, not read
    source: str = SHIPPED  # "shipped", or how the user named the folder / zip
    fingerprint: str = SHIPPED  # content hash of the images read, in order: a reference is valid for one pool


def resize_pixels(pixels: torch.Tensor, size: int) -> torch.Tensor:
    """Resize a pixel batch to the backbone's input size (no-op when it already fits)."""
    if pixels.shape[-1] == size and pixels.shape[-2] == size:
        return pixels
    return F.interpolate(pixels, size=(size, size), mode="bicubic", antialias=True,
                         align_corners=False).clamp(0, 1)


def _read_npz(path: Path) -> np.lib.npyio.NpzFile:
    if not path.is_file():
        raise InputError(f"{path} is missing", hint="it ships in assets/; restore it from git "
                                                    "or rebuild with scripts/build_pocket_world.py")
    return np.load(path, allow_pickle=False)


def load_task(size: int | None = None, path: Path = TASK_FILE) -> Task:
    """The shipped pocket task, at ``size`` pixels (default: as stored, 64)."""
    with _read_npz(path) as data:
        def pix(key: str) -> torch.Tensor:
            p = uint8_to_pixels(data[key])
            return resize_pixels(p, size) if size else p

        return Task(class_names=[str(c) for c in data["class_names"]],
                    train_pixels=pix("train_images"),
                    train_labels=torch.from_numpy(data["train_labels"].astype(np.int64)),
                    test_pixels=pix("test_images"),
                    test_labels=torch.from_numpy(data["test_labels"].astype(np.int64)))


def load_shipped_pool(size: int | None = None, path: Path = OOD_FILE) -> ImagePool:
    """The shipped OOD pool (categories disjoint from the task), at ``size`` pixels."""
    with _read_npz(path) as data:
        pixels = uint8_to_pixels(data["images"])
        names = [str(s) for s in data["sources"]]
    return ImagePool(resize_pixels(pixels, size) if size else pixels, names, [], 0, SHIPPED, SHIPPED)
