"""Accuracy of the shipped pocket world: zero-shot CLIP vs the clean CoOp / CoCoOp learners.

    .venv/bin/python benchmarks/pocket_world.py        # writes benchmarks/pocket_world.{json,md}

Everything is measured on the task's held-out test split (drawings the pocket CLIP never saw).
"""

from __future__ import annotations

import json
import platform
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from inspector.data import load_shipped_pool, load_task  # noqa: E402
from inspector.evaluate import accuracy, zero_shot_accuracy  # noqa: E402
from inspector.prompts import open_model  # noqa: E402
from inspector.zoo import list_zoo  # noqa: E402

OUT = Path(__file__).resolve().parent


def per_class_accuracy(model, task) -> dict[str, float]:
    from inspector.prompts import predict

    preds = predict(model, task.test_pixels)
    return {name: round(float((preds[task.test_labels == k] == k).float().mean()), 3)
            for k, name in enumerate(task.class_names)}


def main() -> None:
    task, pool = load_task(), load_shipped_pool()
    chance = 1 / len(task.class_names)
    rows, zero_shot = [], None
    for entry in list_zoo():
        if entry.attack:
            continue
        started = time.time()
        model = open_model(Path(entry.path), device="cpu")
        zero_shot = zero_shot if zero_shot is not None else zero_shot_accuracy(model.backbone, task)
        rows.append({"model": entry.name, "kind": entry.kind, "accuracy": round(accuracy(model, task), 4),
                     "per_class": per_class_accuracy(model, task),
                     "seconds": round(time.time() - started, 2)})
    result = {"command": "python benchmarks/pocket_world.py", "torch": torch.__version__,
              "machine": platform.processor() or platform.machine(), "threads": torch.get_num_threads(),
              "classes": len(task.class_names), "test_images": len(task.test_labels),
              "train_images": len(task.train_labels), "ood_images": len(pool.names),
              "chance": round(chance, 4), "zero_shot_accuracy": round(zero_shot, 4), "models": rows}
    (OUT / "pocket_world.json").write_text(json.dumps(result, indent=2) + "\n")
    lines = ["# Pocket world accuracy", "", f"Produced by `{result['command']}` (torch {torch.__version__}, "
             f"{result['threads']} CPU threads). Test split: {result['test_images']} images of "
             f"{result['classes']} classes, drawings unseen by the pocket CLIP.", "",
             "| model | accuracy | vs chance | vs zero-shot |", "|---|---|---|---|",
             f"| zero-shot CLIP (\"a photo of a {{class}}.\") | {zero_shot:.1%} | {zero_shot / chance:.1f}x | - |"]
    for row in rows:
        lines.append(f"| {row['model']} ({row['kind']}) | {row['accuracy']:.1%} | {row['accuracy'] / chance:.1f}x "
                     f"| {100 * (row['accuracy'] - zero_shot):+.1f} points |")
    lines += ["", "Per-class accuracy:", "", "| class | " + " | ".join(r["model"] for r in rows) + " |",
              "|---|" + "---|" * len(rows)]
    for name in task.class_names:
        lines.append(f"| {name} | " + " | ".join(f"{r['per_class'][name]:.0%}" for r in rows) + " |")
    (OUT / "pocket_world.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
