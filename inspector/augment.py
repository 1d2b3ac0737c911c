"""Batched image augmentation in pixel space (random resized crop, flip, light colour jitter).

One affine grid for the whole batch keeps it fast on a 2-core CPU; used for pocket CLIP
pre-training and for prompt tuning (CoOp's own recipe: random resized crop + flip).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def random_resized_crop_flip(pixels: torch.Tensor, generator: torch.Generator,
                             min_scale: float = 0.55, jitter: float = 0.1) -> torch.Tensor:
    """Augment a batch (B, 3, H, W) of [0, 1] pixels; returns the same shape, still in [0, 1]."""
    n = pixels.shape[0]
    scale = torch.empty(n).uniform_(min_scale, 1.0, generator=generator).sqrt()
    aspect = torch.empty(n).uniform_(-0.15, 0.15, generator=generator).exp()
    sx = (scale * aspect.sqrt()).clamp(max=1.0)
    sy = (scale / aspect.sqrt()).clamp(max=1.0)
    tx = (torch.rand(n, generator=generator) * 2 - 1) * (1 - sx)
    ty = (torch.rand(n, generator=generator) * 2 - 1) * (1 - sy)
    flip = torch.where(torch.rand(n, generator=generator) < 0.5, -1.0, 1.0)
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0], theta[:, 1, 1] = sx * flip, sy
    theta[:, 0, 2], theta[:, 1, 2] = tx, ty
    grid = F.affine_grid(theta.to(pixels), list(pixels.shape), align_corners=False)
    out = F.grid_sample(pixels, grid, mode="bilinear", padding_mode="border", align_corners=False)
    if jitter > 0:
        brightness = torch.empty(n, 1, 1, 1).uniform_(-jitter, jitter, generator=generator)
        contrast = torch.empty(n, 1, 1, 1).uniform_(1 - 2 * jitter, 1 + 2 * jitter, generator=generator)
        mean = out.mean(dim=(1, 2, 3), keepdim=True)
        out = (out - mean) * contrast.to(out) + mean + brightness.to(out)
    return out.clamp(0, 1)
