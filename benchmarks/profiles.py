"""Where the time of a scan, a repair and an implant goes (issue 20), each profiled as a user runs it.

    .venv/bin/python benchmarks/profiles.py [--threads 2] [--only cli-scan-cocoop,...]

Workloads (the demo models, default settings):
- ``cli-scan-*``: ``python -m inspector scan <model>`` as a whole process under cProfile (imports, model and pool
  loading, the schedule, measurement, report writing);
- ``app-scan-cocoop``: the app's scan handler (``ui.handlers.run_scan``) driven in this process, so the page's own
  work (trigger pictures, bar charts) is counted beside the engine's; Gradio's transport is not (benchmarks/speed.py
  times a real app process for that);
- ``cli-repair-cocoop``: ``python -m inspector repair`` against the CoCoOp scan's report;
- ``cli-implant-coop`` and ``app-implant-coop``: the teaching mode's default implant (Blended into clean-coop), from
  the CLI and through the app's handler.

Writes benchmarks/profiles.md (wall time of each, then its top entries by own time and by cumulative time) and
benchmarks/profiles.json. Run it alone: two heavy jobs on two cores make every figure meaningless.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import os
import platform
import pstats
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))

SCAN_MODELS = {"cocoop": "badclip-cocoop", "coop": "clean-coop"}
TEACHING = ("clean-coop", "blended", "clock", 0)  # base, attack, target, seed: the page's defaults, a fixed target
TOP = 15


def cli(args: list[str], profile: Path, threads: int) -> float:
    """Run ``python -m inspector <args>`` under cProfile as its own process; its wall time, start to exit."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "cProfile", "-o", str(profile), "-m", "inspector", *args],
                          cwd=ROOT, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(args)} failed:\n{done.stderr[-2000:]}")
    return seconds


def in_process(run: Callable[[], None], profile: Path) -> float:
    """Profile ``run`` in this process (the app's handlers, consumed as Gradio would consume them)."""
    profiler = cProfile.Profile()
    started = time.perf_counter()
    profiler.runcall(run)
    seconds = time.perf_counter() - started
    profiler.dump_stats(str(profile))
    return seconds


def app_scan(model: str, work: Path) -> Callable[[], None]:
    from inspector.ui import handlers
    from inspector.ui.workspace import Workspace

    def run() -> None:
        ws = Workspace(work / "app-runs", [work], device="cpu")
        for _ in handlers.choose_model(ws, "demo zoo", model, None, None):
            pass
        for _ in handlers.run_scan(ws, "inspector", "fast", 14, 1000, 1, [], 2.0, False, "flip_rate"):
            pass
        if ws.result is None:
            raise SystemExit("the app's scan ended without a result")
    return run


def app_implant(work: Path) -> Callable[[], None]:
    from inspector.ui import handlers
    from inspector.ui.workspace import Workspace

    base, attack, target, seed = TEACHING

    def run() -> None:
        ws = Workspace(work / "app-runs", [work], device="cpu")
        for _ in handlers.run_implant(ws, base, attack, target, seed):
            pass
        if ws.loaded is None or "mystery" not in ws.loaded.label:
            raise SystemExit("the app's implant ended without a mystery model")
    return run


def top_entries(profile: Path, key: str) -> list[dict[str, Any]]:
    """The profile's ``TOP`` functions by ``key`` ("tottime" or "cumulative"), as rows."""
    stats = pstats.Stats(str(profile), stream=io.StringIO())
    rows = []
    for (file, line, name), (_, calls, own, cumulative, _) in stats.stats.items():  # type: ignore[attr-defined]
        where = file.split("site-packages/")[-1].replace(str(ROOT) + "/", "")
        rows.append({"function": f"{where}:{line}({name})" if line else name, "calls": calls,
                     "own_s": round(own, 2), "cumulative_s": round(cumulative, 2)})
    return sorted(rows, key=lambda r: -r["own_s" if key == "tottime" else "cumulative_s"])[:TOP]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--only", default="", help="comma-separated workload names (default: all)")
    args = parser.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    work = Path(tempfile.mkdtemp(prefix="inspector-profiles-"))
    scan_out = work / "scan-cocoop"
    workloads: dict[str, Callable[[Path], float]] = {
        "cli-scan-cocoop": lambda p: cli(["scan", SCAN_MODELS["cocoop"], "--out", str(scan_out), "--overwrite",
                                          "--device", "cpu"], p, args.threads),
        "cli-scan-coop": lambda p: cli(["scan", SCAN_MODELS["coop"], "--out", str(work / "scan-coop"),
                                        "--overwrite", "--device", "cpu"], p, args.threads),
        "app-scan-cocoop": lambda p: in_process(app_scan(SCAN_MODELS["cocoop"], work), p),
        "cli-repair-cocoop": lambda p: cli(["repair", SCAN_MODELS["cocoop"], "--report", str(scan_out / "report.json"),
                                            "--out", str(work / "repaired.safetensors"), "--overwrite",
                                            "--device", "cpu"], p, args.threads),
        "cli-implant-coop": lambda p: cli(["implant", TEACHING[0], "--attack", TEACHING[1], "--target", TEACHING[2],
                                           "--seed", str(TEACHING[3]), "--out", str(work / "implanted.safetensors"),
                                           "--overwrite", "--device", "cpu"], p, args.threads),
        "app-implant-coop": lambda p: in_process(app_implant(work), p),
    }
    chosen = [name for name in args.only.split(",") if name] or list(workloads)
    if "cli-repair-cocoop" in chosen and "cli-scan-cocoop" not in chosen:
        chosen.insert(chosen.index("cli-repair-cocoop"), "cli-scan-cocoop")  # the repair reads its report
    results = []
    for name in chosen:
        profile = work / f"{name}.prof"
        seconds = workloads[name](profile)
        results.append({"workload": name, "seconds": round(seconds, 2), "by_own_time": top_entries(profile, "tottime"),
                        "by_cumulative_time": top_entries(profile, "cumulative")})
        print(f"{name:20s} {seconds:7.1f} s", flush=True)
    machine = f"{platform.processor() or platform.machine()}, {args.threads} torch threads, CPU"
    (HERE / "profiles.json").write_text(json.dumps({"machine": machine, "results": results}, indent=1) + "\n")
    lines = ["# Profiles (issue 20)", "", f"`python benchmarks/profiles.py`, one run on this machine ({machine}); "
             "cProfile, so each wall time includes the profiler's own overhead (a few percent on torch-bound code).",
             "", "| workload | wall s |", "|---|---|"]
    lines += [f"| {r['workload']} | {r['seconds']:.1f} |" for r in results]
    for r in results:
        for title, key in (("own time", "by_own_time"), ("cumulative time", "by_cumulative_time")):
            lines += ["", f"## {r['workload']}: top {TOP} by {title}", "",
                      "| function | calls | own s | cumulative s |", "|---|---|---|---|"]
            lines += [f"| `{e['function']}` | {e['calls']} | {e['own_s']:.2f} | {e['cumulative_s']:.2f} |"
                      for e in r[key]]
    (HERE / "profiles.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
