"""inspector/backbone.py: loading, freezing, and the pixel-space preprocessing split."""

from __future__ import annotations

import numpy as np
import open_clip
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

from inspector.backbone import POCKET_ARCH, inference_tower, load_backbone, pil_to_pixels
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


def test_inference_tower_computes_the_encoder_and_its_input_gradient_without_batch_norm(backbone):
    """The scan's image tower: BatchNorm folded away, the same features and pixel gradients as the loaded encoder,
    and the loaded encoder left as it was (the lab fine-tunes and saves copies of it)."""
    tower, channels_last = backbone.image_tower
    assert channels_last and tower is not backbone.model.visual
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in tower.modules())
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in backbone.model.visual.modules())
    pixels = torch.rand(4, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    ours_in, theirs_in = pixels.clone().requires_grad_(True), pixels.clone().requires_grad_(True)
    ours = backbone.encode_image(ours_in)
    theirs = torch.nn.functional.normalize(backbone.model.encode_image(backbone.normalize(theirs_in)), dim=-1)
    assert torch.allclose(ours, theirs, atol=1e-5)
    weights = torch.randn(ours.shape[-1], generator=torch.Generator().manual_seed(2))
    (ours @ weights).sum().backward()
    (theirs @ weights).sum().backward()
    assert torch.allclose(ours_in.grad, theirs_in.grad, rtol=1e-3, atol=1e-4 * float(theirs_in.grad.abs().max()))


def test_inference_tower_leaves_a_tower_without_batch_norm_as_it_is():
    vit = open_clip.transformer.VisionTransformer(image_size=32, patch_size=8, width=64, layers=1, heads=2,
                                                  mlp_ratio=2.0, output_dim=32)
    assert inference_tower(vit, torch.device("cpu")) == (vit, False)


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
