"""inspector/prompts.py: the text path, CoOp/CoCoOp, files, the Dassl importer, clean tuning."""

from __future__ import annotations

import json
import os
import pickle

import pytest
import torch
from safetensors import safe_open

from inspector.data import resize_pixels
from inspector.errors import InputError
from inspector.prompts import (
    TuneConfig,
    build_learner,
    import_dassl,
    load_learner,
    predict,
    save_learner,
    tune,
    zero_shot_text_features,
)

CLASSES = ["star", "arrow", "playing card", "clock"]


def test_coop_initialised_from_a_photo_of_a_reproduces_zero_shot_text(backbone, task):
    model = build_learner("coop", backbone, task.class_names, n_ctx=4, ctx_init="a photo of a")
    with torch.no_grad():
        learnt = model.text_features()
    reference = zero_shot_text_features(backbone, task.class_names, "a photo of a {}.")
    assert learnt.shape == reference.shape == (len(task.class_names), backbone.model.text_projection.shape[1])
    assert torch.allclose(learnt, reference, atol=1e-5)


def test_random_context_does_not_reproduce_zero_shot_text(backbone):
    model = build_learner("coop", backbone, CLASSES, n_ctx=4, ctx_init=None)
    with torch.no_grad():
        learnt = model.text_features()
    assert not torch.allclose(learnt, zero_shot_text_features(backbone, CLASSES), atol=1e-3)


def test_logits_are_logit_scale_times_cosine(backbone):
    model = build_learner("coop", backbone, CLASSES)
    pixels = torch.rand(3, 3, 64, 64)
    with torch.no_grad():
        logits = model(pixels)
        image = backbone.model.encode_image(backbone.normalize(pixels))
        text = zero_shot_text_features(backbone, CLASSES)
    cosine = torch.nn.functional.normalize(image, dim=-1) @ text.T
    assert torch.allclose(logits, backbone.model.logit_scale.exp() * cosine, atol=1e-4)


def test_cocoop_prompts_depend_on_the_image_and_reduce_to_coop_without_shift(backbone):
    cocoop = build_learner("cocoop", backbone, CLASSES)
    coop = build_learner("coop", backbone, CLASSES)
    pixels = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        feats = cocoop.image_features(pixels)
        per_image = cocoop.text_features(feats)
        assert per_image.shape[:2] == (2, len(CLASSES))
        assert not torch.allclose(per_image[0], per_image[1])
        cocoop.learner.meta_net.linear2.weight.zero_()
        cocoop.learner.meta_net.linear2.bias.zero_()
        assert torch.allclose(cocoop(pixels), coop(pixels), atol=1e-4)


def test_packed_cocoop_prompts_give_the_plain_text_path_features_and_gradients(backbone, task):
    """All of an image's prompts in one causal sequence (shared prefix) == one sequence per class."""
    from inspector.prompts import PromptedCLIP

    model = build_learner("cocoop", backbone, task.class_names)
    torch.manual_seed(0)
    with torch.no_grad():
        model.learner.meta_net.linear2.weight.normal_(0, 0.05)  # a real shift, not the zero-init one
    assert model.shares_prefix
    feats = torch.nn.functional.normalize(torch.randn(5, backbone.model.visual.output_dim), dim=-1)
    weights = torch.randn(5, len(task.class_names), backbone.model.text_projection.shape[1])
    results = []
    for packed in (True, False):
        f = feats.clone().requires_grad_(True)
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(PromptedCLIP, "shares_prefix", property(lambda self, packed=packed: packed))
            text = model.text_features(f)
        (text * weights).sum().backward()
        results.append((text.detach(), f.grad))
    (packed_text, packed_grad), (plain_text, plain_grad) = results
    assert torch.allclose(packed_text, plain_text, atol=1e-5)
    assert torch.allclose(packed_grad, plain_grad, atol=1e-5, rtol=1e-4)
    subset = torch.tensor([[0, 19], [3, 3], [7, 1], [2, 5], [11, 16]])
    picked = model.text_features(feats, subset)
    assert torch.allclose(picked, plain_text[torch.arange(5)[:, None], subset], atol=1e-5)


@pytest.mark.parametrize("kind", ["coop", "cocoop"])
def test_save_load_round_trip(backbone, tmp_path, kind):
    model = build_learner(kind, backbone, CLASSES, ctx_init=None, seed=3)
    path = save_learner(model, tmp_path / f"{kind}.safetensors", extra={"note": "round trip"})
    with safe_open(str(path), framework="pt") as handle:
        header = json.loads(handle.metadata()["inspector"])
        names = set(handle.keys())
    assert header["kind"] == kind and header["class_names"] == CLASSES and header["arch"] == "pocket-clip"
    assert header["preprocessing"]["image_size"] == 64 and header["note"] == "round trip"
    assert "ctx" in names and ("meta_net.linear1.weight" in names) == (kind == "cocoop")
    loaded = load_learner(path, backbone)
    pixels = torch.rand(4, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(model(pixels), loaded(pixels))


def test_loading_onto_a_mismatched_learner_names_the_tensor(backbone, tmp_path):
    model = build_learner("coop", backbone, CLASSES)
    path = save_learner(model, tmp_path / "m.safetensors")
    from safetensors.torch import load_file, save_file

    tensors = load_file(str(path))
    tensors["ctx"] = torch.zeros(4, 7)
    with safe_open(str(path), framework="pt") as handle:
        meta = handle.metadata()
    save_file(tensors, str(path), metadata=meta)
    with pytest.raises(InputError, match="'ctx' has shape"):
        load_learner(path, backbone)


def _write_dassl_checkpoint(path, model, garbage_prefix=True):
    state = {"ctx": model.learner.ctx.detach().half().clone()}
    if model.learner.meta_net is not None:
        for name, value in model.learner.meta_net.state_dict().items():
            state[f"meta_net.{name}"] = value.clone()
    if garbage_prefix:  # Dassl saves these too; the importer must rebuild them, not trust them
        state["token_prefix"] = torch.full((len(CLASSES), 1, 192), 7.0)
        state["token_suffix"] = torch.full((len(CLASSES), 27, 192), 7.0)
    torch.save({"state_dict": state, "epoch": 50, "optimizer": {"state": {}, "param_groups": []},
                "scheduler": {"last_epoch": 50}, "val_result": None}, path)


@pytest.mark.parametrize("kind", ["coop", "cocoop"])
def test_dassl_importer(backbone, tmp_path, kind):
    original = build_learner(kind, backbone, CLASSES, ctx_init=None, seed=5)
    checkpoint = tmp_path / "prompt_learner" / "model.pth.tar-50"
    checkpoint.parent.mkdir()
    _write_dassl_checkpoint(checkpoint, original)
    imported = import_dassl(checkpoint, backbone, CLASSES)
    assert imported.kind == kind
    assert torch.allclose(imported.learner.ctx, original.learner.ctx.half().float())
    pixels = torch.rand(3, 3, 64, 64)
    with torch.no_grad():
        assert torch.allclose(imported(pixels), original(pixels), atol=2e-2)
        assert (imported(pixels).argmax(1) == original(pixels).argmax(1)).all()


def test_dassl_importer_checks_class_count_for_class_specific_context(backbone, tmp_path):
    checkpoint = tmp_path / "model.pth.tar-1"
    torch.save({"state_dict": {"ctx": torch.zeros(3, 4, 192)}}, checkpoint)
    with pytest.raises(InputError, match="3 classes"):
        import_dassl(checkpoint, backbone, CLASSES)


class _CreatesFile:
    def __init__(self, target: str) -> None:
        self.target = target

    def __reduce__(self):
        return (open, (self.target, "w"))


def test_dassl_importer_refuses_a_malicious_pickle(backbone, tmp_path):
    target = tmp_path / "pwned.txt"
    checkpoint = tmp_path / "model.pth.tar-1"
    with open(checkpoint, "wb") as handle:
        pickle.dump({"state_dict": {"ctx": _CreatesFile(str(target))}}, handle)
    with pytest.raises(InputError, match="weights-only"):
        import_dassl(checkpoint, backbone, CLASSES)
    assert not os.path.exists(target)


def test_tiny_prompt_tuning_run_improves_accuracy(backbone, task):
    """From a random context, a short CoOp run must beat its own starting point clearly."""
    model = build_learner("coop", backbone, task.class_names, ctx_init=None, seed=0)
    test_pixels = resize_pixels(task.test_pixels, backbone.image_size)
    before = float((predict(model, test_pixels) == task.test_labels).float().mean())
    stats = tune(model, task.train_pixels, task.train_labels, TuneConfig(epochs=15, lr=2e-2, views=2))
    after = float((predict(model, test_pixels) == task.test_labels).float().mean())
    assert stats["steps"] == 15 * (len(task.train_labels) // 32)
    assert after > before + 0.15, (before, after)


def test_a_safetensors_file_that_is_not_a_learner_is_named(backbone, tmp_path):
    from safetensors.torch import save_file

    path = tmp_path / "weights.safetensors"
    save_file({"x": torch.zeros(2)}, str(path))
    with pytest.raises(InputError, match="is not an inspector prompt learner"):
        load_learner(path, backbone)
