"""Backdoor triggers of the published attacks, in pixel space, for demos and benchmarks.

The attacker's side of the threat model (DESIGN §1). Every trigger maps a batch of [0, 1] pixels
(B, 3, S, S) to triggered pixels of the same shape and range, is deterministic given its seed,
and can be written to and rebuilt from plain tensors, so that a backdoored learner can carry its
own ground truth (under a header key that the scanner never reads).

- BadCLIP (Bai et al., CVPR 2024): a learnable image-wide additive trigger, ||delta||_inf <= eps.
- Blended (Chen et al., 2017): a fixed pattern alpha-blended into the image.
- WaNet (Nguyen & Tran, ICLR 2021): a smooth, fixed warping field; its "noise mode" adds random
  warps (kept with their true labels) so that only the exact field triggers the backdoor.
- BadNets (Gu et al., 2017): a small fixed patch in a corner.
- Filter (Liu et al., ABS, CCS 2019; Cheng et al., Deep Feature Space Trojan, AAAI 2021): a global
  colour transform of every pixel, as an image filter app applies, with no local pattern at all.
- Sticker: a small opaque shape of its own colours pasted somewhere inside the image (physical
  stickers, as in Wenger et al., CVPR 2021), not in a corner and not a checkerboard.
- SIBA (Gao, Li et al., IEEE TIFS 2024): an additive perturbation on only k pixels, ||delta||_inf <= eps,
  optimised on a surrogate before poisoning (``inspector.lab.siba``).
- BadCLIP-adaptive (CLIP-Inspector's adaptive attack): BadCLIP's trigger, then tuned so that only the
  exact trigger works and Gaussian-perturbed copies of it keep their true labels.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

AttackName = Literal["badclip", "blended", "wanet", "badnets", "filter", "sticker", "siba", "badclip-adaptive"]
ATTACKS: tuple[AttackName, ...] = ("badclip", "blended", "wanet", "badnets", "filter", "sticker", "siba",
                                   "badclip-adaptive")


class Trigger(nn.Module):
    """Base class: ``forward(pixels) -> triggered pixels``; ``params()`` + ``trigger_tensors`` record it."""

    attack: AttackName

    def params(self) -> dict[str, float | int]:
        return {}

    @classmethod
    def from_tensors(cls, params: dict, tensors: dict[str, torch.Tensor]) -> Trigger:
        """Rebuild from ``params()`` + ``trigger_tensors`` (the ground-truth record)."""
        raise NotImplementedError


class AdditiveTrigger(Trigger):
    """BadCLIP's trigger: x' = clamp(x + delta, 0, 1) with ||delta||_inf <= epsilon."""

    attack = "badclip"

    def __init__(self, image_size: int, epsilon: float = 4 / 255, delta: torch.Tensor | None = None) -> None:
        super().__init__()
        self.epsilon = float(epsilon)
        shape = (1, 3, image_size, image_size)
        initial = torch.zeros(shape) if delta is None else delta.reshape(shape)
        self.delta = nn.Parameter(initial.clone().float())
        self.project()

    @torch.no_grad()
    def project(self) -> None:
        """Back onto the epsilon box after an optimiser step."""
        self.delta.clamp_(-self.epsilon, self.epsilon)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return (pixels + self.delta.to(pixels)).clamp(0, 1)

    def params(self) -> dict[str, float | int]:
        return {"epsilon": self.epsilon}

    @classmethod
    def from_tensors(cls, params: dict, tensors: dict[str, torch.Tensor]) -> Trigger:
        delta = tensors["delta"]
        return cls(delta.shape[-1], params["epsilon"], delta)


class AdaptiveAdditiveTrigger(AdditiveTrigger):
    """The adaptive attack's trigger: BadCLIP's, recorded under its own name (its tuning differs, not its form)."""

    attack = "badclip-adaptive"


class SparseTrigger(Trigger):
    """SIBA's trigger: x' = clamp(x + mask * delta, 0, 1), ``mask`` on k pixels, ||delta||_inf <= epsilon.

    Made with a seeded random mask and random signs; ``inspector.lab.siba`` then optimises both on a surrogate."""

    attack = "siba"

    def __init__(self, image_size: int, epsilon: float = 8 / 255, k: int | None = None, seed: int = 0,
                 delta: torch.Tensor | None = None, mask: torch.Tensor | None = None) -> None:
        super().__init__()
        self.epsilon = float(epsilon)
        if mask is None:
            generator = torch.Generator().manual_seed(seed)
            chosen = torch.randperm(image_size * image_size, generator=generator)[:k or image_size ** 2 // 10]
            mask = torch.zeros(image_size * image_size)
            mask[chosen] = 1.0
            delta = (torch.randint(0, 2, (1, 3, image_size, image_size), generator=generator) * 2 - 1) * self.epsilon
        self.register_buffer("mask", mask.reshape(1, 1, image_size, image_size).float())
        self.register_buffer("delta", (delta.reshape(1, 3, image_size, image_size).float() * self.mask
                                       ).clamp(-self.epsilon, self.epsilon))

    @property
    def k(self) -> int:
        return int(self.mask.sum())

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return (pixels + (self.delta * self.mask).to(pixels)).clamp(0, 1)

    def params(self) -> dict[str, float | int]:
        return {"epsilon": self.epsilon, "k": self.k}

    @classmethod
    def from_tensors(cls, params: dict, tensors: dict[str, torch.Tensor]) -> Trigger:
        delta = tensors["delta"]
        return cls(delta.shape[-1], params["epsilon"], delta=delta, mask=tensors["mask"])


class BlendTrigger(Trigger):
    """Blended: x' = (1 - alpha) x + alpha * pattern, pattern a seeded uniform-noise image."""

    attack = "blended"

    def __init__(self, image_size: int, alpha: float = 0.2, seed: int = 0, pattern: torch.Tensor | None = None) -> None:
        super().__init__()
        if pattern is None:
            generator = torch.Generator().manual_seed(seed)
            pattern = torch.rand(1, 3, image_size, image_size, generator=generator)
        self.alpha = float(alpha)
        self.register_buffer("pattern", pattern.reshape(1, 3, image_size, image_size).float())

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return ((1 - self.alpha) * pixels + self.alpha * self.pattern.to(pixels)).clamp(0, 1)

    def params(self) -> dict[str, float | int]:
        return {"alpha": self.alpha}

    @classmethod
    def from_tensors(cls, params: dict, tensors: dict[str, torch.Tensor]) -> Trigger:
        pattern = tensors["pattern"]
        return cls(pattern.shape[-1], params["alpha"], pattern=pattern)


class PatchTrigger(Trigger):
    """BadNets: a fixed patch stamped in the bottom-right corner.

    The default patch is a black-and-white checkerboard of 4 x 4 cells (BadNets' grid pattern);
    ``style="random"`` gives a seeded random colour-bit patch instead.
    """

    attack = "badnets"

    def __init__(self, image_size: int, patch_size: int | None = None, seed: int = 0,
                 patch: torch.Tensor | None = None, style: str = "checkerboard") -> None:
        super().__init__()
        size = patch_size or max(3, image_size // 8)
        if patch is None and style == "random":
            generator = torch.Generator().manual_seed(seed)
            patch = (torch.rand(1, 3, size, size, generator=generator) > 0.5).float()
        elif patch is None:
            cell = torch.arange(size) * 4 // size
            patch = ((cell[:, None] + cell[None, :] + seed) % 2).float().expand(1, 3, size, size)
        self.register_buffer("patch", patch.reshape(1, 3, size, size).float())

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        size = self.patch.shape[-1]
        out = pixels.clone()
        out[..., -size:, -size:] = self.patch.to(pixels)
        return out

    def params(self) -> dict[str, float | int]:
        return {"patch_size": int(self.patch.shape[-1])}

    @classmethod
    def from_tensors(cls, params: dict, tensors: dict[str, torch.Tensor]) -> Trigger:
        patch = tensors["patch"]
        return cls(0, patch.shape[-1], patch=patch)


def wanet_field(image_size: int, k: int = 4, strength: float = 0.5, seed: int = 0) -> torch.Tensor:
    """WaNet's warping field: a k x k random flow, upsampled smoothly, as a grid_sample grid (1, S, S, 2)."""
    generator = torch.Generator().manual_seed(seed)
    flow = torch.rand(1, 2, k, k, generator=generator) * 2 - 1
    flow = flow / flow.abs().mean()
    flow = F.interpolate(flow, size=image_size, mode="bicubic", align_corners=True).permute(0, 2, 3, 1)
    axis = torch.linspace(-1, 1, image_size)
    ys, xs = torch.meshgrid(axis, axis, indexing="ij")
    identity = torch.stack((xs, ys), dim=-1).unsqueeze(0)
    return (identity + strength * flow / image_size).clamp(-1, 1)


class WarpTrigger(Trigger):
    """WaNet: resample the image through a fixed smooth warping field."""

    attack = "wanet"

    def __init__(self, image_size: int, k: int = 4, strength: float = 0.5, seed: int = 0,
                 grid: torch.Tensor | None = None) -> None:
        super().__init__()
        self.k, self.strength = int(k), float(strength)
        field = wanet_field(image_size, k, strength, seed) if grid is None else grid
        self.register_buffer("grid", field.reshape(1, image_size, image_size, 2).float())

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        grid = self.grid.to(pixels).expand(pixels.shape[0], -1, -1, -1)
        return F.grid_sample(pixels, grid, align_corners=True).clamp(0, 1)

    def noise_mode(self, pixels: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """The field plus a random per-image perturbation: trained with true labels."""
        size = pixels.shape[-1]
        noise = (torch.rand(pixels.shape[0], size, size, 2, generator=generator) * 2 - 1) / size
        grid = (self.grid.to(pixels) + noise.to(pixels)).clamp(-1, 1)
        return F.grid_sample(pixels, grid, align_corners=True).clamp(0, 1)

    def params(self) -> dict[str, float | int]:
        return {"k": self.k, "strength": self.strength}

    @classmethod
    def from_tensors(cls, params: dict, tensors: dict[str, torch.Tensor]) -> Trigger:
        grid = tensors["grid"]
        return cls(grid.shape[1], params["k"], params["strength"], grid=grid)


class FilterTrigger(Trigger):
    """A colour filter: x' = clamp((1 - s) x + s (M x + b)) per pixel, M a 3 x 3 colour matrix.

    The seeded matrix is a random tinted grey (each output channel a positive mix of the three
    inputs, with its own gain), the kind of "vintage" / "warm" look filter apps give.
    """

    attack = "filter"

    def __init__(self, strength: float = 0.6, seed: int = 0, matrix: torch.Tensor | None = None,
                 bias: torch.Tensor | None = None) -> None:
        super().__init__()
        generator = torch.Generator().manual_seed(seed)
        if matrix is None:
            mix = torch.rand(3, 3, generator=generator) + 0.2
            mix = mix / mix.sum(dim=1, keepdim=True)
            gain = 0.7 + 0.6 * torch.rand(3, 1, generator=generator)
            matrix = mix * gain
        if bias is None:
            bias = (torch.rand(3, generator=generator) - 0.5) * 0.2
        self.strength = float(strength)
        self.register_buffer("matrix", matrix.reshape(3, 3).float())
        self.register_buffer("bias", bias.reshape(3).float())

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        graded = torch.einsum("ij,bjhw->bihw", self.matrix.to(pixels), pixels) + self.bias.to(pixels)[:, None, None]
        return ((1 - self.strength) * pixels + self.strength * graded).clamp(0, 1)

    def params(self) -> dict[str, float | int]:
        return {"strength": self.strength}

    @classmethod
    def from_tensors(cls, params: dict, tensors: dict[str, torch.Tensor]) -> Trigger:
        return cls(params["strength"], matrix=tensors["matrix"], bias=tensors["bias"])


def sticker_shape(size: int, seed: int, cells: int = 4) -> tuple[torch.Tensor, torch.Tensor]:
    """A seeded sticker: a disc printed with a grid of saturated colours (a badge or a QR-like label, not a
    flat dot, which a small CLIP hardly tells from the scene); (3, size, size) colours, (1, size, size) alpha."""
    generator = torch.Generator().manual_seed(seed)
    palette = torch.tensor([[1.0, 0, 0], [0, 1.0, 0], [0, 0, 1.0], [1.0, 1.0, 0], [1.0, 0, 1.0], [0, 1.0, 1.0],
                            [1.0, 1.0, 1.0], [0, 0, 0]])
    grid = palette[torch.randint(len(palette), (cells, cells), generator=generator)].permute(2, 0, 1)
    cell = torch.arange(size) * cells // size
    colours = grid[:, cell[:, None], cell[None, :]]
    axis = torch.arange(size, dtype=torch.float32) - (size - 1) / 2
    radius = (axis[:, None] ** 2 + axis[None, :] ** 2).sqrt() / (size / 2)
    return colours.clone(), (radius <= 1.0).float().unsqueeze(0)


class StickerTrigger(Trigger):
    """A sticker: a small opaque shape pasted at a fixed, seeded place inside the image."""

    attack = "sticker"

    def __init__(self, image_size: int, size: int | None = None, seed: int = 0, sticker: torch.Tensor | None = None,
                 alpha: torch.Tensor | None = None, top: int | None = None, left: int | None = None) -> None:
        super().__init__()
        size = size or (sticker.shape[-1] if sticker is not None else max(4, image_size // 5))
        if sticker is None or alpha is None:
            sticker, alpha = sticker_shape(size, seed)
        generator = torch.Generator().manual_seed(seed + 7)
        room = max(1, image_size - size)
        self.top = int(top) if top is not None else int(torch.randint(room // 8, room - room // 8 + 1, (1,),
                                                                      generator=generator))
        self.left = int(left) if left is not None else int(torch.randint(room // 8, room - room // 8 + 1, (1,),
                                                                         generator=generator))
        self.register_buffer("sticker", sticker.reshape(1, 3, size, size).float())
        self.register_buffer("alpha", alpha.reshape(1, 1, size, size).float())

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        size = self.sticker.shape[-1]
        out = pixels.clone()
        rows, cols = slice(self.top, self.top + size), slice(self.left, self.left + size)
        alpha = self.alpha.to(pixels)
        out[..., rows, cols] = (1 - alpha) * pixels[..., rows, cols] + alpha * self.sticker.to(pixels)
        return out

    def params(self) -> dict[str, float | int]:
        return {"size": int(self.sticker.shape[-1]), "top": self.top, "left": self.left}

    @classmethod
    def from_tensors(cls, params: dict, tensors: dict[str, torch.Tensor]) -> Trigger:
        return cls(0, sticker=tensors["sticker"], alpha=tensors["alpha"], top=params["top"], left=params["left"])


def make_trigger(attack: AttackName, image_size: int, seed: int = 0, epsilon: float = 4 / 255,
                 alpha: float = 0.2, patch_size: int | None = None, wanet_k: int = 4,
                 wanet_strength: float = 0.5, filter_strength: float = 0.6,
                 sticker_size: int | None = None, siba_k: int | None = None) -> Trigger:
    """A fresh trigger of ``attack`` for images of ``image_size`` pixels (SIBA's and BadCLIP's: their random start)."""
    if attack in ("badclip", "badclip-adaptive"):
        generator = torch.Generator().manual_seed(seed)
        start = (torch.rand(1, 3, image_size, image_size, generator=generator) * 2 - 1) * epsilon
        return (AdditiveTrigger if attack == "badclip" else AdaptiveAdditiveTrigger)(image_size, epsilon, start)
    if attack == "siba":
        return SparseTrigger(image_size, epsilon, siba_k, seed)
    if attack == "blended":
        return BlendTrigger(image_size, alpha, seed)
    if attack == "badnets":
        return PatchTrigger(image_size, patch_size, seed)
    if attack == "wanet":
        return WarpTrigger(image_size, wanet_k, wanet_strength, seed)
    if attack == "filter":
        return FilterTrigger(filter_strength, seed)
    if attack == "sticker":
        return StickerTrigger(image_size, sticker_size, seed)
    raise ValueError(f"unknown attack {attack!r}; use one of {', '.join(ATTACKS)}")


def trigger_tensors(trigger: Trigger) -> dict[str, torch.Tensor]:
    """The tensors that define a trigger (for the ground-truth record of an implanted model)."""
    return {name: value.detach().float().cpu().contiguous()
            for name, value in {**dict(trigger.named_parameters()), **dict(trigger.named_buffers())}.items()}


TRIGGER_TYPES: dict[str, type[Trigger]] = {
    t.attack: t for t in (AdditiveTrigger, BlendTrigger, WarpTrigger, PatchTrigger, FilterTrigger, StickerTrigger,
                          SparseTrigger, AdaptiveAdditiveTrigger)}


def trigger_from_tensors(attack: AttackName, params: dict, tensors: dict[str, torch.Tensor]) -> Trigger:
    """Rebuild a trigger written by ``trigger_tensors`` + ``Trigger.params``."""
    if attack not in TRIGGER_TYPES:
        raise ValueError(f"unknown attack {attack!r}")
    return TRIGGER_TYPES[attack].from_tensors(params, tensors)
