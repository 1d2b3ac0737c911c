"""Fleet throughput (issue 22): the dev zoo vetted by ``python -m inspector fleet scan`` as a user runs it, with 1
and 2 workers on a local Ray runtime, and on a two-node Ray cluster on loopback (a head and a second ``ray start
--address`` on this machine, one CPU each); every model's numbers compared with its recorded solo scan
(benchmarks/detection_dev.json, the same default settings).

    .venv/bin/python benchmarks/fleet.py [--two-node-models 12]

Writes benchmarks/fleet.md and fleet.json. One fleet run at a time (2 cores: never two heavy jobs at once).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
DEV = HERE / "zoos" / "dev"
RAY = Path(sys.executable).with_name("ray")
PORT = "6390"
ENV = {**os.environ, "PYTHONPATH": str(ROOT), "RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "disabled"}


def fleet(source: Path, out: Path, *extra: str) -> tuple[dict[str, Any], float]:
    """One ``fleet scan`` process: its JSON summary and its wall time (process start to exit)."""
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "inspector", "--device", "cpu", "fleet", "scan", str(source),
                           "--out", str(out), "--json", *extra], cwd=ROOT, env=ENV, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"fleet scan failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return json.loads(done.stdout), seconds


def solo_rows() -> dict[str, dict[str, Any]]:
    rows = json.loads((HERE / "detection_dev.json").read_text())["scans"]["inspector + reference"]
    return {r["model"]: r for r in rows}


def compared(lines: list[dict[str, Any]], solo: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """Each fleet line beside the solo scan of the same model: equal verdict, target and index?"""
    out = []
    for line in lines:
        row = solo[line["model"]]
        same = (line["flagged"] == row["flagged"] and line["target"] == row["predicted_target"]
                and line["max_anomaly"] == row["max_anomaly"])
        out.append({**{k: line.get(k) for k in ("model", "verdict", "target", "max_anomaly", "probability",
                                                  "seconds", "worker")},
                    "backdoored": row["backdoored"], "solo_max_anomaly": row["max_anomaly"], "same_as_solo": same})
    return out


def two_node_run(models: list[Path], work: Path) -> tuple[dict[str, Any], float, str]:
    """A head node and a second node on this machine (1 CPU each), a manifest of ``models``, the fleet on both."""
    manifest = work / "two-node.csv"
    manifest.write_text("path\n" + "".join(f"{m}\n" for m in models))
    subprocess.run([str(RAY), "stop", "--force"], env=ENV, capture_output=True)
    try:
        for argv in (["start", "--head", "--num-cpus", "1", "--port", PORT, "--include-dashboard", "false"],
                     ["start", "--address", f"127.0.0.1:{PORT}", "--num-cpus", "1"]):
            subprocess.run([str(RAY), *argv], env=ENV, check=True, capture_output=True)
        time.sleep(5)
        status = subprocess.run([str(RAY), "status"], env=ENV, capture_output=True, text=True).stdout
        summary, seconds = fleet(manifest, work / "two-node", "--address", f"127.0.0.1:{PORT}", "--cpus-per-scan", "1")
    finally:
        subprocess.run([str(RAY), "stop", "--force"], env=ENV, capture_output=True)
    return summary, seconds, status


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--two-node-models", type=int, default=12, help="dev-zoo models in the two-node run")
    parser.add_argument("--table-only", action="store_true", help="remake fleet.md from fleet.json")
    args = parser.parse_args()
    if args.table_only:
        write_table(json.loads((HERE / "fleet.json").read_text()))
        return
    solo = solo_rows()
    result: dict[str, Any] = {"machine": f"{os.cpu_count()} CPU cores, no GPU", "runs": {}}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for workers in (1, 2):
            summary, seconds = fleet(DEV, work / f"w{workers}", "--workers", str(workers))
            rows = compared(summary["lines"], solo)
            result["runs"][f"{workers} worker(s)"] = {
                "models": len(rows), "seconds": round(seconds, 1),
                "models_per_minute": round(len(rows) / seconds * 60, 2),
                "same_as_solo": sum(r["same_as_solo"] for r in rows), "errors": summary["errors"], "rows": rows}
            print(f"{workers} worker(s): {len(rows)} models in {seconds:.0f} s", flush=True)
        models = sorted(DEV.glob("*.safetensors"))[: args.two_node_models]
        summary, seconds, status = two_node_run(models, work)
        rows = compared(summary["lines"], solo)
        nodes = sorted({r["worker"].split(" node ")[-1] for r in rows})
        result["runs"]["two nodes on loopback"] = {
            "models": len(rows), "seconds": round(seconds, 1), "models_per_minute": round(len(rows) / seconds * 60, 2),
            "same_as_solo": sum(r["same_as_solo"] for r in rows), "errors": summary["errors"], "nodes": nodes,
            "per_node": {n: sum(r["worker"].endswith(n) for r in rows) for n in nodes}, "ray_status": status,
            "rows": rows}
    (HERE / "fleet.json").write_text(json.dumps(result, indent=1) + "\n")
    write_table(result)


def write_table(result: dict[str, Any]) -> None:
    runs = result["runs"]
    lines = ["# Vetting a fleet (issue 22)", "",
             "Made by `.venv/bin/python benchmarks/fleet.py` on this machine "
             f"({result['machine']}): `python -m inspector fleet scan` run as a user runs it (process start to exit, "
             "Ray's start included), default scan settings, on the dev zoo (`benchmarks/zoos/dev`, "
             f"{runs['1 worker(s)']['models']} learners). Every model's line is compared with its recorded solo scan "
             "(`detection_dev.json`, made by `benchmarks/detection.py` with the same settings): verdict, target and "
             "top anomaly index equal.", "",
             "| run | models | wall time | models per minute | same as solo | errors |", "|---|---|---|---|---|---|"]
    for name, run in runs.items():
        lines.append(f"| {name} | {run['models']} | {run['seconds']:.0f} s | {run['models_per_minute']:.2f} | "
                     f"{run['same_as_solo']} of {run['models']} | {run['errors']} |")
    one, two = runs["1 worker(s)"], runs["2 worker(s)"]
    node = runs["two nodes on loopback"]
    ratio = two["models_per_minute"] / one["models_per_minute"]
    lines += ["", f"2 workers against 1 on the same 2 cores: {ratio:.2f}× the throughput. Each of 2 workers runs its "
              "scan on 1 core where 1 worker's scan has 2; "
              + ("a scan does not split perfectly over 2 threads, so 2 one-core scans at once finish more per minute."
                 if ratio > 1.05 else "on 2 cores that gains little: add workers where a node has cores to spare."),
              "",
              f"Two nodes on loopback: a head node and a second `ray start --address 127.0.0.1:{PORT}` on this "
              f"machine, 1 CPU each, the first {node['models']} dev-zoo models given as a CSV manifest, "
              "`--address 127.0.0.1:6390 --cpus-per-scan 1`. Tasks ran on both nodes: "
              + ", ".join(f"node {n}: {c} model(s)" for n, c in node["per_node"].items()) + ".", "",
              "No GPU was lent to this session (the device tool's status: not drawn), so there is no GPU row.", "",
              "## Every model (2 workers)", "",
              "| model | backdoored | verdict | target | index | solo index | p | seconds | worker |",
              "|---|---|---|---|---|---|---|---|---|"]
    for r in two["rows"]:
        p = f"{r['probability']:.2f}" if r["probability"] is not None else "—"
        lines.append(f"| {r['model']} | {'yes' if r['backdoored'] else 'no'} | {r['verdict']} | {r['target'] or '—'} | "
                     f"{r['max_anomaly']:.4f} | {r['solo_max_anomaly']:.4f} | {p} | {r['seconds']:.1f} | "
                     f"{r['worker']} |")
    lines += ["", "## The two-node run", "", "| model | verdict | index | solo index | seconds | worker and node |",
              "|---|---|---|---|---|---|"]
    lines += [f"| {r['model']} | {r['verdict']} | {r['max_anomaly']:.4f} | {r['solo_max_anomaly']:.4f} | "
              f"{r['seconds']:.1f} | {r['worker']} |" for r in node["rows"]]
    lines += ["", "`ray status` during the two-node run:", "", "```", node["ray_status"].strip(), "```", ""]
    (HERE / "fleet.md").write_text("\n".join(lines))


if __name__ == "__main__":
    main()
