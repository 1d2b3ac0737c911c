"""Timing of a 50-class scan on a real-size backbone, both schedules, in one run (issue 6).

ViT-B/16's open_clip config with random weights (the numbers of operations are those of the real model;
no weights need to be downloaded), a CoCoOp learner over 50 classes, 1,000 random OOD images at 224 px.

    python benchmarks/gpu_timing.py [--arch ViT-B-16] [--classes 50] [--kind cocoop] [--device cuda]

Writes benchmarks/gpu_timing.json and .md (on the machine it ran on).
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from inspector.backbone import _freeze, _quiet_create  # noqa: E402
from inspector.invert import ScanConfig, run_scan  # noqa: E402
from inspector.prompts import build_learner  # noqa: E402

HERE = Path(__file__).resolve().parent
WORDS = ["red", "small", "old", "striped", "wooden", "flying", "frozen", "golden", "broken", "sleeping"]
THINGS = ["boat", "lamp", "tower", "kettle", "violin"]


def class_names(n: int) -> list[str]:
    """Two-word names like real label sets ("red boat", "small lamp", ...), numbered beyond 50."""
    names = [f"{w} {t}" for w in WORDS for t in THINGS]
    return [names[i] if i < len(names) else f"{names[i % len(names)]} {i // len(names)}" for i in range(n)]


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--arch", default="ViT-B-16")
    parser.add_argument("--classes", type=int, default=50)
    parser.add_argument("--kind", default="cocoop", choices=["coop", "cocoop"])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--pool", type=int, default=1000)
    parser.add_argument("--runs", default="faithful,faithful-bf16,fast",
                        help="comma-separated: faithful (fp32), faithful-bf16, fast (bf16 on CUDA)")
    parser.add_argument("--out", default=str(HERE / "gpu_timing"))
    args = parser.parse_args()
    device = torch.device(args.device)
    torch.manual_seed(0)
    backbone = _freeze(_quiet_create(args.arch), args.arch, "random", device)
    model = build_learner(args.kind, backbone, class_names(args.classes), ctx_init=None)
    size = backbone.image_size
    pool = torch.rand(args.pool, 3, size, size, generator=torch.Generator().manual_seed(0))
    warm = ScanConfig(classes=(0, 1, 2), pool_size=160, schedule="faithful")
    run_scan(model, pool, warm)  # kernels, allocator and cuDNN autotuning warm up outside the timings
    rows = []
    for name in [r.strip() for r in args.runs.split(",") if r.strip()]:
        schedule = "fast" if name == "fast" else "faithful"
        config = ScanConfig(schedule=schedule, pool_size=args.pool, bf16=name != "faithful")
        synchronize(device)
        started = time.perf_counter()
        result = run_scan(model, pool, config)
        synchronize(device)
        seconds = time.perf_counter() - started
        rows.append({"run": name, "schedule": schedule, "bf16": name != "faithful" and device.type == "cuda",
                     "seconds": round(seconds, 2), "image_passes": result.image_passes,
                     "steps": sum(c["steps"] for c in result.classes),
                     "peak_gpu_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2) if device.type == "cuda"
                     else None})
        print(rows[-1], flush=True)
    device_name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu"
    payload = {"arch": args.arch, "kind": args.kind, "classes": args.classes, "pool": args.pool,
               "image_size": size, "device": device_name, "torch": torch.__version__, "rows": rows}
    out = Path(args.out)
    out.with_suffix(".json").write_text(json.dumps(payload, indent=1) + "\n")
    base = rows[0]
    lines = [f"# {args.classes}-class scan, {args.arch} ({args.kind}, random weights), {device_name}", "",
             "`python benchmarks/gpu_timing.py`: one run, all schedules on the same warm GPU, "
             f"{args.pool} OOD images at {size} px, default epsilon (4/255).", "",
             "| run | seconds | image-encoder passes | steps | vs first row: time | passes | peak GPU memory |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['run']} | {r['seconds']:.1f} | {r['image_passes']:,} | {r['steps']:,} | "
                     f"{base['seconds'] / r['seconds']:.1f}x | {base['image_passes'] / r['image_passes']:.1f}x | "
                     f"{r['peak_gpu_gib']} GiB |")
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
