"""Write a second labelled task and its OOD pool as plain folders (and zips), from the shipped images.

    .venv/bin/python scripts/make_folder_task.py --out things/ [--classes 8] [--shots 16] [--test 20]
        [--ood 600] [--seed 0] [--zip]

The task, "clip-art things", is not the pocket task: its classes are clip-art categories of the
shipped OOD pool (bird, insect, fruit, vehicle, ...), split by drawing so that variants of one
drawing never straddle train and test. Its OOD pool is drawn from the pocket task's images (stars,
flags, icons, clocks ...), categories disjoint from it. Everything is written exactly as a user
brings their own data:

    out/task/classes.txt, out/task/train/<class>/*.png, out/task/test/<class>/*.png, out/ood/*.png
    (--zip: out/task.zip and out/ood.zip as well)

The tests and benchmarks/folder_task.py use it to drive every workflow from folders only.
"""

from __future__ import annotations

import argparse
import random
import shutil
import sys
import zipfile
from collections import defaultdict
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
ASSETS = ROOT / "assets"

# Class name -> clip-art categories of the shipped OOD pool (prefixes of its ``categories``), in the order
# classes are taken: the ones with the most distinct drawings first.
CLASSES: dict[str, tuple[str, ...]] = {
    "mammal": ("animals/mammals",),
    "sports gear": ("recreation/sports",),
    "musical instrument": ("recreation/music",),
    "dessert": ("food/desserts",),
    "fruit": ("food/fruit",),
    "vehicle": ("transportation/vehicles",),
    "bird": ("animals/birds",),
    "insect": ("animals/bugs",),
    "drink": ("food/beverages",),
    "flower": ("plants/flowers",),
    "boat": ("transportation/boating",),
    "house": ("buildings/homes",),
}


def write_task(out: Path, n_classes: int = 8, shots: int = 16, test: int = 20, ood: int = 600, seed: int = 0,
               as_zip: bool = False) -> dict[str, Path]:
    """Write the task and OOD folders under ``out``; returns their paths (and the zips' with ``as_zip``)."""
    if not 3 <= n_classes <= len(CLASSES):
        raise SystemExit(f"--classes must be from 3 to {len(CLASSES)}")
    rng = random.Random(seed)
    with np.load(ASSETS / "ood_pool.npz", allow_pickle=False) as pool:
        images, sources = pool["images"], [str(s) for s in pool["sources"]]
        categories = [str(c) for c in pool["categories"]]
    out = Path(out)
    task_dir, ood_dir = out / "task", out / "ood"
    for folder in (task_dir, ood_dir):
        if folder.exists():
            shutil.rmtree(folder)
    names = list(CLASSES)[:n_classes]
    seen: set[bytes] = set()  # the pool repeats some pictures exactly, in one category or across two
    (task_dir).mkdir(parents=True)
    (task_dir / "classes.txt").write_text("\n".join(names) + "\n", encoding="utf-8")
    for name in names:
        by_drawing: dict[str, list[int]] = defaultdict(list)
        for i, category in enumerate(categories):
            if any(category == p or category.startswith(p + "/") for p in CLASSES[name]):
                if images[i].tobytes() not in seen:
                    seen.add(images[i].tobytes())
                    by_drawing[sources[i]].append(i)  # variants of a drawing share its source id
        drawings = sorted(by_drawing)
        rng.shuffle(drawings)
        train: list[int] = []
        test_images: list[int] = []
        for drawing in drawings:  # whole drawings to train until it has its shots, the rest to test
            target = train if len(train) < shots else test_images
            target.extend(by_drawing[drawing])
        train, test_images = train[:shots], test_images[:test]
        if len(train) < shots or not test_images:
            raise SystemExit(f"class {name!r} has too few drawings for {shots} shots and a test split")
        for split, picked in (("train", train), ("test", test_images)):
            folder = task_dir / split / name
            folder.mkdir(parents=True)
            for n, i in enumerate(picked):
                Image.fromarray(images[i]).save(folder / f"{n:03d}.png")
    with np.load(ASSETS / "task.npz", allow_pickle=False) as pocket:
        pocket_images = np.concatenate([pocket["train_images"], pocket["test_images"]])
    distinct = list({pocket_images[i].tobytes(): i for i in range(len(pocket_images))}.values())
    ood_dir.mkdir(parents=True)
    for n, i in enumerate(sorted(rng.sample(distinct, min(ood, len(distinct))))):
        Image.fromarray(pocket_images[i]).save(ood_dir / f"ood_{n:04d}.png")
    paths = {"task": task_dir, "ood": ood_dir}
    if as_zip:
        for key in ("task", "ood"):
            paths[f"{key}_zip"] = zip_folder(paths[key], out / f"{key}.zip")
    return paths


def zip_folder(folder: Path, archive: Path) -> Path:
    """``folder``'s files in a zip, under the folder's own name (as a user's file manager zips it)."""
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as handle:
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                handle.write(path, Path(folder.name) / path.relative_to(folder))
    return archive


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True)
    parser.add_argument("--classes", type=int, default=8)
    parser.add_argument("--shots", type=int, default=16)
    parser.add_argument("--test", type=int, default=20, help="test images per class (at most)")
    parser.add_argument("--ood", type=int, default=600, help="OOD images")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--zip", action="store_true", help="also write task.zip and ood.zip")
    args = parser.parse_args()
    paths = write_task(Path(args.out), args.classes, args.shots, args.test, args.ood, args.seed, args.zip)
    for key, path in paths.items():
        print(f"{key}: {path}")


if __name__ == "__main__":
    sys.exit(main())
