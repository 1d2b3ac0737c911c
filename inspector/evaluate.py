"""Accuracy of a prompt-tuned model and of its backbone's zero-shot classifier on a task."""

from __future__ import annotations

import torch

from inspector.backbone import Backbone
from inspector.data import Task, resize_pixels
from inspector.prompts import PromptedCLIP, predict, zero_shot_text_features


def accuracy(model: PromptedCLIP, task: Task, progress: bool = False) -> float:
    """Top-1 accuracy of the prompt-tuned model on the task's test split."""
    pixels = resize_pixels(task.test_pixels, model.backbone.image_size)
    preds = predict(model, pixels, progress=progress)
    return float((preds == task.test_labels).float().mean())


@torch.inference_mode()
def zero_shot_accuracy(backbone: Backbone, task: Task, batch_size: int = 128) -> float:
    """CLIP zero-shot ("a photo of a {class}.") top-1 accuracy on the task's test split."""
    text = zero_shot_text_features(backbone, task.class_names)
    pixels = resize_pixels(task.test_pixels, backbone.image_size)
    correct = 0
    for start in range(0, len(pixels), batch_size):
        feats = backbone.encode_image(pixels[start:start + batch_size].to(backbone.device))
        preds = (feats @ text.T).argmax(1).cpu()
        correct += int((preds == task.test_labels[start:start + batch_size]).sum())
    return correct / len(pixels)
