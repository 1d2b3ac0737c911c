"""Build the shipped demo zoo's backdoored CoCoOp learners (assets/zoo/), one per attack.

    .venv/bin/python scripts/build_demo_zoo.py [--force]

Each is implanted into the shipped clean CoCoOp learner with the lab's default recipe for its
attack (ImplantConfig.for_attack), target classes all different, seed 0. Existing files are kept
unless --force. Measure them with ``benchmarks/demo_zoo.py``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from inspector.backbone import load_backbone  # noqa: E402
from inspector.data import load_shipped_pool, load_task  # noqa: E402
from inspector.lab.zoo_builder import ZooItem, build_item  # noqa: E402
from inspector.zoo import ZOO_DIR  # noqa: E402

DEMO_BACKDOORS = [("badclip", "balloon"), ("blended", "clock"), ("wanet", "map"), ("badnets", "playing card")]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--force", action="store_true", help="rebuild models that already exist")
    parser.add_argument("--only", default=None, help="comma-separated attacks to build")
    args = parser.parse_args()
    backbone = load_backbone(device="cpu")
    task, pool = load_task(), load_shipped_pool()
    for attack, target_name in DEMO_BACKDOORS:
        if args.only and attack not in args.only.split(","):
            continue
        item = ZooItem(f"{attack}-cocoop", "cocoop", seed=0, attack=attack,
                       target=task.class_names.index(target_name), base="clean-cocoop")
        path = ZOO_DIR / item.filename
        if args.force and path.exists():
            path.unlink()
        row = build_item(item, ZOO_DIR, backbone, task, pool)
        print(f"{item.name}: accuracy {row['accuracy']:.1%}, asr {row['asr']:.1%}, ood_asr {row['ood_asr']:.1%}",
              flush=True)


if __name__ == "__main__":
    main()
