"""The CUDA path gives the CPU's answers (skipped where no GPU is present, as in CI)."""

from __future__ import annotations

import pytest
import torch

from inspector.prompts import TuneConfig, open_model, predict, tune
from inspector.zoo import resolve_model

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")


@pytest.mark.parametrize("name", ["clean-coop", "clean-cocoop"])
def test_cuda_matches_cpu(task, name):
    path = resolve_model(name)
    on_cpu, on_gpu = open_model(path, device="cpu"), open_model(path, device="cuda")
    assert on_gpu.learner.ctx.is_cuda and on_gpu.backbone.device.type == "cuda"
    pixels = task.test_pixels[:128]
    tf32 = torch.backends.cudnn.allow_tf32
    torch.backends.cudnn.allow_tf32 = False  # full fp32 convolutions: the same numbers as the CPU
    try:
        with torch.inference_mode():
            cpu_logits = on_cpu(pixels)
            gpu_logits = on_gpu(pixels.cuda()).cpu()
    finally:
        torch.backends.cudnn.allow_tf32 = tf32
    assert torch.allclose(cpu_logits, gpu_logits, atol=1e-2, rtol=1e-4)
    agreement = (predict(on_cpu, pixels) == predict(on_gpu, pixels)).float().mean()  # default TF32
    assert agreement >= 0.98


def test_tuning_runs_on_cuda(task):
    model = open_model(resolve_model("clean-cocoop"), device="cuda")
    before = model.learner.ctx.detach().clone()
    stats = tune(model, task.train_pixels, task.train_labels, TuneConfig(epochs=1, lr=1e-3, views=2))
    assert stats["steps"] == len(task.train_labels) // 32
    assert model.learner.ctx.is_cuda and not torch.equal(before, model.learner.ctx.detach())
