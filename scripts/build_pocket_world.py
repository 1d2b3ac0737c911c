"""Rebuild the embedded pocket world in assets/, offline and reproducibly (seeded).

    apt-get install -y openclipart-png fonts-noto-color-emoji      # once, rebuild only
    .venv/bin/python scripts/build_pocket_world.py --stage all

Stages (each reuses the previous stage's output in --work):
  render    rasterise clip art + emoji to 64x64 (pocket_sources.py)
  pretrain  contrastive pre-training of the pocket CLIP on CPU (pocket_pretrain.py)
  assets    write assets/: pocket_clip.safetensors, task.npz, ood_pool.npz
  prompts   tune the clean CoOp and CoCoOp prompt learners into assets/zoo/
Nothing here runs at app or test time: the app only reads what this script wrote.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from pocket_sources import collect  # noqa: E402
from pocket_splits import make_splits  # noqa: E402

from inspector import backbone as bb  # noqa: E402

ASSETS = ROOT / "assets"


def zero_shot_monitor(images: np.ndarray, splits):
    """Zero-shot accuracy on the task's held-out test split, printed after every epoch."""
    import open_clip

    idx = [i for i, _ in splits.test]
    labels = torch.tensor([label for _, label in splits.test])
    pixels = bb.uint8_to_pixels(images[idx])
    mean = torch.tensor(open_clip.OPENAI_DATASET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(open_clip.OPENAI_DATASET_STD).view(1, 3, 1, 1)
    prompts = open_clip.tokenize([f"a photo of a {c}." for c in splits.class_names], context_length=32)

    def monitor(model) -> str:
        device = model.logit_scale.device
        with torch.inference_mode():
            text = model.encode_text(prompts.to(device), normalize=True)
            feats = model.encode_image(((pixels - mean) / std).to(device), normalize=True)
            acc = ((feats @ text.T).argmax(1).cpu() == labels).float().mean().item()
        return f"zero-shot {acc:.3f} (chance {1 / len(splits.class_names):.3f})"

    return monitor


def write_assets(images: np.ndarray, meta, splits, checkpoint: Path) -> None:
    from safetensors.torch import save_file

    ASSETS.mkdir(exist_ok=True)
    state = torch.load(checkpoint, map_location="cpu", weights_only=True)
    save_file({k: v.half().contiguous() for k, v in state.items()}, str(bb.POCKET_WEIGHTS),
              metadata={"arch": bb.POCKET_ARCH, "recipe": "scripts/build_pocket_world.py"})
    train_idx = [i for i, _ in splits.train]
    test_idx = [i for i, _ in splits.test]
    np.savez_compressed(
        ASSETS / "task.npz",
        train_images=images[train_idx], train_labels=np.array([lab for _, lab in splits.train], np.int16),
        test_images=images[test_idx], test_labels=np.array([lab for _, lab in splits.test], np.int16),
        class_names=np.array(splits.class_names),
        train_sources=np.array([meta[i].source_id for i in train_idx]),
        test_sources=np.array([meta[i].source_id for i in test_idx]))
    np.savez_compressed(ASSETS / "ood_pool.npz", images=images[splits.ood],
                        sources=np.array([meta[i].source_id for i in splits.ood]),
                        categories=np.array([meta[i].category for i in splits.ood]))
    write_contact_sheet(images, splits, ROOT / "docs" / "pocket_task.png")
    print(f"wrote assets: {len(train_idx)} train, {len(test_idx)} test, {len(splits.ood)} OOD images")


def write_contact_sheet(images: np.ndarray, splits, path: Path, per_class: int = 8) -> None:
    """One row of test drawings per task class, for the README."""
    from PIL import Image

    rows = []
    for k in range(len(splits.class_names)):
        members = [i for i, label in splits.test if label == k][:per_class]
        row = np.concatenate([images[i] for i in members], axis=1)
        rows.append(np.pad(row, ((0, 0), (0, per_class * images.shape[2] - row.shape[1]), (0, 0)),
                           constant_values=255))
    path.parent.mkdir(exist_ok=True)
    Image.fromarray(np.concatenate(rows, axis=0)).quantize(colors=256).save(path, optimize=True)


def tune_prompts(seed: int) -> None:
    """The clean CoOp and CoCoOp learners of the demo zoo (recipe: prompts.TuneConfig.for_kind)."""
    from inspector import data, prompts
    from inspector.evaluate import accuracy

    backbone = bb.load_backbone(device="cpu")
    task = data.load_task()
    for kind in ("coop", "cocoop"):
        model = prompts.build_learner(kind, backbone, task.class_names, seed=seed)
        config = prompts.TuneConfig.for_kind(kind, seed=seed)
        stats = prompts.tune(model, task.train_pixels, task.train_labels, config)
        stats["test_accuracy"] = round(accuracy(model, task), 4)
        path = prompts.save_learner(model, ASSETS / "zoo" / f"clean_{kind}.safetensors",
                                    extra={"training": {**stats, "lr": config.lr, "seed": seed}})
        print(f"{kind}: {stats} -> {path}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stage", choices=["render", "pretrain", "assets", "prompts", "all"], default="all")
    parser.add_argument("--work", type=Path, default=Path("/tmp/pocket_build"))
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu", help="pre-training device (the shipped model: cpu)")
    args = parser.parse_args()
    torch.manual_seed(args.seed)
    checkpoint = args.work / "pocket_clip.pt"
    if args.stage in ("render", "pretrain", "assets", "all"):
        images, meta = collect(args.work)
        splits = make_splits(meta, images, seed=args.seed)
    if args.stage in ("pretrain", "all"):
        from pocket_pretrain import pretrain

        pretrain(images, meta, splits.corpus, checkpoint, epochs=args.epochs, seed=args.seed,
                 monitor=zero_shot_monitor(images, splits), device=args.device)
    if args.stage in ("assets", "all"):
        write_assets(images, meta, splits, checkpoint)
    if args.stage in ("prompts", "all"):
        tune_prompts(args.seed)


if __name__ == "__main__":
    main()
