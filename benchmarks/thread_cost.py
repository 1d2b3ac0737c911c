"""Does torch work cost more in a thread than in the main thread? (issue 20: the app runs the engine in one)

Every Gradio handler runs in a worker thread, and the app's engine jobs run in a thread of their own
(inspector/ui/background.py), so a penalty for torch work outside the main thread would be part of the
app's gap to the CLI. This times the scan's inner work, a forward and backward pass of the pocket CLIP's
image tower on a batch of OOD images, in blocks that alternate between the main thread, one long-lived
worker thread and a fresh thread per block, and writes thread_cost.md / thread_cost.json.

    python benchmarks/thread_cost.py [--blocks 6] [--reps 8] [--batch 64] [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import platform
import queue
import statistics
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from inspector.backbone import load_backbone  # noqa: E402
from inspector.data import load_shipped_pool  # noqa: E402


def block(step: Callable[[], None], reps: int) -> list[float]:
    """Seconds of ``reps`` steps, each timed on its own."""
    times = []
    for _ in range(reps):
        started = time.perf_counter()
        step()
        times.append(time.perf_counter() - started)
    return times


class Worker:
    """One long-lived thread that runs what it is given, as the app's engine thread does."""

    def __init__(self) -> None:
        self.jobs: queue.Queue = queue.Queue()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while (job := self.jobs.get()) is not None:
            job()
            self.jobs.task_done()

    def run(self, job: Callable[[], None]) -> None:
        self.jobs.put(job)
        self.jobs.join()

    def close(self) -> None:
        self.jobs.put(None)
        self.thread.join()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--blocks", type=int, default=6, help="blocks per place, alternating (default: 6)")
    parser.add_argument("--reps", type=int, default=8, help="steps per block (default: 8)")
    parser.add_argument("--batch", type=int, default=64, help="OOD images per step (default: 64)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (default: 2)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    backbone = load_backbone(device="cpu")
    images = load_shipped_pool().pixels[:args.batch].clone().requires_grad_(True)

    def step() -> None:
        backbone.encode_image(images).sum().backward()

    block(step, 3)  # warm-up in the main thread, as a process's first scan does
    times: dict[str, list[float]] = {"main thread": [], "long-lived worker thread": [], "fresh thread per block": []}
    worker = Worker()
    for _ in range(args.blocks):
        times["main thread"] += block(step, args.reps)
        worker.run(lambda: times["long-lived worker thread"].extend(block(step, args.reps)))
        fresh = threading.Thread(target=lambda: times["fresh thread per block"].extend(block(step, args.reps)))
        fresh.start()
        fresh.join()
    worker.close()
    main_median = statistics.median(times["main thread"])
    rows = [{"where": where, "median_s": round(statistics.median(t), 4), "min_s": round(min(t), 4),
             "steps": len(t), "vs_main": round(statistics.median(t) / main_median, 3)} for where, t in times.items()]
    record = {"batch": args.batch, "threads": args.threads, "blocks": args.blocks, "reps": args.reps,
              "machine": platform.processor() or platform.machine(), "torch": torch.__version__, "rows": rows}
    (HERE / "thread_cost.json").write_text(json.dumps(record, indent=1))
    lines = ["# Torch work in the main thread and in other threads (issue 20)", "",
             f"`python benchmarks/thread_cost.py` on {args.threads} torch threads: a forward and backward pass of the "
             f"pocket CLIP's image tower on {args.batch} OOD images per step, {args.reps} steps per block, blocks "
             f"alternating main / long-lived worker / fresh thread, {args.blocks} each (torch {torch.__version__}).",
             "", "| where | median s / step | fastest s / step | steps | median vs main thread |",
             "|---|---|---|---|---|"]
    lines += [f"| {r['where']} | {r['median_s']:.4f} | {r['min_s']:.4f} | {r['steps']} | {r['vs_main']:.3f}× |"
              for r in rows]
    (HERE / "thread_cost.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
