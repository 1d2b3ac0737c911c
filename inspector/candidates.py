"""Candidate triggers that the scan optimises, one per candidate class, and their losses.

Three methods share the scan loop (``invert.scan``) and differ only here:

- ``AdditiveInversion`` (the inspector method, DESIGN §1): x' = clamp(x + delta, 0, 1) with
  ||delta||_inf <= eps. The optimiser works on u = delta / eps, and after every step u is projected
  back onto [-1, 1] (the eps-box). Loss: the margin max_{j!=k} z_j - z_k, averaged over the batch.
- ``MaskPatternInversion`` (Neural Cleanse, Wang et al. S&P 2019, adapted to an OOD pool):
  x' = (1 - m) x + m p with a mask m in [0, 1]^(S x S) and a pattern p in [0, 1]^(3 x S x S), both
  through NC's tanh parameterisation; loss: cross-entropy to k + lambda * ||m||_1 with NC's own
  adaptive lambda (raised by 1.5 while the batch attack succeeds, lowered by 1.5^1.5 otherwise).
- ``PixelPatternInversion`` (Pixel Backdoor, Tao et al., CVPR 2022, adapted likewise): x' = clamp(x + p+ - p-)
  with a positive and a negative pattern in [0, 1]^(3 x S x S); loss: cross-entropy to k + cost * a smooth L0
  proxy of the perturbed pixels, the cost raised and lowered against an ASR bound; its statistic is the size
  (perturbed pixels) of the smallest trigger that reached the bound.

The inspector also inverts *quick* families per class, a few steps each, for triggers that are not small
noise: ``ColourInversion`` (a global colour transform), ``BlendInversion`` (a pattern mixed into the image) and
``PatchInversion`` (an opaque square pasted somewhere in it).
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

Method = Literal["inspector", "neural-cleanse", "pixel-backdoor"]
METHODS: tuple[Method, ...] = ("inspector", "neural-cleanse", "pixel-backdoor")
# What the inspector's triggers minimise: the margin (the method's), or the two losses the paper ablates it against.
Objective = Literal["margin", "cross-entropy", "target-logit"]
OBJECTIVES: tuple[Objective, ...] = ("margin", "cross-entropy", "target-logit")


def margin_loss(logits: torch.Tensor, k: int) -> torch.Tensor:
    """Mean over the batch of (best other logit - logit of k): negative once the batch is sent to k."""
    return row_margins(logits, torch.full((len(logits),), k, dtype=torch.long, device=logits.device)).mean()


def objective_loss(objective: Objective, logits: torch.Tensor, k: int) -> torch.Tensor:
    """The batch's loss toward ``k`` under ``objective``: the margin, cross-entropy to k, or minus k's logit."""
    if objective == "margin":
        return margin_loss(logits, k)
    if objective == "cross-entropy":
        return F.cross_entropy(logits, torch.full((len(logits),), k, dtype=torch.long, device=logits.device))
    return -logits[:, k].mean()


def row_margins(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Per image, best other logit - logit of its own target class (one target per row)."""
    rows = targets.reshape(-1, 1)
    others = logits.scatter(1, rows, float("-inf"))
    return others.max(dim=1).values - logits.gather(1, rows).squeeze(1)


class CandidateTrigger(nn.Module):
    """What the scan needs from a trigger being inverted for one class."""

    def loss(self, logits: torch.Tensor, k: int) -> torch.Tensor:
        raise NotImplementedError

    def project(self) -> None:
        """Back into the feasible set after an optimiser step."""

    def after_step(self, logits: torch.Tensor, k: int) -> None:
        """Per-step bookkeeping of the method (Neural Cleanse's and Pixel Backdoor's adaptive cost)."""

    def settle(self) -> None:
        """Become the trigger the method reports once its optimisation ends (Pixel Backdoor: its best one)."""

    def picture(self) -> torch.Tensor:
        """(3, S, S) in [0, 1], amplified so that the pattern is visible."""
        raise NotImplementedError

    def true_scale(self) -> torch.Tensor:
        """(3, S, S) in [0, 1] as the trigger actually is (an additive one drawn on mid-grey)."""
        raise NotImplementedError

    def tensors(self) -> dict[str, torch.Tensor]:
        """What a report stores to rebuild the trigger (``from_tensors``)."""
        raise NotImplementedError

    def stats(self) -> dict[str, float]:
        return {}


class UnitBoxInversion(CandidateTrigger):
    """The inspector's families: parameters ``unit`` in [-1, 1] (scaled by the family's bounds), margin loss."""

    unit: nn.Parameter

    def loss(self, logits: torch.Tensor, k: int) -> torch.Tensor:
        return margin_loss(logits, k)

    @torch.no_grad()
    def project(self) -> None:
        self.unit.clamp_(-1.0, 1.0)


class AdditiveInversion(UnitBoxInversion):
    """A universal additive trigger inside the L-inf box of radius ``epsilon``."""

    method = "inspector"
    family = "additive"

    def __init__(self, image_size: int, epsilon: float, unit: torch.Tensor | None = None) -> None:
        super().__init__()
        self.epsilon = float(epsilon)
        shape = (1, 3, image_size, image_size)
        self.unit = nn.Parameter(torch.zeros(shape) if unit is None else unit.reshape(shape).clone().float())
        self.project()

    @property
    def delta(self) -> torch.Tensor:
        return self.epsilon * self.unit

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return (pixels + self.delta.to(pixels)).clamp(0, 1)

    @torch.no_grad()
    def picture(self) -> torch.Tensor:
        return (0.5 + 0.5 * self.unit[0]).clamp(0, 1).cpu()

    @torch.no_grad()
    def true_scale(self) -> torch.Tensor:
        return (0.5 + self.delta[0]).clamp(0, 1).cpu()

    def tensors(self) -> dict[str, torch.Tensor]:
        return {"delta": self.delta.detach().cpu()}

    @torch.no_grad()
    def stats(self) -> dict[str, float]:
        return {"linf": float(self.delta.abs().max()), "mean_abs": float(self.delta.abs().mean())}

    @classmethod
    def from_tensors(cls, tensors: dict[str, torch.Tensor], epsilon: float) -> AdditiveInversion:
        return cls(tensors["delta"].shape[-1], epsilon, tensors["delta"] / epsilon)


class MaskPatternInversion(CandidateTrigger):
    """Neural Cleanse's mask + pattern trigger with its L1-regularised loss."""

    method = "neural-cleanse"
    epsilon = 1e-7  # NC's tanh squeeze, so that atanh of the initial values stays finite

    def __init__(self, image_size: int, seed: int = 0, init_cost: float = 1e-3, success: float = 0.99,
                 patience: int = 5, mask: torch.Tensor | None = None, pattern: torch.Tensor | None = None) -> None:
        super().__init__()
        generator = torch.Generator().manual_seed(seed)
        if mask is None:
            mask = torch.rand(1, 1, image_size, image_size, generator=generator)
        if pattern is None:
            pattern = torch.rand(1, 3, image_size, image_size, generator=generator)
        self.mask_tanh = nn.Parameter(self._to_tanh(mask.reshape(1, 1, image_size, image_size)))
        self.pattern_tanh = nn.Parameter(self._to_tanh(pattern.reshape(1, 3, image_size, image_size)))
        self.cost, self.success, self.patience = init_cost, success, patience
        self._hits: list[float] = []

    def _to_tanh(self, x: torch.Tensor) -> torch.Tensor:
        return torch.atanh((x.float() - 0.5) * (2 - self.epsilon))

    def _from_tanh(self, x: torch.Tensor) -> torch.Tensor:
        return (torch.tanh(x) / (2 - self.epsilon) + 0.5).clamp(0, 1)  # float32 rounding can leave [0, 1]

    @property
    def mask(self) -> torch.Tensor:
        return self._from_tanh(self.mask_tanh)

    @property
    def pattern(self) -> torch.Tensor:
        return self._from_tanh(self.pattern_tanh)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        mask, pattern = self.mask.to(pixels), self.pattern.to(pixels)
        return (1 - mask) * pixels + mask * pattern

    def loss(self, logits: torch.Tensor, k: int) -> torch.Tensor:
        target = torch.full((logits.shape[0],), k, dtype=torch.long, device=logits.device)
        return F.cross_entropy(logits, target) + self.cost * self.mask.sum()

    @torch.no_grad()
    def after_step(self, logits: torch.Tensor, k: int) -> None:
        self._hits.append(float((logits.argmax(1) == k).float().mean()))
        if len(self._hits) >= self.patience:
            rate = sum(self._hits) / len(self._hits)
            self.cost = self.cost * 1.5 if rate >= self.success else self.cost / 1.5 ** 1.5
            self._hits.clear()

    @torch.no_grad()
    def picture(self) -> torch.Tensor:
        return (self.mask * self.pattern)[0].clamp(0, 1).cpu()

    def true_scale(self) -> torch.Tensor:
        return self.picture()

    def tensors(self) -> dict[str, torch.Tensor]:
        return {"mask": self.mask.detach().cpu(), "pattern": self.pattern.detach().cpu()}

    @torch.no_grad()
    def stats(self) -> dict[str, float]:
        return {"mask_norm": float(self.mask.sum()), "cost": self.cost}

    @classmethod
    def from_tensors(cls, tensors: dict[str, torch.Tensor]) -> MaskPatternInversion:
        mask = tensors["mask"].clamp(1e-4, 1 - 1e-4)
        return cls(mask.shape[-1], mask=mask, pattern=tensors["pattern"].clamp(1e-4, 1 - 1e-4))


class PixelPatternInversion(CandidateTrigger):
    """Pixel Backdoor's positive and negative patterns with its smooth-L0 cost, adapted from the authors' code.

    Each step is one of their optimisation steps on one batch: the batch's attack success counts towards the cost
    schedule (``patience`` steps in a row at or above ``asr_bound`` raise the cost by 1.5, as many below lower it
    by 1.5^1.5), and a step at the bound whose proxy and pixel count are the smallest so far becomes the best
    trigger, values under 1/255 cut, and the optimisation goes on from it. The authors' best trigger starts
    empty, so a class that never reaches the bound would report size 0, the most suspicious there is; here such
    a class keeps the whole image as its size: no trigger of any size was found.
    """

    method = "pixel-backdoor"
    epsilon = 1e-7

    def __init__(self, image_size: int, seed: int = 0, init_cost: float = 1e-3, asr_bound: float = 0.9,
                 patience: int = 10, positive: torch.Tensor | None = None,
                 negative: torch.Tensor | None = None) -> None:
        super().__init__()
        generator = torch.Generator().manual_seed(seed)
        shape = (1, 3, image_size, image_size)
        self.positive_raw = nn.Parameter(torch.rand(shape, generator=generator) if positive is None
                                         else positive.reshape(shape).clone().float())
        self.negative_raw = nn.Parameter(torch.rand(shape, generator=generator) if negative is None
                                         else negative.reshape(shape).clone().float())
        self.init_cost, self.cost, self.asr_bound, self.patience = init_cost, init_cost, asr_bound, patience
        self.up, self.down = 0, 0
        self.best: tuple[torch.Tensor, torch.Tensor] | None = None
        self.best_reg, self.best_pixels = float("inf"), image_size * image_size

    @property
    def pattern(self) -> torch.Tensor:
        """(1, 3, S, S) in [-1, 1]: the positive pattern minus the negative one."""
        return self.positive_raw.clamp(0, 1) - self.negative_raw.clamp(0, 1)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return (pixels + self.pattern.to(pixels)).clamp(0, 1)

    def size_proxy(self) -> torch.Tensor:
        """The smooth L0 proxy: per pixel, the largest channel of tanh(p / 10) squeezed into (0, 1), both patterns."""
        def per_pixel(raw: torch.Tensor) -> torch.Tensor:
            return (torch.tanh(raw / 10) / (2 - self.epsilon) + 0.5).amax(dim=1)

        return per_pixel(self.positive_raw).sum() + per_pixel(self.negative_raw).sum()

    def loss(self, logits: torch.Tensor, k: int) -> torch.Tensor:
        target = torch.full((logits.shape[0],), k, dtype=torch.long, device=logits.device)
        return F.cross_entropy(logits, target) + self.cost * self.size_proxy()

    @torch.no_grad()
    def perturbed_pixels(self, pattern: torch.Tensor | None = None) -> int:
        """Pixels where any channel of the pattern (values under 1/255 cut) is non-zero."""
        pattern = self.pattern if pattern is None else pattern
        return int((pattern.abs() >= 1 / 255).any(dim=1).sum())

    @torch.no_grad()
    def after_step(self, logits: torch.Tensor, k: int) -> None:
        success = float((logits.argmax(1) == k).float().mean())
        reg, pixels = float(self.size_proxy()), self.perturbed_pixels()
        if success >= self.asr_bound and reg < self.best_reg and pixels < self.best_pixels:
            self.best_reg, self.best_pixels = reg, pixels
            positive = self.positive_raw.clamp(0, 1)
            negative = self.negative_raw.clamp(0, 1)
            positive[positive < 1 / 255] = 0
            negative[negative < 1 / 255] = 0
            self.positive_raw.copy_(positive)
            self.negative_raw.copy_(negative)
            self.best = (positive.clone(), negative.clone())
        self.up, self.down = (self.up + 1, 0) if success >= self.asr_bound else (0, self.down + 1)
        if self.up >= self.patience:
            self.up = 0
            self.cost = self.init_cost if self.cost == 0 else self.cost * 1.5
        elif self.down >= self.patience:
            self.down = 0
            self.cost /= 1.5 ** 1.5

    @torch.no_grad()
    def settle(self) -> None:
        if self.best is not None:
            self.positive_raw.copy_(self.best[0])
            self.negative_raw.copy_(self.best[1])

    @torch.no_grad()
    def picture(self) -> torch.Tensor:
        return (0.5 + 0.5 * self.pattern[0]).clamp(0, 1).cpu()

    def true_scale(self) -> torch.Tensor:
        return self.picture()

    def tensors(self) -> dict[str, torch.Tensor]:
        return {"positive": self.positive_raw.detach().clamp(0, 1).cpu(),
                "negative": self.negative_raw.detach().clamp(0, 1).cpu()}

    @torch.no_grad()
    def stats(self) -> dict[str, float]:
        return {"trigger_size": float(self.best_pixels), "cost": self.cost}

    @classmethod
    def from_tensors(cls, tensors: dict[str, torch.Tensor]) -> PixelPatternInversion:
        positive = tensors["positive"]
        return cls(positive.shape[-1], positive=positive, negative=tensors["negative"])


COLOUR_MATRIX_BOUND = 0.5  # |D_ij|: enough for a strong tint, a grey-out or a channel mix (chosen on the dev zoo)
COLOUR_BIAS_BOUND = 0.2
COLOUR_CHART_SIZE = 64



class ColourInversion(UnitBoxInversion):
    """A global colour transform: x' = clamp(x + (D x + b)), a 3 x 3 matrix D and a bias b per image, bounded.

    The second inversion family, for triggers that are not small noise (a colour filter, a tint, a
    grade): twelve numbers, the same for every pixel, so it cannot paint a pattern. The optimiser works
    on u in [-1, 1]^12 (D = ``matrix_bound`` u, b = ``bias_bound`` u), projected after every step like
    the additive trigger. Loss: the same margin as the additive family.
    """

    method = "inspector"
    family = "colour"

    def __init__(self, matrix_bound: float = COLOUR_MATRIX_BOUND, bias_bound: float = COLOUR_BIAS_BOUND,
                 unit: torch.Tensor | None = None) -> None:
        super().__init__()
        self.matrix_bound, self.bias_bound = float(matrix_bound), float(bias_bound)
        self.unit = nn.Parameter(torch.zeros(12) if unit is None else unit.reshape(12).clone().float())
        self.project()

    @property
    def matrix(self) -> torch.Tensor:
        """The transform's matrix I + D."""
        return torch.eye(3, device=self.unit.device) + self.matrix_bound * self.unit[:9].reshape(3, 3)

    @property
    def bias(self) -> torch.Tensor:
        return self.bias_bound * self.unit[9:]

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        graded = torch.einsum("ij,bjhw->bihw", self.matrix.to(pixels), pixels)
        return (graded + self.bias.to(pixels)[:, None, None]).clamp(0, 1)

    @torch.no_grad()
    def picture(self) -> torch.Tensor:
        """The transform applied to a colour ramp (hue across, brightness down), so its effect is visible."""
        return self.forward(colour_chart(COLOUR_CHART_SIZE, self.unit.device))[0].cpu()

    def true_scale(self) -> torch.Tensor:
        return self.picture()

    def tensors(self) -> dict[str, torch.Tensor]:
        return {"colour": self.unit.detach().cpu().clone(),
                "colour_bounds": torch.tensor([self.matrix_bound, self.bias_bound])}

    @torch.no_grad()
    def stats(self) -> dict[str, float]:
        return {"colour_strength": float(self.unit.abs().mean())}

    @classmethod
    def from_tensors(cls, tensors: dict[str, torch.Tensor]) -> ColourInversion:
        bounds = tensors.get("colour_bounds", torch.tensor([COLOUR_MATRIX_BOUND, COLOUR_BIAS_BOUND]))
        return cls(float(bounds[0]), float(bounds[1]), unit=tensors["colour"])


def colour_chart(size: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """(1, 3, size, size): hues across, from dark at the top to light at the bottom (to draw a colour transform)."""
    hue = torch.linspace(0, 1, size, device=device)
    light = torch.linspace(0.15, 0.95, size, device=device)[:, None]
    channels = [(1 - (6 * ((hue[None, :] + shift) % 1) - 3).abs().sub(1).clamp(0, 1)) for shift in (0, 2 / 3, 1 / 3)]
    rgb = torch.stack([c.expand(size, size) for c in channels])
    return (light * (0.35 + 0.65 * rgb)).clamp(0, 1).unsqueeze(0)


# Opacity of the blend family's pattern, the published Blended opacity: on the dev zoo a pattern mixed in at 10% or
# 15% does not reach the targets of Blended CoCoOp backdoors implanted at 40%, one at 20% does
# (benchmarks/blend_choice.md)
BLEND_ALPHA = 0.2


class BlendInversion(UnitBoxInversion):
    """A pattern mixed into the whole image: x' = (1 - alpha) x + alpha p, p a free (3, S, S) picture in [0, 1].

    The third family, for triggers that are a picture blended over the scene (Blended, Chen et al. 2017): an
    additive trigger in the epsilon-box cannot dim the image toward a pattern, and a colour transform cannot paint
    one. The optimiser works on u in [-1, 1] (p = (1 + u) / 2, so it starts at mid-grey), projected after every
    step like the additive trigger; the opacity ``alpha`` is fixed, which bounds the change of every pixel by it.
    Loss: the same margin as the other families.
    """

    method = "inspector"
    family = "blend"

    def __init__(self, image_size: int, alpha: float = BLEND_ALPHA, unit: torch.Tensor | None = None) -> None:
        super().__init__()
        self.alpha = float(alpha)
        shape = (1, 3, image_size, image_size)
        self.unit = nn.Parameter(torch.zeros(shape) if unit is None else unit.reshape(shape).clone().float())
        self.project()

    @property
    def pattern(self) -> torch.Tensor:
        return 0.5 + 0.5 * self.unit

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return ((1 - self.alpha) * pixels + self.alpha * self.pattern.to(pixels)).clamp(0, 1)

    @torch.no_grad()
    def picture(self) -> torch.Tensor:
        """The pattern itself, at full opacity."""
        return self.pattern[0].clamp(0, 1).cpu()

    @torch.no_grad()
    def true_scale(self) -> torch.Tensor:
        """The pattern blended over mid-grey at its opacity."""
        return ((1 - self.alpha) * 0.5 + self.alpha * self.pattern[0]).clamp(0, 1).cpu()

    def tensors(self) -> dict[str, torch.Tensor]:
        return {"blend": self.unit.detach().cpu().clone(), "blend_alpha": torch.tensor([self.alpha])}

    @torch.no_grad()
    def stats(self) -> dict[str, float]:
        return {"blend_strength": float(self.unit.abs().mean())}

    @classmethod
    def from_tensors(cls, tensors: dict[str, torch.Tensor]) -> BlendInversion:
        unit = tensors["blend"]
        return cls(unit.shape[-1], float(tensors.get("blend_alpha", torch.tensor([BLEND_ALPHA]))[0]), unit)


# Side of the patch family's square as a share of the image side (16 px of the pocket CLIP's 64).
PATCH_SHARE = 0.25


class PatchInversion(UnitBoxInversion):
    """An opaque square of free colours pasted at a random place in each image: x' = x outside it, p inside.

    The fourth family, for triggers that are a small object in the scene (a sticker, a badge, a BadNets patch
    elsewhere than where it was implanted): an additive trigger in the epsilon-box cannot draw an opaque object,
    and a blended pattern covers the whole image. The place is drawn afresh for every image (from the trigger's own
    seeded generator, so a run repeats), so what is learned is a patch that works wherever it lands, as an
    implanted sticker does (Brown et al.'s adversarial patch, bounded in size instead of in strength). The optimiser
    works on u in [-1, 1] (p = (1 + u) / 2, mid-grey at the start), projected after every step. Loss: the margin.
    """

    method = "inspector"
    family = "patch"

    def __init__(self, image_size: int, share: float = PATCH_SHARE, seed: int = 0,
                 unit: torch.Tensor | None = None) -> None:
        super().__init__()
        self.image_size = int(image_size)
        self.size = patch_side(self.image_size, share) if unit is None else int(unit.shape[-1])
        self.seed = int(seed)
        self.places = torch.Generator().manual_seed(self.seed)
        shape = (1, 3, self.size, self.size)
        self.unit = nn.Parameter(torch.zeros(shape) if unit is None else unit.reshape(shape).clone().float())
        self.project()

    @property
    def pattern(self) -> torch.Tensor:
        return 0.5 + 0.5 * self.unit

    def corners(self, n: int) -> torch.Tensor:
        """(n, 2): the top-left corner (row, column) of the patch in each of ``n`` images."""
        return torch.randint(0, self.image_size - self.size + 1, (n, 2), generator=self.places)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        s, side = self.size, pixels.shape[-1]
        pattern = self.pattern.to(pixels)[0]
        out = []
        for image, (y, x) in zip(pixels, self.corners(len(pixels)).tolist(), strict=True):
            pad = (x, side - s - x, y, side - s - y)
            inside = F.pad(torch.ones_like(pattern[:1]), pad)
            out.append(image * (1 - inside) + F.pad(pattern, pad))
        return torch.stack(out) if out else pixels

    @torch.no_grad()
    def picture(self) -> torch.Tensor:
        """The patch on a mid-grey image of the input's size, in the middle."""
        canvas = torch.full((3, self.image_size, self.image_size), 0.5)
        y = (self.image_size - self.size) // 2
        canvas[:, y:y + self.size, y:y + self.size] = self.pattern[0].clamp(0, 1).cpu()
        return canvas

    def true_scale(self) -> torch.Tensor:
        return self.picture()

    def tensors(self) -> dict[str, torch.Tensor]:
        return {"patch": self.unit.detach().cpu().clone(),
                "patch_geometry": torch.tensor([self.image_size, self.seed])}

    @torch.no_grad()
    def stats(self) -> dict[str, float]:
        return {"patch_strength": float(self.unit.abs().mean())}

    @classmethod
    def from_tensors(cls, tensors: dict[str, torch.Tensor]) -> PatchInversion:
        unit = tensors["patch"]
        image_size, seed = (int(v) for v in tensors["patch_geometry"].tolist())
        return cls(image_size, seed=seed, unit=unit)


def patch_side(image_size: int, share: float) -> int:
    """The patch's side in pixels: ``share`` of the image's, at least 2 and at most the image's."""
    return max(2, min(int(image_size), round(image_size * share)))


def make_candidate(method: Method, image_size: int, epsilon: float, seed: int) -> CandidateTrigger:
    if method == "inspector":
        return AdditiveInversion(image_size, epsilon)
    if method == "neural-cleanse":
        return MaskPatternInversion(image_size, seed=seed)
    if method == "pixel-backdoor":
        return PixelPatternInversion(image_size, seed=seed)
    raise ValueError(f"unknown method {method!r}")


# Each inspector family's reconstructed trigger in a scan's tensors: the key that is there when it was inverted.
FAMILY_TENSORS = {"additive": "delta", "colour": "colour", "blend": "blend", "patch": "patch"}


def repair_candidates(method: Method, tensors: dict[str, torch.Tensor], epsilon: float, indexed: str,
                      families: str = "indexed", colour_scale: float = 1.0
                      ) -> tuple[CandidateTrigger, tuple[CandidateTrigger, ...]]:
    """A class's trigger to repair against (of the ``indexed`` family, the one that gave its anomaly index) and,
    with ``families`` "both", its trigger of every other family present in ``tensors``, with "additive" its
    additive trigger whichever family gave the index (``repair.RepairConfig.families``); a colour trigger at
    ``colour_scale`` of its reconstructed strength (``repair.RepairConfig.colour_scale``)."""
    if families == "additive" and FAMILY_TENSORS["additive"] in tensors:
        indexed = "additive"
    others = [family for family, key in FAMILY_TENSORS.items()
              if families == "both" and family != indexed and key in tensors]
    return (scaled_colour(candidate_from_tensors(method, tensors, epsilon, indexed), colour_scale),
            tuple(scaled_colour(candidate_from_tensors(method, tensors, epsilon, family), colour_scale)
                  for family in others))


def scaled_colour(trigger: CandidateTrigger, scale: float) -> CandidateTrigger:
    """A colour trigger moved toward the identity transform (``scale`` 1: as reconstructed); others unchanged."""
    if isinstance(trigger, ColourInversion) and scale != 1.0:
        with torch.no_grad():
            trigger.unit.mul_(scale)
    return trigger


def candidate_from_tensors(method: Method, tensors: dict[str, torch.Tensor], epsilon: float,
                           family: str = "additive") -> CandidateTrigger:
    """Rebuild a reconstructed trigger from a report's tensors (for repair and the before/after view);
    ``family`` picks the inspector's additive, colour, blend or patch trigger of the class."""
    if method == "inspector" and family == "colour":
        return ColourInversion.from_tensors(tensors).requires_grad_(False)
    if method == "inspector" and family == "blend":
        return BlendInversion.from_tensors(tensors).requires_grad_(False)
    if method == "inspector" and family == "patch":
        return PatchInversion.from_tensors(tensors).requires_grad_(False)
    if method == "inspector":
        return AdditiveInversion.from_tensors(tensors, epsilon).requires_grad_(False)
    if method == "pixel-backdoor":
        return PixelPatternInversion.from_tensors(tensors).requires_grad_(False)
    return MaskPatternInversion.from_tensors(tensors).requires_grad_(False)
