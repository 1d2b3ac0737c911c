"""Where the app's time goes while it serves a scan (issue 20): py-spy on a real ``python app.py`` process.

    .venv/bin/python benchmarks/app_profile.py [--model badclip-cocoop] [--threads 2]

The app is started as a user starts it, warmed by one default scan driven through the page's Scan events
with gradio_client (as benchmarks/speed.py does), then py-spy samples every thread of the server 50 times a
second while a second scan runs, keeping only the samples of threads that are on a CPU (not sleeping on a
lock, a queue, the GIL or a socket). A thread's working seconds are its samples over the rate, its waiting
seconds the rest of the scan; its work is split into its top functions. That tells the engine's own time from
the time it waits, and what the server does meanwhile. Then, in this process: what one live update costs
Gradio to build, through an event on every output and through the scan's live event, and the CPU an idle app
takes with and without app.py's ``calm_queue``.

Needs py-spy (benchmarks/requirements.txt). Writes benchmarks/app_profile.md and app_profile.json (with
``--threads N`` other than 2: app_profile-threadsN.md / .json). Run it alone.
"""

from __future__ import annotations

import argparse
import collections
import json
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

from speed import app_process, app_scan  # noqa: E402

RATE = 50  # samples per second
TOP = 12


def _function(frame: str) -> str:
    """py-spy's ``name (file:line)`` -> ``name (file)``, the path cut after site-packages or the repository."""
    name, _, where = frame.partition(" (")
    where = where.rstrip(")").rsplit(":", 1)[0].split("site-packages/")[-1].split(f"{HERE.parent.name}/")[-1]
    return f"{name} ({where})" if where else name


def summarise(raw: Path, seconds: float) -> list[dict[str, Any]]:
    """Per thread: working seconds (samples on a CPU), waiting seconds (the rest of ``seconds``), top functions."""
    threads: dict[str, dict[str, Any]] = {}
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack:
            continue
        frames = stack.split(";")
        thread = frames[0].split(": ", 1)[-1]
        entry = threads.setdefault(thread, {"samples": 0, "own": collections.Counter(),
                                            "inspector": collections.Counter()})
        n = int(count)
        entry["samples"] += n
        entry["own"][_function(frames[-1])] += n
        ours = [f for f in frames[1:] if "inspector/" in f]
        entry["inspector"][_function(ours[-1]) if ours else "(outside inspector)"] += n
    rows = []
    for thread, entry in sorted(threads.items(), key=lambda item: -item[1]["samples"]):
        working = entry["samples"] / RATE
        rows.append({"thread": thread, "working_s": round(working, 1),
                     "waiting_s": round(max(0.0, seconds - working), 1),
                     "top_own": [(name, round(n / RATE, 2)) for name, n in entry["own"].most_common(TOP)],
                     "top_inspector": [(name, round(n / RATE, 2)) for name, n in entry["inspector"].most_common(TOP)]})
    return rows


def update_costs(repeats: int = 40) -> dict[str, float]:
    """What one update of a running scan costs the server to build (Gradio's postprocessing, in this process): the
    scan's start event (every output of the page) against its live event (ui/stages.py), each with an update that
    leaves every output as it is, as most live updates leave most of the page; mean milliseconds."""
    import asyncio

    import gradio as gr
    from gradio.state_holder import SessionState

    from inspector.ui.layout import build_app

    app = build_app()
    events = {fn.api_name: fn for fn in app.fns.values() if fn.api_name}

    async def mean_ms(fn: Any) -> float:
        state = SessionState(app)
        started = time.perf_counter()
        for _ in range(repeats):
            await app.postprocess_data(fn, [gr.skip() for _ in fn.outputs], state)
        return 1000 * (time.perf_counter() - started) / repeats

    start, live = events["page_scan"], events["page_scan_live"]
    return {"every_output_n": len(start.outputs), "every_output_ms": round(asyncio.run(mean_ms(start)), 1),
            "live_n": len(live.outputs), "live_ms": round(asyncio.run(mean_ms(live)), 1)}


def idle_cpu(seconds: float = 15.0) -> dict[str, float]:
    """CPU seconds an idle app takes in ``seconds`` (this process, the page served on loopback, no client), with
    Gradio's queue polling as it comes and as app.py's ``calm_queue`` sets it."""
    import socket

    from app import calm_queue
    from inspector.ui.layout import build_app

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    app = build_app()
    app.queue(default_concurrency_limit=1)
    app.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
    try:
        time.sleep(3.0)
        measured = {}
        for name in ("gradio_default", "calm_queue"):
            if name == "calm_queue":
                calm_queue(app)
                time.sleep(1.0)
            before = time.process_time()
            time.sleep(seconds)
            measured[name] = round(time.process_time() - before, 2)
    finally:
        app.close()
    return {"seconds": seconds, **measured}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="badclip-cocoop")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not Path(spy).exists():
        raise SystemExit("py-spy is not installed: pip install -r benchmarks/requirements.txt")
    with tempfile.TemporaryDirectory() as work:
        runs = Path(work) / "runs"
        runs.mkdir()
        raw = Path(work) / "app.raw"
        with app_process(args.threads, runs) as (client, pid):
            app_scan(client, args.model)  # a first scan warms the app (the page's own first scan does the same)
            sampler = subprocess.Popen([spy, "record", "-p", str(pid), "-o", str(raw), "-f", "raw", "-r", str(RATE),
                                        "--threads", "--nonblocking"],
                                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            time.sleep(1.0)
            started = time.perf_counter()
            scan = app_scan(client, args.model)
            sampler.send_signal(signal.SIGINT)  # py-spy writes its samples when interrupted
            sampler.wait(timeout=60)
            sampled = time.perf_counter() - started + 1.0
        rows = summarise(raw, sampled)
    costs, idle = update_costs(), idle_cpu()
    machine = f"{platform.processor() or platform.machine()}, {args.threads} torch threads, CPU"
    name = "app_profile" if args.threads == 2 else f"app_profile-threads{args.threads}"
    (HERE / f"{name}.json").write_text(json.dumps({"machine": machine, "scan": scan, "threads": rows,
                                                   "update_costs": costs, "idle_cpu": idle}, indent=1) + "\n")
    lines = ["# Where the app's time goes during a scan (issue 20)", "",
             f"`python benchmarks/app_profile.py --model {args.model} --threads {args.threads}`, one run on this "
             f"machine ({machine}): py-spy at {RATE} Hz on a real app process, every thread while it was on a CPU, "
             f"from 1 s before the request to the end of a second default scan of {args.model} driven through the "
             f"page's Scan events by gradio_client ({sampled:.1f} s).", "",
             f"The scan: {scan['seconds']} s from request to last update, first trigger picture at "
             f"{scan['first_picture_s']} s, every class on the chart at {scan['every_class_s']} s, "
             f"{scan['updates']} updates sent.", "",
             "| thread | working s | waiting s |", "|---|---|---|"]
    lines += [f"| {r['thread']} | {r['working_s']} | {r['waiting_s']} |" for r in rows]
    lines += ["", "## What the server spends besides the engine (measured in this run, in the profiler's process)", "",
              f"- One live update of a scan, as Gradio builds it: {costs['every_output_ms']} ms through an event on "
              f"every output of the page ({costs['every_output_n']}), {costs['live_ms']} ms through the scan's live "
              f"event ({costs['live_n']} outputs; ui/stages.py), an update leaving every output as it is, mean of "
              f"40.",
              f"- An idle app, {idle['seconds']:.0f} s with no client: {idle['gradio_default']} s of CPU with Gradio's "
              f"queue polling every 1 ms, {idle['calm_queue']} s with app.py's `calm_queue` (every 50 ms)."]
    for r in rows[:3]:
        lines += ["", f"## {r['thread']}: top functions while working (own seconds)", "",
                  "| function | s |", "|---|---|", *(f"| `{name}` | {s} |" for name, s in r["top_own"])]
        lines += ["", "| deepest inspector frame | s |", "|---|---|",
                  *(f"| `{name}` | {s} |" for name, s in r["top_inspector"])]
    (HERE / f"{name}.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
