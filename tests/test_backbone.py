"""inspector/backbone.py: loading, freezing, and the pixel-space preprocessing split."""

from __future__ import annotations

import numpy as np
import open_clip
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

from inspector.backbone import POCKET_ARCH, load_backbone, pil_to_pixels
from inspector.errors import InputError


def test_pocket_backbone_is_frozen_and_small(backbone):
    params = list(backbone.model.parameters())
    assert all(not p.requires_grad for p in params)
    assert sum(p.numel() for p in params) <= 25_000_000
    assert backbone.image_size == 64
    assert not backbone.model.training


def test_pixel_split_matches_open_clip_preprocessing(backbone):
    """to_pixels + normalize inside the forward == open_clip's own eval transform."""
    rng = np.random.default_rng(0)
    image = Image.fromarray(rng.integers(0, 255, (90, 120, 3), dtype=np.uint8))
    pixels = backbone.to_pixels(image)
    assert pixels.shape == (3, 64, 64) and 0.0 <= float(pixels.min()) and float(pixels.max()) <= 1.0
    reference = open_clip.image_transform(64, is_train=False)(image).unsqueeze(0)
    with torch.inference_mode():
        ours = backbone.encode_image(pixels.unsqueeze(0))
        theirs = backbone.model.encode_image(reference)
    theirs = theirs / theirs.norm(dim=-1, keepdim=True)
    assert torch.nn.functional.cosine_similarity(ours, theirs).item() > 0.995


def test_local_weights_file_loads_the_same_model(backbone, tmp_path):
    path = tmp_path / "weights.safetensors"
    save_file({k: v.contiguous() for k, v in backbone.model.state_dict().items()}, str(path))
    other = load_backbone(POCKET_ARCH, str(path), device="cpu")
    assert other.pretrained.startswith("file:")
    pixels = torch.rand(2, 3, 64, 64)
    with torch.inference_mode():
        assert torch.allclose(backbone.encode_image(pixels), other.encode_image(pixels), atol=1e-5)


def test_weights_of_another_architecture_are_named(backbone, tmp_path):
    path = tmp_path / "wrong.safetensors"
    save_file({"visual.proj": torch.zeros(3, 3)}, str(path))
    with pytest.raises(InputError, match="does not fit architecture"):
        load_backbone(POCKET_ARCH, str(path), device="cpu")


def test_missing_pretrained_weights_fail_fast_offline():
    with pytest.raises(InputError, match="not in the local open_clip cache"):
        load_backbone("ViT-B-16", "openai", device="cpu")


def test_unknown_architecture_and_missing_file():
    with pytest.raises(InputError, match="unknown CLIP architecture"):
        load_backbone("ViT-Nope", "openai", device="cpu")
    with pytest.raises(InputError, match="does not exist"):
        load_backbone(POCKET_ARCH, "/nonexistent/weights.safetensors", device="cpu")


def test_pil_to_pixels_centre_crops_to_square():
    image = Image.new("RGB", (200, 100), (255, 0, 0))
    pixels = pil_to_pixels(image, 32)
    assert pixels.shape == (3, 32, 32)
    assert torch.allclose(pixels[0], torch.ones(32, 32)) and float(pixels[1:].max()) == 0.0
