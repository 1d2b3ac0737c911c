"""SIBA's trigger optimisation (Gao, Li et al., "Backdoor Attack with Sparse and Invisible Trigger", TIFS 2024).

Adapted from the authors' ``generate_trigger``: a universal perturbation is pushed towards the target class on a
benign surrogate by signed-gradient steps of ``step_decay * epsilon``, kept on the k pixels whose gradient is
largest (the mask is re-chosen every ``mask_every`` epochs, on the epoch's first batch), clipped to the epsilon
box; the per-image loss is cross-entropy to the target capped at ``beta`` so that images already sent there stop
pulling. The epoch with the lowest mean loss gives the trigger. Here the surrogate is the clean prompt learner the
provider starts from (the benign model trained on the same data, as the paper's is), with its encoders frozen.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from inspector.lab.triggers import SparseTrigger
from inspector.prompts import PromptedCLIP

SIBA_BATCH = 64  # images per signed-gradient step

@dataclass
class SibaStep:
    """One signed-gradient step on the surrogate: its capped loss and the share of the batch sent to the target."""

    epoch: int
    loss: float
    sent: float


def top_k_mask(grad: torch.Tensor, k: int) -> torch.Tensor:
    """(1, 1, S, S) mask of the k pixels whose gradient, summed over channels in absolute value, is largest."""
    score = grad.abs().sum(dim=1).flatten()
    mask = torch.zeros_like(score)
    mask[score.topk(k).indices] = 1.0
    return mask.reshape(1, 1, *grad.shape[-2:])


def optimise_sparse_trigger(trigger: SparseTrigger, surrogate: PromptedCLIP, pixels: torch.Tensor, target: int,
                            epochs: int = 20, batch_size: int = SIBA_BATCH, mask_every: int = 5,
                            step_decay: float = 0.8, beta: float = 10.0, seed: int = 0) -> Iterator[SibaStep]:
    """Optimise ``trigger``'s delta and mask in place towards ``target`` on ``surrogate``; yields every step.

    ``pixels`` (N, 3, S, S) in [0, 1]: the provider's training images, every one labelled as the target.
    """
    device = surrogate.backbone.device
    k, eps = trigger.k, trigger.epsilon
    delta = torch.zeros_like(trigger.delta, device=device)
    mask = trigger.mask.to(device)
    generator = torch.Generator().manual_seed(seed)
    best: tuple[float, torch.Tensor, torch.Tensor] | None = None
    was_training = surrogate.learner.training
    surrogate.learner.eval()
    try:
        for epoch in range(epochs):
            order = torch.randperm(len(pixels), generator=generator)
            losses = []
            for i, start in enumerate(range(0, len(pixels), batch_size)):
                batch = pixels[order[start:start + batch_size]].to(device)
                step = delta.clone().requires_grad_(True)
                logits = surrogate.logits_from_features(surrogate.backbone.encode_image((batch + step).clamp(0, 1))
                                                        .float())
                wanted = torch.full((len(batch),), target, device=device)
                loss = F.cross_entropy(logits, wanted, reduction="none").clamp(max=beta).mean()
                (grad,) = torch.autograd.grad(loss, step)
                if i == 0 and epoch % mask_every == 0:
                    mask = top_k_mask(grad, k)
                delta = ((delta - grad.sign() * eps * step_decay) * mask).clamp(-eps, eps)
                losses.append(loss.item())
                yield SibaStep(epoch, loss.item(), float((logits.argmax(1) == target).float().mean()))
            mean = sum(losses) / len(losses)
            if best is None or mean < best[0]:
                best = (mean, delta.detach().clone(), mask.clone())
    finally:
        surrogate.learner.train(was_training)
    assert best is not None
    with torch.no_grad():
        trigger.delta.copy_(best[1].to(trigger.delta))
        trigger.mask.copy_(best[2].to(trigger.mask))
