"""How much of a repair's up-front encoding its steps never read (issue 20): the labelled images' augmented views,
clean and stamped by each of the class's trigger families, encoded in full and as ``repair.views_needed`` picks
them, interleaved, on a demo model's own reconstructed triggers.

    python benchmarks/repair_encoding.py [--model badclip-cocoop] [--repeats 3]

One run, this machine: the model is scanned by default first (``pipeline.scan_job``), then for the default
recipe and a 10-epoch one (the app's quick setting) the encoding is timed both ways ``--repeats`` times, and the
features the steps read are compared. Writes benchmarks/repair_encoding.md / .json.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
HERE = ROOT / "benchmarks"
sys.path.insert(0, str(ROOT))

from inspector.backbone import machine_name  # noqa: E402
from inspector.invert import ScanConfig, ScanFinished  # noqa: E402
from inspector.pipeline import open_delivered, open_pool, scan_job  # noqa: E402
from inspector.prompts import encode_transformed_views  # noqa: E402
from inspector.repair import RepairConfig, draw_batches, views_needed  # noqa: E402
from inspector.tasks import load_labelled  # noqa: E402


def encode(model: Any, pixels: torch.Tensor, config: RepairConfig, stamps: dict[str, Any],
           needed: dict[str, torch.Tensor] | None) -> tuple[dict[str, torch.Tensor], float]:
    started = time.perf_counter()
    features = encode_transformed_views(model.backbone, pixels, config.views, config.seed, stamps, needed=needed)
    return features, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="badclip-cocoop")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    delivered = open_delivered(args.model, device="cpu")
    model = delivered.model
    pool = open_pool(None, model.backbone.image_size)
    with tempfile.TemporaryDirectory() as out:
        events = scan_job(delivered, pool, ScanConfig(), Path(out) / "scan")
        finished = next(e for e in events if isinstance(e, ScanFinished))
    result = finished.result
    target = result.verdict.target if result.verdict.target is not None else result.verdict.suspect
    trigger, also = result.repair_triggers(target, RepairConfig().families, RepairConfig().colour_scale)
    stamps = {"clean": None, "stamped": trigger, **{f"also{i}": other for i, other in enumerate(also)}}
    pixels = load_labelled(None, model.backbone.image_size).train_pixels
    n = len(pixels)
    rows = []
    for label, config in (("default recipe (40 epochs)", RepairConfig()), ("10 epochs", RepairConfig(epochs=10))):
        batch = min(config.batch_size, n)
        needed = views_needed(draw_batches(n, config.views, config.epochs, config.seed), batch, config.views,
                              len(also), config.seed)
        times: dict[str, list[float]] = {"every view": [], "views read": []}
        for _ in range(args.repeats):
            full, seconds = encode(model, pixels, config, stamps, None)
            times["every view"].append(seconds)
            lazy, seconds = encode(model, pixels, config, stamps, needed)
            times["views read"].append(seconds)
        same = all(torch.allclose(lazy[name][mask], full[name][mask], atol=1e-5) for name, mask in needed.items())
        encoded = {"every view": len(stamps) * config.views * n,
                   "views read": int(sum(int(mask.sum()) for mask in needed.values()))}
        medians = {key: round(statistics.median(values), 3) for key, values in times.items()}
        rows.append({"recipe": label, "epochs": config.epochs, "images_encoded": encoded, "seconds": times,
                     "median_s": medians, "ratio": round(medians["every view"] / medians["views read"], 2),
                     "read_features_equal": same})
        print(rows[-1], flush=True)
    data = {"model": args.model, "target": result.class_names[target], "families": [trigger.family,
                                                                                    *(t.family for t in also)],
            "labelled_images": n, "threads": args.threads, "device": machine_name("cpu"),
            "cpu": platform.processor() or platform.machine(), "torch": torch.__version__, "rows": rows}
    (HERE / "repair_encoding.json").write_text(json.dumps(data, indent=1) + "\n")
    lines = ["# A repair's up-front encoding: every view, or the views its steps read (issue 20)", "",
             f"`python benchmarks/repair_encoding.py --model {args.model} --repeats {args.repeats}`, one run, "
             f"{args.threads} threads, {data['device']}, torch {torch.__version__}. The {n} labelled train images' "
             f"augmented views, clean and stamped with {data['target']}'s reconstructed triggers "
             f"({' and '.join(data['families'])}; each triggered copy takes one of them), encoded by the image tower "
             "before the first step: all of them, or only those some step of the recipe reads "
             "(`repair.views_needed`). Medians of the runs, interleaved.", "",
             "| recipe | images encoded: every view | views read | seconds: every view | views read | ratio | "
             "read features equal |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['recipe']} | {r['images_encoded']['every view']:,} | {r['images_encoded']['views read']:,} "
                     f"| {r['median_s']['every view']} | {r['median_s']['views read']} | {r['ratio']}x | "
                     f"{'yes' if r['read_features_equal'] else 'no'} |")
    (HERE / "repair_encoding.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
