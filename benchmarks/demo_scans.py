"""Scan every shipped demo-zoo model with the CLI, as a user would; writes demo_scans.md and demo_scans.json.

    .venv/bin/python benchmarks/demo_scans.py [--method inspector] [--threads 2]

Each model goes through ``python -m inspector scan NAME --out benchmarks/demo_scans/NAME --json``
with the default settings; its report folder (report.json, trigger PNGs) is kept beside this file
(report.html is not committed: it inlines plotly.js). The check (issue 4): clean models not
flagged, backdoored ones flagged with their ground-truth target.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from inspector.zoo import list_zoo  # noqa: E402

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--method", default="inspector", choices=["inspector", "neural-cleanse", "pixel-backdoor"])
    parser.add_argument("--schedule", default=None, choices=["fast", "faithful"], help="default: the engine's")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    folder = HERE / ("demo_scans" if args.method == "inspector" else f"demo_scans_{args.method}")
    schedule = ["--schedule", args.schedule] if args.schedule else []
    rows = []
    for entry in list_zoo():
        out = folder / entry.name
        if out.exists():
            shutil.rmtree(out)
        env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "PYTHONPATH": str(ROOT)}
        done = subprocess.run([sys.executable, "-m", "inspector", "scan", entry.name, "--method", args.method,
                               *schedule, "--out", str(out), "--json"], cwd=ROOT, env=env, capture_output=True,
                              text=True)
        if done.returncode != 0:
            raise SystemExit(f"scan of {entry.name} failed: {done.stderr}")
        summary = json.loads(done.stdout)
        report = json.loads((out / "report.json").read_text())
        right = (not summary["flagged"]) if entry.attack is None else (summary["flagged"]
                                                                       and summary["target"] == entry.target)
        row = {"model": entry.name, "kind": entry.kind, "attack": entry.attack, "true_target": entry.target,
               "flagged": summary["flagged"], "predicted_target": summary["target"], "suspect": summary["suspect"],
               "max_anomaly": summary["max_anomaly"], "suspect_flip_rate": report["suspect_flip_rate"],
               "true_target_flip_rate": next((c["flip_rate"] for c in report["classes"] if c["name"] == entry.target),
                                             None),
               "epsilon_255": round(report["settings"]["epsilon"] * 255, 2), "seconds": summary["seconds"],
               "schedule": report["settings"]["schedule"],
               "right": right}
        rows.append(row)
        (out / "report.html").unlink(missing_ok=True)
        print(row, flush=True)
    (folder.parent / f"{folder.name}.json").write_text(json.dumps(rows, indent=2) + "\n")
    lines = [f"# Demo zoo scanned by the CLI ({args.method})", "",
             f"`python benchmarks/demo_scans.py --method {args.method}{' '.join(['', *schedule])}`: "
             "`python -m inspector scan NAME` with the "
             f"default settings (ε = {rows[0]['epsilon_255']}/255 on the 64-px pocket CLIP, 1,000 OOD images of "
             f"which 200 held out, {rows[0]['schedule']} schedule), {args.threads} CPU thread(s). "
             f"Reports: [{folder.name}/]({folder.name}/).", "",
             "| model | truth | flagged | predicted target | top anomaly (class) | its flip rate | "
             "true target's flip rate | s | right |", "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        truth = f"{r['attack']} -> {r['true_target']}" if r["attack"] else "clean"
        true_rate = f"{r['true_target_flip_rate']:.0%}" if r["true_target_flip_rate"] is not None else "-"
        lines.append(f"| {r['model']} | {truth} | {'yes' if r['flagged'] else 'no'} | {r['predicted_target'] or '-'} | "
                     f"{r['max_anomaly']:.2f} ({r['suspect']}) | {r['suspect_flip_rate']:.0%} | {true_rate} | "
                     f"{r['seconds']:.0f} | {'yes' if r['right'] else '**no**'} |")
    (folder.parent / f"{folder.name}.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
