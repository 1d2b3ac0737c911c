"""inspector/data.py and the shipped pocket world: splits that keep their promises."""

from __future__ import annotations

from collections import Counter

import numpy as np
import torch

from inspector.backbone import ASSETS_DIR
from inspector.data import OOD_FILE, TASK_FILE, load_shipped_pool, resize_pixels


def test_task_has_twenty_classes_sixteen_shots_and_ten_test_drawings(task):
    assert len(task.class_names) >= 20
    assert task.train_pixels.shape[1:] == (3, 64, 64)
    assert 0.0 <= float(task.train_pixels.min()) and float(task.train_pixels.max()) <= 1.0
    assert Counter(task.train_labels.tolist()) == {k: 16 for k in range(len(task.class_names))}
    with np.load(TASK_FILE) as data:
        test_sources = data["test_sources"]
        train_sources = set(data["train_sources"].tolist())
        labels = data["test_labels"]
    for k in range(len(task.class_names)):
        assert len(set(test_sources[labels == k].tolist())) >= 10, task.class_names[k]
    assert not train_sources & set(test_sources.tolist()), "a drawing straddles train and test"


def test_ood_pool_is_large_and_disjoint_from_the_task(task):
    pool = load_shipped_pool()
    assert len(pool.names) >= 1000 and pool.pixels.shape[1:] == (3, 64, 64)
    with np.load(TASK_FILE) as data:
        task_sources = set(data["train_sources"].tolist()) | set(data["test_sources"].tolist())
    with np.load(OOD_FILE) as data:
        categories = set(data["categories"].tolist())
    assert not task_sources & set(pool.names)
    assert not categories & {"shapes/stars", "computer/hardware", "people/stickmen"}


def test_shipped_assets_stay_compact():
    total = sum(p.stat().st_size for p in ASSETS_DIR.rglob("*") if p.is_file())
    assert total <= 60 * 1024 * 1024


def test_resize_pixels_keeps_range_and_is_a_noop_at_size():
    pixels = torch.rand(2, 3, 64, 64)
    assert resize_pixels(pixels, 64) is pixels
    bigger = resize_pixels(pixels, 96)
    assert bigger.shape == (2, 3, 96, 96) and float(bigger.min()) >= 0 and float(bigger.max()) <= 1
