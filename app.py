"""Launch the inspector app (the README's first command): ``python app.py [--host] [--port] [--share]``.

Only wiring: the page is built by ``inspector.ui``, the work is done by the engine. Binds to
127.0.0.1 unless told otherwise; ``--tour`` prints the command-line tour of the pocket world instead.
"""

from __future__ import annotations

import argparse
import ctypes
import ctypes.util
import os
import sys
from pathlib import Path

OPENMP_SETTINGS = {"OMP_WAIT_POLICY": "ACTIVE", "GOMP_SPINCOUNT": "300000"}  # keep_openmp_workers_ready
MALLOC_ARENAS = 2  # bound_malloc_arenas
M_ARENA_MAX = -8  # glibc's mallopt parameter number
MAX_UPLOAD = "200mb"  # prompt learners are a few MB; OOD zips of 1,000 images are tens of MB


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="app.py", description="inspector: backdoor scan for prompt-tuned CLIP")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    parser.add_argument("--port", type=int, default=7860, help="port (default 7860)")
    parser.add_argument("--share", action="store_true", help="also open a public Gradio share link")
    parser.add_argument("--device", default=None, help="torch device for the engine (default: cuda if available)")
    parser.add_argument("--runs", type=Path, default=Path("runs"), help="folder for reports and repaired models")
    parser.add_argument("--allow-path", type=Path, action="append", default=[],
                        help="a folder the UI may read models and image pools from (repeatable)")
    parser.add_argument("--max-upload", default=MAX_UPLOAD,
                        help=f"largest file a browser may upload, e.g. 50mb (default {MAX_UPLOAD})")
    parser.add_argument("--tour", action="store_true", help="print the command-line tour of the pocket world and exit")
    return parser.parse_args(argv)


def calm_queue(app: object) -> None:
    """Gradio's queue looks for new events every 1 ms on Linux (progress every 10 ms): 5% of a core while the app
    sits idle (0.76 s of CPU in 15 s, 0.12 s with these values; benchmarks/app_profile.md), taken from the engine on
    a laptop. Its Windows values keep a job's start within 50 ms."""
    queue = getattr(app, "_queue", None)
    if queue is not None and hasattr(queue, "sleep_when_free"):
        queue.sleep_when_free = 0.05
        queue.progress_update_sleep_when_free = 0.1


def keep_openmp_workers_ready() -> None:
    """Before torch is loaded. The engine runs in a thread of its own while Gradio's threads run torch too (a model
    opened, pictures drawn), and each such thread keeps an OpenMP team: once they hold more threads than there are
    cores, libgomp lets a worker spin only 100 times before it sleeps, so each of a step's many small ops waits for
    a wake-up (benchmarks/openmp_spin.md). With the active policy that spin is 1,000; GOMP_SPINCOUNT keeps
    libgomp's default 3 ms before an idle worker sleeps, so an idle app still takes no CPU. A user's own settings
    win."""
    for name, value in OPENMP_SETTINGS.items():
        os.environ.setdefault(name, value)


def bound_malloc_arenas() -> bool:
    """Before any thread starts. Gradio serves each request from a pool of worker threads, and glibc gives each
    thread that allocates a malloc arena of its own (up to 8 per core) which keeps its freed memory: the app's
    resident memory crept up 19% over 50 scans, and stayed flat with two arenas at the same speed
    (benchmarks/app_memory_before.md, app_memory.md). A user's MALLOC_ARENA_MAX wins; without glibc, nothing."""
    if "MALLOC_ARENA_MAX" in os.environ or not sys.platform.startswith("linux"):
        return False
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else None
    except OSError:
        return False
    mallopt = getattr(libc, "mallopt", None)
    return bool(mallopt is not None and mallopt(M_ARENA_MAX, MALLOC_ARENAS) == 1)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    if args.tour:
        from inspector.cli import main as cli_main

        return cli_main([*(["--device", args.device] if args.device else []), "demo"])
    keep_openmp_workers_ready()
    bound_malloc_arenas()
    from inspector.errors import InputError
    from inspector.pipeline import warm_up
    from inspector.ui import CSS, AppSettings, build_app, theme

    settings = AppSettings(runs_root=args.runs, allowed_roots=args.allow_path, device=args.device)
    app = build_app(settings)
    try:
        warm_up(args.device)  # so the first Scan shows its first trigger as soon as the later ones do
    except InputError as exc:  # a broken install: the page says the same when the model is opened, and serves
        print(f"note: {exc}", file=sys.stderr)
    app.queue(default_concurrency_limit=1)
    calm_queue(app)
    app.launch(server_name=args.host, server_port=args.port, share=args.share, css=CSS, theme=theme(),
               allowed_paths=[str(settings.runs_root.resolve())], max_file_size=args.max_upload)
    return 0


if __name__ == "__main__":
    sys.exit(main())
