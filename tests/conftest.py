"""Shared fixtures: the shipped pocket backbone and task, loaded once per test session."""

from __future__ import annotations

import pytest
import torch

from inspector.backbone import Backbone, load_backbone
from inspector.data import Task, load_task

torch.set_num_threads(max(1, min(2, torch.get_num_threads())))


@pytest.fixture(scope="session")
def backbone() -> Backbone:
    return load_backbone(device="cpu")


@pytest.fixture(scope="session")
def task() -> Task:
    return load_task()
