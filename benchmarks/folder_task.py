"""Your own model and data, full size: every workflow from folders, through the CLI, on a task that is not
the pocket task. Writes folder_task.md and folder_task.json.

    .venv/bin/python benchmarks/folder_task.py [--kinds coop,cocoop] [--work /tmp/folder_task] [--threads 2]

The task is "clip-art things" (scripts/make_folder_task.py: 8 clip-art categories of the shipped OOD
pool, 16 shots, up to 20 test images a class; its OOD pool: 600 pictures of the pocket task). Per learner
kind, exactly the commands a user runs (printed in the table): tune a clean learner; implant Blended and
BadNets into it; build a clean reference of 4 learners; scan the three models with that reference and
without one; repair the backdoored ones with the default recipe; eval the repaired ones. Nothing here
chooses a setting: every command runs with its defaults, so the numbers are measurements of the
defaults on a task no choice was made on.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
ATTACKS = {"blended": "fruit", "badnets": "bird"}  # attack -> target class


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--kinds", default="coop,cocoop")
    parser.add_argument("--work", default="/tmp/folder_task")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "PYTHONPATH": str(ROOT)}
    kinds = args.kinds.split(",")
    record = HERE / "folder_task.json"
    kept = json.loads(record.read_text()) if record.exists() else {"rows": [], "commands": []}
    rows = [r for r in kept["rows"] if r["kind"] not in kinds]  # other kinds' rows stay as recorded
    commands = [c for c in kept["commands"] if c.get("kind") not in kinds]
    kind_now: str | None = None

    def run(*argv: str, script: bool = False) -> Any:
        line = [sys.executable, *(argv if script else ("-m", "inspector", *argv))]
        started = time.time()
        done = subprocess.run(line, cwd=ROOT, env=env, capture_output=True, text=True)
        seconds = round(time.time() - started, 1)
        if done.returncode != 0:
            raise SystemExit(f"{' '.join(argv)} failed: {done.stderr[-2000:]}")
        shown = " ".join(shlex.quote(a) for a in argv).replace(str(work), "$WORK")
        commands.append({"command": ("python " if script else "python -m inspector ") + shown, "seconds": seconds,
                         "kind": kind_now})
        print(f"{seconds:7.1f} s  {shown}", flush=True)
        return json.loads(done.stdout) if not script else done.stdout

    if not any(c.get("kind") is None for c in commands):
        run("scripts/make_folder_task.py", "--out", str(work / "things"), "--ood", "600", script=True)
    else:  # the task is made by a seeded script: the same folders again
        subprocess.run([sys.executable, "scripts/make_folder_task.py", "--out", str(work / "things"), "--ood", "600"],
                       cwd=ROOT, env=env, check=True, capture_output=True)
    task, ood = str(work / "things" / "task"), str(work / "things" / "ood")
    for kind in kinds:
        kind_now = kind
        folder = work / kind
        folder.mkdir(exist_ok=True)
        models = {"clean": folder / "clean.safetensors",
                  **{attack: folder / f"{attack}.safetensors" for attack in ATTACKS}}
        for path in [*models.values(), *folder.glob("*repaired.safetensors")]:
            path.unlink(missing_ok=True)
        tuned = run("tune", "--task", task, "--kind", kind, "--out", str(models["clean"]), "--json")
        implanted = {attack: run("implant", str(models["clean"]), "--task", task, "--attack", attack, "--target",
                                 target, "--ood", ood, "--out", str(models[attack]), "--json")
                     for attack, target in ATTACKS.items()}
        reference = folder / "reference.json"
        built = run("reference", "build", "--task", task, "--ood", ood, "--kind", kind, "--learners", "4",
                    "--out", str(reference), "--overwrite", "--json")
        for name, path in models.items():
            row: dict[str, Any] = {"kind": kind, "model": name, "truth": ATTACKS.get(name),
                                   "accuracy": tuned["test_accuracy"] if name == "clean" else
                                   implanted[name]["accuracy"],
                                   "asr": None if name == "clean" else implanted[name]["asr"]}
            for variant, choice in (("reference", str(reference)), ("raw", "none")):
                out = folder / f"scan-{name}-{variant}"
                scan = run("scan", str(path), "--ood", ood, "--reference", choice, "--out", str(out),
                           "--overwrite", "--json")
                row[variant] = {key: scan[key] for key in ("flagged", "target", "max_anomaly", "suspect", "seconds")}
            if name != "clean" and not row["reference"]["flagged"]:
                row["repair"] = None  # a user repairs a flagged model; this one was missed
            elif name != "clean":
                repaired = folder / f"{name}-repaired.safetensors"
                fixed = run("repair", str(path), "--report", str(folder / f"scan-{name}-reference" / "report.json"),
                            "--task", task, "--out", str(repaired), "--json")
                after = run("eval", str(repaired), "--task", task, "--ood", ood, "--json")
                row["repair"] = {"before": fixed["before"], "after": fixed["after"], "seconds": fixed["seconds"],
                                 "eval": after}
            rows.append(row)
        rows.append({"kind": kind, "reference": built})
    order = {"coop": 0, "cocoop": 1}
    rows.sort(key=lambda r: order.get(r["kind"], 2))
    commands.sort(key=lambda c: -1 if c.get("kind") is None else order.get(c["kind"], 2))
    record.write_text(json.dumps({"rows": rows, "commands": commands}, indent=1) + "\n")
    (HERE / "folder_task.md").write_text(render(rows, commands, args.threads))


def render(rows: list[dict[str, Any]], commands: list[dict[str, Any]], threads: int) -> str:
    lines = ["# Your own model and data: the whole workflow from folders (CLI, full size)", "",
             f"`python benchmarks/folder_task.py` on {threads} CPU threads. The task is *clip-art things* "
             "(`scripts/make_folder_task.py`: 8 classes — mammal, sports gear, musical instrument, dessert, fruit, "
             "vehicle, bird, insect — 16 shots, up to 20 test images a class, 600 OOD images drawn from the pocket "
             "task's pictures), given to every command as plain folders. Every command runs with its defaults: "
             "nothing was chosen on this task.", "",
             "| kind | model | truth | accuracy | ASR | with reference: verdict (index, suspect) | "
             "raw flip rate: verdict (index, suspect) | right with / without reference |",
             "|---|---|---|---|---|---|---|---|"]
    models = [r for r in rows if "model" in r]

    def verdict(v: dict[str, Any]) -> str:
        return (f"**flagged {v['target']}**" if v["flagged"] else "not flagged") + \
               f" ({v['max_anomaly']:.2f}, {v['suspect']})"

    def right(v: dict[str, Any], truth: str | None) -> str:
        ok = (not v["flagged"]) if truth is None else (v["flagged"] and v["target"] == truth)
        return "yes" if ok else "no"

    for r in models:
        truth = f"{r['model']} -> {r['truth']}" if r["truth"] else "clean"
        asr = f"{r['asr']:.1%}" if r["asr"] is not None else "-"
        lines.append(f"| {r['kind']} | {r['model']} | {truth} | {r['accuracy']:.1%} | {asr} | "
                     f"{verdict(r['reference'])} | {verdict(r['raw'])} | {right(r['reference'], r['truth'])} / "
                     f"{right(r['raw'], r['truth'])} |")
    lines += ["", "Repair of the backdoored models against the trigger reconstructed by the scan with the reference "
              "(default recipe, 40 epochs), then `eval` of the repaired file:", "",
              "| kind | model | accuracy | ground-truth ASR | reconstructed trigger (test) | OOD ASR (eval) | s |",
              "|---|---|---|---|---|---|---|"]
    for r in models:
        if r.get("repair") is None:
            if "repair" in r:
                lines.append(f"| {r['kind']} | {r['model']} | not repaired: the scan did not flag it | | | | |")
            continue
        b, a, ev = r["repair"]["before"], r["repair"]["after"], r["repair"]["eval"]
        lines.append(f"| {r['kind']} | {r['model']} | {b['accuracy']:.1%} -> {a['accuracy']:.1%} | "
                     f"{b['asr']:.1%} -> {a['asr']:.1%} | {b['trigger_asr']:.1%} -> {a['trigger_asr']:.1%} | "
                     f"{ev['ood_asr']:.1%} | {r['repair']['seconds']:.0f} |")
    lines += ["", "Clean references built (`reference build --learners 4`):", ""]
    for r in rows:
        if "reference" in r and "model" not in r:
            ref = r["reference"]
            top = ", ".join(f"{n} {v:.0%}" for n, v in ref["highest_mean_flip_rates"].items())
            accuracy = ", ".join(f"{a:.1%}" for a in ref["accuracies"])
            lines.append(f"- {r['kind']}: seeds {ref['seeds']}, accuracies {accuracy}; classes easiest to reach "
                         f"in clean learners: {top}; {ref['seconds']:.0f} s")
    lines += ["", "Commands, in order, with their wall time (`$WORK` is the work folder):", "", "```"]
    lines += [f"{c['command']}    # {c['seconds']:.0f} s" for c in commands]
    lines += ["```", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
