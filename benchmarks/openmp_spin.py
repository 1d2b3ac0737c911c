"""Torch in the app's engine thread after another thread ran torch, with libgomp's default spin and the app's.

The app's engine runs in a thread of its own (inspector/ui/background.py) while Gradio's worker threads also run
torch (a model opened, pictures drawn), and every thread that ran an OpenMP region keeps a team. Once the teams
hold more threads than there are cores, libgomp lets an idle worker spin only 100 times before it sleeps, so each
small op of a prompt-tuning step waits for a wake-up. app.py sets OMP_WAIT_POLICY=ACTIVE and GOMP_SPINCOUNT=300000
(a spin of 1,000 then; the 3 ms before sleeping stays libgomp's default). Each case runs in a fresh process (libgomp
reads its settings once): CoOp prompt steps (20 classes, 32 image features, AdamW) and the teaching implant through
the app's own handler (handlers.run_implant: the model opened in the calling thread, the engine in its own).

    python benchmarks/openmp_spin.py [--steps 300] [--threads 2] [--no-implant]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))

from app import OPENMP_SETTINGS  # noqa: E402

CASES = {  # case -> (what runs, where torch ran before it)
    "steps-main": "prompt steps in the main thread (as the CLI runs them)",
    "steps-thread-alone": "prompt steps in a thread; the thread that loaded the model has ended",
    "steps-thread-beside": "prompt steps in a thread; the main thread, still alive, loaded the model",
    "implant-handler": "the teaching implant (Blended into clean-coop, seed 0) through the app's handler",
}


def child(case: str, steps: int, threads: int) -> dict[str, float]:
    """One case in this process: seconds per prompt step, or the implant's seconds."""
    import torch

    torch.set_num_threads(threads)
    from inspector.prompts import open_model
    from inspector.zoo import resolve_model

    if case == "implant-handler":
        from inspector.ui import handlers
        from inspector.ui.workspace import Workspace

        runs = Path(tempfile.mkdtemp())
        ws = Workspace(runs_root=runs, allowed_roots=(runs,))
        started = time.perf_counter()
        for _ in handlers.run_implant(ws, "clean-coop", "blended", handlers.SURPRISE, 0):
            pass
        return {"seconds": round(time.perf_counter() - started, 2)}
    holder: dict[str, object] = {}

    def load() -> None:
        holder["model"] = open_model(resolve_model("clean-coop"), device="cpu")

    def work() -> None:
        model = holder["model"]
        optimizer = torch.optim.AdamW([model.learner.ctx], lr=1e-3)
        features = torch.nn.functional.normalize(torch.rand(32, model.text_features().shape[-1]), dim=-1)

        def step() -> None:
            loss = model.logits_from_features(features).logsumexp(1).mean()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()

        for _ in range(10):
            step()
        started = time.perf_counter()
        for _ in range(steps):
            step()
        holder["ms"] = round((time.perf_counter() - started) / steps * 1000, 2)

    if case == "steps-main":
        load()
        work()
    else:
        if case == "steps-thread-beside":
            load()
        else:
            loader = threading.Thread(target=load)
            loader.start()
            loader.join()
        worker = threading.Thread(target=work)
        worker.start()
        worker.join()
    return {"ms_per_step": holder["ms"]}


def run_case(case: str, settings: str, steps: int, threads: int) -> dict[str, float]:
    env = {key: value for key, value in os.environ.items() if key not in OPENMP_SETTINGS}
    if settings == "app":
        env.update(OPENMP_SETTINGS)
    out = subprocess.run([sys.executable, __file__, "--child", case, "--steps", str(steps), "--threads", str(threads)],
                         env=env, cwd=ROOT, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=300, help="timed prompt steps per case (default: 300)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (default: 2)")
    parser.add_argument("--no-implant", action="store_true", help="leave out the implant cases (about 2 minutes)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.steps, args.threads)))
        return
    rows = []
    for case in [c for c in CASES if not (args.no_implant and c.startswith("implant"))]:
        for settings in ("libgomp default", "app"):
            result = run_case(case, settings, args.steps, args.threads)
            rows.append({"case": case, "what": CASES[case], "settings": settings, **result})
            print(rows[-1], flush=True)
    record = {"steps": args.steps, "threads": args.threads, "machine": platform.processor() or platform.machine(),
              "cpus": os.cpu_count(), "app_settings": OPENMP_SETTINGS, "rows": rows}
    (HERE / "openmp_spin.json").write_text(json.dumps(record, indent=1) + "\n")
    shown = ", ".join(f"{k}={v}" for k, v in OPENMP_SETTINGS.items())
    lines = ["# The app's engine thread and libgomp's spin (issue 20)", "",
             f"`python benchmarks/openmp_spin.py`, one run, {args.threads} torch threads, {os.cpu_count()} CPUs, each "
             f"case in a fresh process; *app* = the settings app.py makes before torch loads ({shown}).", "",
             "| case | libgomp default | app |", "|---|---|---|"]
    for case in dict.fromkeys(row["case"] for row in rows):
        cells = []
        for settings in ("libgomp default", "app"):
            row = next(r for r in rows if r["case"] == case and r["settings"] == settings)
            cells.append(f"{row['ms_per_step']:.1f} ms a step" if "ms_per_step" in row else f"{row['seconds']:.1f} s")
        lines.append(f"| {CASES[case]} | {cells[0]} | {cells[1]} |")
    (HERE / "openmp_spin.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
