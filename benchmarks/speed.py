"""Speed of the fast schedule against the faithful one (issue 6), measured in one run on this machine.

    .venv/bin/python benchmarks/speed.py [--zoo benchmarks/zoo] [--threads 2] [--bench-faithful curves|run]

1. Schedules. Every demo-zoo model is scanned with both schedules, one after the other in this process:
   image-encoder passes, wall time, verdict and target. Every benchmark-zoo model is scanned with the
   fast schedule; its faithful verdict comes from a faithful scan run here too (``--bench-faithful run``)
   or from the faithful learning curves of ``schedule_design.py collect`` (``curves``: the same
   computation, already done; passes are then counted from the schedule, not timed).
2. Memory, each in a process of its own, read from the kernel (peak resident set): a default CLI scan
   of every demo model; scans of 5, 10 and 20 candidate classes; and the app serving one scan
   (started as ``python app.py``, the scan driven through its API with gradio_client).

Writes benchmarks/speed.md and benchmarks/speed.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from inspector.data import load_shipped_pool  # noqa: E402
from inspector.invert import ScanConfig, run_scan  # noqa: E402
from inspector.lab.truth import read_ground_truth  # noqa: E402
from inspector.prompts import open_model  # noqa: E402
from inspector.reference import Reference, decide_with_reference, reference_for, shipped_reference_path  # noqa: E402
from inspector.zoo import list_zoo  # noqa: E402

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent


def scan_row(path: Path, schedule: str, pool: torch.Tensor) -> dict[str, Any]:
    """One scan as the CLI runs it by default: with the shipped clean reference when it fits."""
    model = open_model(path, device="cpu")
    config = ScanConfig(schedule=schedule)
    reference, _ = reference_for(model, config, load_shipped_pool())
    started = time.perf_counter()
    result = run_scan(model, pool, replace(config, reference=reference))
    seconds = time.perf_counter() - started
    v = result.verdict
    return {"schedule": schedule, "seconds": round(seconds, 2), "image_passes": result.image_passes,
            "steps": sum(c["steps"] for c in result.classes), "flagged": v.flagged, "target": v.target_name,
            "suspect": v.suspect_name, "max_anomaly": v.max_anomaly}


def _reference_verdict(records: list[dict[str, Any]], kind: str, schedule: str) -> Any:
    """The default decision on cached per-class records: the excess over the shipped clean reference."""
    return decide_with_reference(records, Reference.read(shipped_reference_path("pocket-clip", kind)), schedule)[1]


def _fast_from_detection(cache: Path) -> dict[str, Any]:
    """detection.py's default scan of a zoo model (fast schedule, shipped reference), decided again here."""
    row = json.loads(cache.read_text())
    v = _reference_verdict(row["classes"], row["kind"], "fast")
    return {"schedule": "fast", "seconds": row["seconds"], "image_passes": row["image_passes"],
            "steps": sum(c["steps"] for c in row["classes"]), "flagged": v.flagged,
            "target": v.target_name, "suspect": v.suspect_name, "max_anomaly": v.max_anomaly,
            "from": "detection.py"}


def faithful_from_curves(curves: Path) -> dict[str, Any]:
    """The faithful verdict from a cached faithful-length curve run (held-out flip rates after the epoch)."""
    run = json.loads(curves.read_text())
    steps = run["steps"]
    records = [{"index": c["index"], "name": c["name"], **c["held_out"][str(steps)]} for c in run["classes"]]
    v = _reference_verdict(records, run["kind"], "faithful")
    n = len(records)
    return {"schedule": "faithful", "seconds": None, "image_passes": n * steps * 32 + steps * 32 + (n + 1) * 200,
            "steps": n * steps, "flagged": v.flagged, "target": v.target_name, "suspect": v.suspect_name,
            "max_anomaly": v.max_anomaly, "from": "curves"}


def peak_rss_of_scan(model: str, classes: str | None, threads: int) -> float:
    """Peak resident memory (GiB) of one default CLI scan in a fresh process."""
    with tempfile.TemporaryDirectory() as out:
        code = ("import resource, sys; from inspector.cli import main; rc = main(sys.argv[1:]); "
                "print('PEAK', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss); sys.exit(rc)")
        args = [sys.executable, "-c", code, "scan", model, "--out", out, "--json"]
        if classes:
            args += ["--classes", classes]
        done = subprocess.run(args, cwd=ROOT, capture_output=True, text=True,
                              env={**os.environ, "OMP_NUM_THREADS": str(threads), "PYTHONPATH": str(ROOT)})
        if done.returncode != 0:
            raise SystemExit(f"scan of {model} failed: {done.stderr[-2000:]}")
        kib = int(done.stdout.strip().splitlines()[-1].split()[1])
        return round(kib / 2**20, 2)


def peak_rss_of_app_scan(model: str, threads: int) -> dict[str, Any]:
    """Start the app, run one scan through its API, read the server's peak resident memory."""
    from gradio_client import Client

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with tempfile.TemporaryDirectory() as runs:
        env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
        app = subprocess.Popen([sys.executable, "app.py", "--port", str(port), "--runs", runs], cwd=ROOT, env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            for _ in range(240):
                try:
                    client = Client(f"http://127.0.0.1:{port}", verbose=False)
                    break
                except Exception:  # noqa: BLE001 - not up yet
                    time.sleep(0.5)
            started = time.perf_counter()
            client.predict("demo zoo", model, None, "", "shipped OOD pool", None, "", "inspector",
                           ScanConfig.schedule, 14.0, 1000, 1, [], 2.0, "flip_rate", api_name="/scan")
            seconds = time.perf_counter() - started
            status = Path(f"/proc/{app.pid}/status").read_text()
            peak_kib = int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmHWM")))
        finally:
            app.terminate()
            app.wait(timeout=30)
    return {"model": model, "peak_gib": round(peak_kib / 2**20, 2), "seconds": round(seconds, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--zoo", default=str(HERE / "zoo"))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--bench-faithful", choices=["curves", "run"], default="curves")
    parser.add_argument("--skip-memory", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    zoo = Path(args.zoo)
    pool = load_shipped_pool().pixels
    rows: list[dict[str, Any]] = []
    demo = [(entry.name, Path(entry.path), "demo") for entry in list_zoo()]
    manifest = json.loads((zoo / "manifest.json").read_text())["models"] if (zoo / "manifest.json").exists() else []
    bench = [(m["file"][:-len(".safetensors")], zoo / m["file"], "benchmark") for m in manifest]
    for name, path, group in demo + bench:
        truth = read_ground_truth(path)
        cached = zoo / "scans" / "inspector-reference" / f"{path.stem}.json"  # detection.py's default scan
        reuse = group == "benchmark" and cached.exists()
        fast = _fast_from_detection(cached) if reuse else scan_row(path, "fast", pool)
        if group == "demo" or args.bench_faithful == "run":
            faithful = scan_row(path, "faithful", pool)
        else:
            faithful = faithful_from_curves(zoo / "curves" / f"{path.stem}-lr0.1.json")
        row = {"model": name, "group": group, "truth": truth.target_name if truth else None,
               "fast": fast, "faithful": faithful}
        rows.append(row)
        print(f"{name:<34} fast {fast['seconds']:6.1f} s {fast['image_passes']:6d} passes "
              f"{str(fast['target']):<14} | faithful {faithful['seconds'] or 0:6.1f} s "
              f"{faithful['image_passes']:6d} passes {faithful['target']}", flush=True)
    memory: dict[str, Any] = {}
    if not args.skip_memory:
        memory["demo_scans_gib"] = {name: peak_rss_of_scan(name, None, args.threads) for name, _, _ in demo}
        memory["by_classes_gib"] = {n: peak_rss_of_scan("badclip-cocoop", ",".join(str(k) for k in range(n)),
                                                        args.threads) for n in (5, 10, 20)}
        memory["app_with_one_scan"] = peak_rss_of_app_scan("badclip-cocoop", args.threads)
    write(rows, memory, args)


def _ratio(rows: list[dict[str, Any]], key: str) -> float:
    fast = sum(r["fast"][key] for r in rows)
    return round(sum(r["faithful"][key] for r in rows) / fast, 2) if fast else float("nan")


def write(rows: list[dict[str, Any]], memory: dict[str, Any], args: argparse.Namespace) -> None:
    timed = [r for r in rows if r["faithful"]["seconds"] is not None]
    same_verdict = [r for r in rows if r["fast"]["flagged"] == r["faithful"]["flagged"]]
    flagged = [r for r in rows if r["faithful"]["flagged"]]
    same_target = [r for r in flagged if r["fast"]["flagged"] and r["fast"]["target"] == r["faithful"]["target"]]
    zoo = [r for r in rows if r["group"] == "benchmark"]
    zoo_same = [r for r in zoo if r in same_verdict]
    summary = {"models": len(rows), "timed_models": len(timed), "pass_ratio": _ratio(rows, "image_passes"),
               "zoo_verdict_agreement": f"{len(zoo_same)}/{len(zoo)}",
               "time_ratio": _ratio(timed, "seconds") if timed else None,
               "verdict_agreement": round(len(same_verdict) / len(rows), 4) if rows else None,
               "target_agreement_on_flagged": f"{len(same_target)}/{len(flagged)}",
               "fast_seconds_demo_max": max((r["fast"]["seconds"] for r in rows if r["group"] == "demo"), default=None),
               "threads": args.threads, "cpu": platform.processor() or platform.machine(), "torch": torch.__version__,
               "memory": memory, "max_rss_this_process_gib": round(
                   resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2)}
    (HERE / "speed.json").write_text(json.dumps({"summary": summary, "rows": rows}, indent=1) + "\n")
    lines = ["# Fast vs faithful schedule (issue 6)", "",
             f"`python benchmarks/speed.py --threads {args.threads} --bench-faithful {args.bench_faithful}`, "
             f"CPU ({summary['cpu']}), torch {summary['torch']}.", "",
             f"- image-encoder passes, all {len(rows)} models: faithful / fast = **{summary['pass_ratio']}x**",
             f"- wall time, the {len(timed)} models scanned with both schedules in this run: faithful / fast = "
             f"**{summary['time_ratio']}x**",
             f"- same verdict: **{len(same_verdict)}/{len(rows)}** (the benchmark zoo alone: "
             f"**{summary['zoo_verdict_agreement']}**); same target on the faithful schedule's flagged "
             f"models: **{summary['target_agreement_on_flagged']}**",
             f"- slowest fast scan of a shipped demo model: **{summary['fast_seconds_demo_max']} s**", ""]
    if memory:
        lines += ["Peak resident memory (each in a fresh process):", "",
                  "| what | peak |", "|---|---|"]
        lines += [f"| default CLI scan of {k} | {v} GiB |" for k, v in memory["demo_scans_gib"].items()]
        lines += [f"| scan of badclip-cocoop, {k} candidate classes | {v} GiB |"
                  for k, v in memory["by_classes_gib"].items()]
        app = memory["app_with_one_scan"]
        lines += [f"| the app (python app.py) serving one scan of {app['model']} ({app['seconds']} s) | "
                  f"{app['peak_gib']} GiB |", ""]
    lines += ["| model | truth | fast: s | passes | verdict | faithful: s | passes | verdict | same |",
              "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        f, g = r["fast"], r["faithful"]
        same = "yes" if f["flagged"] == g["flagged"] and (not g["flagged"] or f["target"] == g["target"]) else "**no**"
        faithful_seconds = f"{g['seconds']:.1f}" if g["seconds"] is not None else "(curves)"
        lines.append(f"| {r['model']} | {r['truth'] or 'clean'} | {f['seconds']:.1f} | {f['image_passes']:,} | "
                     f"{f['target'] or '-'} | {faithful_seconds} | {g['image_passes']:,} | {g['target'] or '-'} | "
                     f"{same} |")
    (HERE / "speed.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
