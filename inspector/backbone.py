"""The single place that turns "which CLIP?" into a frozen open_clip model plus pixel-space preprocessing.

Triggers live in pixel space [0, 1] at the model's input size, so preprocessing is split in two:
``to_pixels`` (resize + centre crop + to tensor, no normalisation) and ``normalize`` (the model's
own mean/std), applied inside the forward pass after the trigger has been stamped.

Every pass the engine makes through the image encoder (scan, repair, implant, evaluation) goes
through ``Backbone.encode_image``, which runs ``image_tower``: the frozen encoder made faster for
inference without changing the function it computes (``inference_tower``). ``model`` itself stays as
loaded, so the lab can fine-tune a copy of it and save weights that open_clip reads back.
"""

from __future__ import annotations

import copy
import functools
import hashlib
import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import open_clip
import torch
from open_clip.modified_resnet import ModifiedResNet
from PIL import Image
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from inspector.errors import InputError, shown
from inspector.safetensors_file import describe_problem

PACKAGE_DIR = Path(__file__).resolve().parent
ASSETS_DIR = PACKAGE_DIR.parent / "assets"
MODEL_CONFIG_DIR = PACKAGE_DIR / "model_configs"
POCKET_ARCH = "pocket-clip"
POCKET_WEIGHTS = ASSETS_DIR / "pocket_clip.safetensors"
POCKET_TAG = "pocket"

open_clip.add_model_config(MODEL_CONFIG_DIR)


@dataclass
class Backbone:
    """A frozen CLIP with everything the engine needs to know about its inputs."""

    model: open_clip.model.CLIP
    arch: str
    pretrained: str  # open_clip tag, "pocket", or "file:<sha256 prefix>" for a local weights file
    image_size: int
    mean: torch.Tensor = field(repr=False)
    std: torch.Tensor = field(repr=False)
    interpolation: str = "bicubic"
    _tower: tuple[nn.Module, bool] | None = field(default=None, init=False, repr=False)

    @property
    def device(self) -> torch.device:
        return self.model.logit_scale.device

    @property
    def image_tower(self) -> tuple[nn.Module, bool]:
        """The frozen image encoder as inference runs it and whether it takes channels-last input
        (``inference_tower``), built on first use."""
        if self._tower is None:
            with torch.inference_mode(False):  # built under inference mode, its weights could never see a gradient
                self._tower = inference_tower(self.model.visual, self.device)
        return self._tower

    def normalize(self, pixels: torch.Tensor) -> torch.Tensor:
        """Model normalisation for a batch of [0, 1] pixels (B, 3, H, W)."""
        return (pixels - self.mean.to(pixels)) / self.std.to(pixels)

    def encode_image(self, pixels: torch.Tensor) -> torch.Tensor:
        """Unit-norm image features from [0, 1] pixels; differentiable w.r.t. the pixels."""
        tower, channels_last = self.image_tower
        pixels = self.normalize(pixels)
        features = tower(pixels.contiguous(memory_format=torch.channels_last) if channels_last else pixels)
        return features / features.norm(dim=-1, keepdim=True)

    def to_pixels(self, image: Image.Image) -> torch.Tensor:
        """One PIL image -> (3, S, S) float tensor in [0, 1]: resize short side, centre crop."""
        return pil_to_pixels(image, self.image_size, self.interpolation)

    def tokenize(self, texts: list[str]) -> torch.Tensor:
        return open_clip.tokenize(texts, context_length=self.context_length)

    @property
    def context_length(self) -> int:
        return int(self.model.positional_embedding.shape[0])


def inference_tower(visual: nn.Module, device: torch.device) -> tuple[nn.Module, bool]:
    """A frozen image encoder that computes the same function with less work, and whether it takes its input in
    channels-last layout.

    open_clip's ResNet towers (``ModifiedResNet``): each eval-mode BatchNorm folded into the convolution before it
    (BatchNorm's forward and backward were ~10% of a CPU scan step) and, on the CPU, convolutions in channels-last
    layout: a pocket CLIP scan step's encoder work 1.31x faster on 2 CPU threads (benchmarks/inference_tower.md).
    The copy is checked against the tower on two random images and dropped if they disagree beyond float
    rounding. Other towers (ViT) are returned as they are, not copied.
    """
    if not isinstance(visual, ModifiedResNet):
        return visual, False
    tower = copy.deepcopy(visual).eval()
    _fold_batch_norms(tower)
    channels_last = device.type == "cpu"
    if channels_last:
        tower = tower.to(memory_format=torch.channels_last)
    tower.requires_grad_(False)
    probe = torch.rand(2, 3, visual.image_size, visual.image_size, generator=torch.Generator().manual_seed(0))
    probe = probe.to(device)
    with torch.no_grad():
        expected = visual(probe)
        got = tower(probe.contiguous(memory_format=torch.channels_last) if channels_last else probe)
    if not torch.allclose(got, expected, rtol=1e-3, atol=1e-4 * float(expected.abs().max())):
        return visual, False
    return tower, channels_last


def _fold_batch_norms(module: nn.Module) -> None:
    """Fold each BatchNorm2d into the Conv2d registered just before it among the same parent's children, leaving an
    Identity: in open_clip's ResNet blocks conv1 feeds bn1, conv2 bn2, conv3 bn3, and a downsample's "0" its "1"."""
    children = list(module.named_children())
    for (name, child), (next_name, following) in zip(children, children[1:], strict=False):
        if isinstance(child, nn.Conv2d) and isinstance(following, nn.BatchNorm2d):
            setattr(module, name, fuse_conv_bn_eval(child, following))
            setattr(module, next_name, nn.Identity())
    for _, child in module.named_children():
        _fold_batch_norms(child)


def pil_to_pixels(image: Image.Image, size: int, interpolation: str = "bicubic") -> torch.Tensor:
    """Resize (short side) and centre-crop to ``size``; returns float pixels in [0, 1]."""
    resample = {"bicubic": Image.Resampling.BICUBIC, "bilinear": Image.Resampling.BILINEAR}.get(
        interpolation, Image.Resampling.BICUBIC)
    image = image.convert("RGB")
    scale = size / min(image.size)
    if image.size != (size, size):
        new = (max(size, round(image.width * scale)), max(size, round(image.height * scale)))
        image = image.resize(new, resample)
        left, top = (image.width - size) // 2, (image.height - size) // 2
        image = image.crop((left, top, left + size, top + size))
    array = np.array(image, dtype=np.uint8)  # a writable copy for torch
    return torch.from_numpy(array).permute(2, 0, 1).float() / 255.0


def uint8_to_pixels(images: np.ndarray) -> torch.Tensor:
    """(N, H, W, 3) uint8 array -> (N, 3, H, W) float tensor in [0, 1]."""
    return torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float() / 255.0


def known_arch(name: str) -> bool:
    """Whether open_clip (with the pocket config registered) has an architecture of this name."""
    return name in open_clip.list_models()


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def machine_name(device: torch.device | str) -> str:
    """The machine a run's seconds belong to, so CPU and GPU times are never averaged together: a GPU by name,
    or the CPU with its thread count."""
    if str(device).startswith("cuda") and torch.cuda.is_available():
        return torch.cuda.get_device_name(0)
    return f"cpu ({torch.get_num_threads()} threads)"


def file_sha256(path: Path, prefix: int = 16) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:prefix]


def _pretrained_available_offline(arch: str, tag: str) -> bool:
    """True when open_clip can find the weights for (arch, tag) without the network."""
    from open_clip import pretrained as pt

    cfg = pt.get_pretrained_cfg(arch, tag)
    if not cfg:
        return False
    if cfg.get("hf_hub"):
        try:
            from huggingface_hub import try_to_load_from_cache
        except ImportError:
            return False
        repo = cfg["hf_hub"].rstrip("/")
        for filename in ("open_clip_model.safetensors", "open_clip_pytorch_model.bin"):
            hit = try_to_load_from_cache(repo, filename)
            if isinstance(hit, str):
                return True
        return False
    url = cfg.get("url", "")
    return bool(url) and (Path.home() / ".cache" / "clip" / Path(url).name).exists()


def load_backbone(arch: str = POCKET_ARCH, pretrained: str | None = None,
                  device: str | torch.device | None = None, allow_download: bool = False) -> Backbone:
    """Load a frozen open_clip model.

    ``pretrained`` is an open_clip tag (e.g. ``openai``), a path to a local weights file, or
    ``None``/``"pocket"`` for the embedded pocket CLIP. Tags are looked up in open_clip's own
    Hugging Face cache; without ``allow_download`` a missing download is a clear error, not a hang.
    """
    device = torch.device(device) if device is not None else default_device()
    if arch not in open_clip.list_models():
        raise InputError(f"unknown CLIP architecture {shown(arch)}",
                         hint="use one of `open_clip.list_models()`, e.g. ViT-B-16, or pocket-clip")
    if arch == POCKET_ARCH and pretrained in (None, POCKET_TAG):
        pretrained = str(POCKET_WEIGHTS)
        tag = POCKET_TAG
        if not POCKET_WEIGHTS.exists():
            raise InputError(f"{POCKET_WEIGHTS} is missing",
                             hint="the pocket CLIP ships in assets/; restore it from git "
                                  "or rebuild it with scripts/build_pocket_world.py")
    elif pretrained is None:
        raise InputError(f"no weights given for {arch}",
                         hint="pass --pretrained TAG (e.g. openai) or --pretrained PATH/TO/WEIGHTS")
    else:
        tag = pretrained
    weights_path = Path(pretrained)
    if weights_path.suffix in {".safetensors", ".bin", ".pt", ".pth"} or weights_path.exists():
        if not weights_path.is_file():
            raise InputError(f"weights file {weights_path} does not exist",
                             hint="check the path, or pass an open_clip pretrained tag instead")
        if tag != POCKET_TAG:
            tag = f"file:{file_sha256(weights_path)}"
        model = _create_from_file(arch, weights_path)
    else:
        if tag not in open_clip.list_pretrained_tags_by_model(arch):
            raise InputError(f"{shown(arch)} has no pretrained tag {shown(tag)}",
                             hint=f"known tags: {', '.join(open_clip.list_pretrained_tags_by_model(arch)) or 'none'}")
        if not allow_download and not _pretrained_available_offline(arch, tag):
            raise InputError(f"weights for {arch}/{tag} are not in the local open_clip cache",
                             hint="download them once on a machine with internet "
                                  "(python -c \"import open_clip; open_clip.create_model('"
                                  f"{arch}', pretrained='{tag}')\") or pass a local weights file")
        model = open_clip.create_model(arch, pretrained=tag)
    return _freeze(model, arch, tag, device)


@functools.lru_cache(maxsize=4)
def cached_backbone(arch: str, pretrained: str | None = None, device: str | None = None) -> Backbone:
    """Backbones are frozen and never written, so every job of a process can share one copy per weights."""
    return load_backbone(arch, pretrained, device=device)


def shared_backbone(arch: str, pretrained: str | None, device: object = None) -> Backbone:
    """A ``backbone_loader`` for ``open_model`` that reuses ``cached_backbone``'s copies."""
    return cached_backbone(arch, pretrained, str(device) if device is not None else None)


def _quiet_create(arch: str) -> torch.nn.Module:
    """open_clip logs a warning for every model built without weights; ours are loaded next."""
    logger = logging.getLogger()
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        return open_clip.create_model(arch, pretrained=None)
    finally:
        logger.setLevel(level)


def _create_from_file(arch: str, path: Path) -> open_clip.model.CLIP:
    """Build ``arch`` and load a local state dict (safetensors, or a weights-only torch file)."""
    model = _quiet_create(arch)
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
            state = state.get("state_dict", state) if isinstance(state, dict) else state
    except Exception as exc:  # noqa: BLE001 - any reader failure is a bad file for the user
        why = describe_problem(path) if path.suffix == ".safetensors" else f"the torch reader refused it ({exc})"
        raise InputError(f"cannot read weights file {path}: {why}",
                         hint="pass a safetensors or torch state-dict file of this architecture") from exc
    state = {k.removeprefix("module."): v.float() for k, v in state.items()}
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [k for k in missing if k != "attn_mask"]
    if missing or unexpected:
        raise InputError(f"weights file {path} does not fit architecture {arch}: "
                         f"{len(missing)} missing, {len(unexpected)} unexpected tensors "
                         f"(e.g. {(missing or unexpected)[0]})",
                         hint="pass the --arch these weights were trained with")
    return model


def _freeze(model: torch.nn.Module, arch: str, tag: str, device: torch.device) -> Backbone:
    if not hasattr(model, "token_embedding"):
        raise InputError(f"{arch} has a custom text tower; prompt learners need open_clip's built-in one",
                         hint="use a CLIP architecture such as ViT-B-16, RN50 or pocket-clip")
    model.eval().requires_grad_(False).to(device)
    cfg = open_clip.get_model_preprocess_cfg(model)
    size = cfg.get("size", 224)
    size = size[0] if isinstance(size, (tuple, list)) else int(size)
    mean = torch.tensor(cfg.get("mean", open_clip.OPENAI_DATASET_MEAN)).view(1, 3, 1, 1)
    std = torch.tensor(cfg.get("std", open_clip.OPENAI_DATASET_STD)).view(1, 3, 1, 1)
    return Backbone(model=model, arch=arch, pretrained=tag, image_size=int(size),
                    mean=mean.to(device), std=std.to(device),
                    interpolation=cfg.get("interpolation", "bicubic"))
