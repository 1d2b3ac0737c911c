"""Default repairs of a zoo's backdoored models of some kinds only (the repair-per-attack table), without scanning
again the models whose repair is already recorded: benchmarks/detection.py's own scan and repair of each, run for
the models it lacks. Then ``detection.py --zoo <zoo> --table-only --no-repair`` and ``paper.py`` re-make the tables.

    .venv/bin/python benchmarks/repair_zoo.py --zoo benchmarks/zoos/test3 --kinds cocoop
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.detection import _folder, calibrated, colour_tag, recipe_folder, repair_model, scan_model  # noqa: E402
from inspector.data import load_shipped_pool, load_task  # noqa: E402
from inspector.lab.truth import read_ground_truth  # noqa: E402
from inspector.reference import Reference, shipped_reference_path  # noqa: E402
from inspector.repair import RepairConfig  # noqa: E402

METHOD = "inspector + reference"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--zoo", required=True)
    parser.add_argument("--kinds", default="coop,cocoop")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    zoo, kinds = Path(args.zoo), tuple(args.kinds.split(","))
    manifest = json.loads((zoo / "manifest.json").read_text())
    pool, task = load_shipped_pool().pixels, load_task()
    scans = zoo / "scans" / (_folder(METHOD) + colour_tag(True))
    for entry in manifest["models"]:
        path = zoo / entry["file"]
        if read_ground_truth(path) is None or not any(f"_{kind}_" in path.stem for kind in kinds):
            continue
        cache = recipe_folder(zoo, RepairConfig()) / f"{path.stem}.json"
        if cache.exists():
            continue
        started = time.time()
        row = scan_model(path, METHOD, scans / f"{path.stem}.json", pool, None, "cpu", True, for_repair=True)
        row = {**calibrated(row, Reference.read(shipped_reference_path("pocket-clip", row["kind"]))),
               "method": row["method"]}
        done = repair_model(path, row, cache, pool, task, "cpu", scans=scans)
        print(f"repair {path.stem:<36} against {done['repaired_class']:<16} asr {done['asr_before']:.1%} -> "
              f"{done['asr_after']:.1%}, accuracy {done['accuracy_before']:.1%} -> {done['accuracy_after']:.1%} "
              f"({time.time() - started:.0f} s)", flush=True)


if __name__ == "__main__":
    main()
