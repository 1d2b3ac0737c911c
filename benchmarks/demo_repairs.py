"""Repair every backdoored demo-zoo model with the CLI, from its scan report; writes demo_repairs.md/json.

    .venv/bin/python benchmarks/demo_scans.py      # first: the reports
    .venv/bin/python benchmarks/demo_repairs.py [--threads 2] [--epochs 10] [--lr 2e-3]

Each backdoored model goes through ``python -m inspector repair NAME --report
benchmarks/demo_scans/NAME/report.json --out <tmp> --json``, against the class its scan flagged
(or, when it was not flagged, the top suspect, named with ``--target``). ``asr`` is the model's
own ground-truth trigger on the non-target test images; ``trigger_asr`` the reconstructed one.
Each repaired file is then scanned afresh with the default ``python -m inspector scan FILE --json``, as a
defender would check a repair: the rescan's verdict, suspect class and index are recorded beside the repair.
The repaired files are not kept.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.speed import cli_process  # noqa: E402
from inspector.repair import RepairConfig  # noqa: E402
from inspector.zoo import list_zoo  # noqa: E402

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent


def rescan_cell(rescan: dict) -> str:
    """The repaired model's fresh default scan in one cell: its verdict, the top class, index and flip rate."""
    verdict = f"flagged {rescan['target']}" if rescan["flagged"] else "clean"
    return (f"{verdict} (top {rescan['suspect']}, {rescan['suspect_family']}, index {rescan['max_anomaly']:.2f}, "
            f"flips {rescan['suspect_flip_rate']:.0%})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=RepairConfig.epochs)
    parser.add_argument("--lr", type=float, default=RepairConfig.lr)
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for entry in list_zoo():
            if entry.attack is None:
                continue
            report_path = HERE / "demo_scans" / entry.name / "report.json"
            report = json.loads(report_path.read_text())
            repaired = Path(tmp) / f"{entry.name}.safetensors"
            command = ["repair", entry.name, "--report", str(report_path), "--out", str(repaired),
                       "--epochs", str(args.epochs), "--lr", str(args.lr)]
            if not report["flagged"]:
                command += ["--target", report["suspect"]]
            result = cli_process(command, args.threads)["json"]
            rescan = cli_process(["scan", str(repaired), "--out", str(Path(tmp) / f"{entry.name}-rescan")],
                                 args.threads)["json"]
            row = {"model": entry.name, "attack": entry.attack, "true_target": entry.target,
                   "repaired_against": result["target"], "flagged": report["flagged"],
                   "before": result["before"], "after": result["after"], "seconds": result["seconds"],
                   "rescan": {key: rescan[key] for key in ("flagged", "target", "suspect", "suspect_family",
                                                           "max_anomaly", "suspect_flip_rate", "seconds")}}
            rows.append(row)
            print(row, flush=True)
    (HERE / "demo_repairs.json").write_text(json.dumps({"recipe": {"epochs": args.epochs, "lr": args.lr},
                                                        "models": rows}, indent=2) + "\n")
    lines = ["# Demo zoo repaired by the CLI", "",
             f"`python benchmarks/demo_repairs.py --threads {args.threads} --epochs {args.epochs} --lr {args.lr}`: "
             "`python -m inspector repair NAME --report benchmarks/demo_scans/NAME/report.json`, "
             f"{args.threads} CPU thread(s). asr: the model's own "
             "(ground-truth) trigger on the non-target test images; trigger asr: the reconstructed trigger; "
             "rescan: `python -m inspector scan REPAIRED --json`, the default scan of the repaired file.", "",
             "| model | repaired against | accuracy | asr | trigger asr | OOD trigger asr | s | rescan |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        b, a = r["before"], r["after"]
        lines.append(f"| {r['model']} ({r['attack']} -> {r['true_target']}) | {r['repaired_against']} | "
                     f"{b['accuracy']:.1%} -> {a['accuracy']:.1%} | {b['asr']:.1%} -> {a['asr']:.1%} | "
                     f"{b['trigger_asr']:.1%} -> {a['trigger_asr']:.1%} | "
                     f"{b['ood_trigger_asr']:.1%} -> {a['ood_trigger_asr']:.1%} | {r['seconds']:.0f} | "
                     f"{rescan_cell(r['rescan'])} |")
    if rows:
        mean_asr = [sum(r[side]["asr"] for r in rows) / len(rows) for side in ("before", "after")]
        mean_acc = [sum(r[side]["accuracy"] for r in rows) / len(rows) for side in ("before", "after")]
        passed = sum(not r["rescan"]["flagged"] for r in rows)
        lines += ["", f"Mean asr {mean_asr[0]:.1%} -> {mean_asr[1]:.1%}; mean accuracy {mean_acc[0]:.1%} -> "
                      f"{mean_acc[1]:.1%}. Rescanned: {passed} of {len(rows)} repaired models pass the default scan."]
    (HERE / "demo_repairs.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
