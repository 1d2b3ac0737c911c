"""The default scan now against the default scan of an earlier commit (issue 18: "a default scan stays within 20% of
today's time", today being the day the issue was filed), each a whole CLI process as a user runs it, in one run.

    .venv/bin/python benchmarks/scan_since.py [--since 64345b3] [--repeats 2] [--threads 2]

The earlier commit (default: 64345b3, the last one before issue 18's first change) is exported with ``git archive``
into a temporary folder, with its own assets (pocket CLIP, pool, shipped references), and run with this checkout's
interpreter. Every demo model is scanned ``repeats`` times by each, the two alternating so that a drift of the
machine's speed lands on both; each side's figure is its median. The verdicts (flag, suspect, index) are read from
each report.json. Writes benchmarks/scan_since.md and benchmarks/scan_since.json. Run it alone.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
SINCE = "64345b3"  # issue 18 was filed after this commit; 6e29ce9 is its first change


def full_hash(commit: str) -> str:
    return subprocess.run(["git", "rev-parse", commit], cwd=ROOT, check=True, capture_output=True,
                          text=True).stdout.strip()


def export(commit: str, into: Path) -> str:
    """``commit``'s tree in ``into``; its full hash."""
    full = full_hash(commit)
    archive = subprocess.run(["git", "archive", full], cwd=ROOT, check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    return full


def cli_scan(tree: Path, model: str, out: Path, threads: int) -> dict[str, Any]:
    """``python -m inspector scan assets/zoo/<model>.safetensors`` in ``tree``: wall seconds and its verdict."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads), "PYTHONPATH": str(tree)}
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "inspector", "scan", f"assets/zoo/{model}.safetensors",
                           "--out", str(out), "--overwrite"], cwd=tree, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"scan of {model} in {tree} failed:\n{done.stderr[-2000:]}")
    report = json.loads((out / "report.json").read_text())
    return {"seconds": round(seconds, 2), "flagged": report["flagged"], "suspect": report["suspect"],
            "max_anomaly": round(report["max_anomaly"], 2), "family": report.get("suspect_family")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--since", default=SINCE, help="the earlier commit (default: %(default)s)")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    models = sorted(path.stem for path in (ROOT / "assets" / "zoo").glob("*.safetensors"))
    now = full_hash("HEAD")
    with tempfile.TemporaryDirectory() as folder:
        then_tree = Path(folder) / "then"
        then_tree.mkdir()
        then = export(args.since, then_tree)
        trees = {"then": then_tree, "now": ROOT}
        cli_scan(ROOT, models[0], Path(folder) / "warm-up", args.threads)  # first-call costs (disk cache) on no side
        rows = []
        for model in models:
            runs: dict[str, list[dict[str, Any]]] = {"then": [], "now": []}
            for _ in range(args.repeats):
                for side, tree in trees.items():
                    runs[side].append(cli_scan(tree, model, Path(folder) / side / model, args.threads))
            median = {side: statistics.median(r["seconds"] for r in done) for side, done in runs.items()}
            rows.append({"model": model, **{side: {**done[-1], "seconds": median[side],
                                                  "all_seconds": [r["seconds"] for r in done]}
                                           for side, done in runs.items()},
                         "ratio": round(median["now"] / median["then"], 3)})
            print(json.dumps(rows[-1]), flush=True)
    totals = {side: round(sum(r[side]["seconds"] for r in rows), 1) for side in ("then", "now")}
    summary = {"since": then, "now": now, "models": len(rows), "repeats": args.repeats, "seconds": totals,
               "ratio": round(totals["now"] / totals["then"], 3), "worst_ratio": max(r["ratio"] for r in rows),
               "threads": args.threads, "machine": platform.machine()}
    (HERE / "scan_since.json").write_text(json.dumps({"summary": summary, "rows": rows}, indent=1) + "\n")
    lines = ["# The default scan now against the default scan when issue 18 was filed", "",
             f"`python benchmarks/scan_since.py --since {args.since} --repeats {args.repeats} --threads "
             f"{args.threads}`, CPU ({platform.machine()}), one run: each demo model scanned by `python -m inspector "
             f"scan` as a whole process, {args.repeats} times by each commit, alternating; the median of each. "
             f"*then*: {then[:7]} (the last commit before issue 18's first change; its fast schedule, no quick "
             f"family, its shipped references); *now*: {now[:7]} (the colour and patch families, the shipped "
             "references of today).", "",
             f"- all {len(rows)} models: now / then = **{summary['ratio']:.2f}x** ({totals['now']:.0f} s / "
             f"{totals['then']:.0f} s); the highest of one model: {summary['worst_ratio']:.2f}x", "",
             "| model | then: s | verdict then | now: s | verdict now | now / then |", "|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['model']} | {r['then']['seconds']:.1f} | {_verdict(r['then'])} | {r['now']['seconds']:.1f}"
                     f" | {_verdict(r['now'])} | {r['ratio']:.2f}x |")
    (HERE / "scan_since.md").write_text("\n".join(lines) + "\n")


def _verdict(scan: dict[str, Any]) -> str:
    family = f", {scan['family']}" if scan.get("family") else ""
    flagged = "flagged " if scan["flagged"] else "clean; top "
    return f"{flagged}{scan['suspect']}{family} ({scan['max_anomaly']:.2f})"


if __name__ == "__main__":
    main()
