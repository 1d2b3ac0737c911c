"""Jobs killed outright (issue 23): a CLI scan, a repair and a reference build, each SIGKILLed at many moments
spread over its run (tests/faults.py), then run again as a user would.

After every kill, each output is absent or complete and equal to an uninterrupted run's; after the run that
finishes, no staging file or folder is left anywhere. The reference build resumes with the learners it had kept and
must give exactly the uninterrupted build's reference.

    python benchmarks/faults.py [--kills 8] [--seed 1]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from tests.faults import jobs, kill_and_rerun, run, staging_left  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--kills", type=int, default=8, help="kill moments per job (default: 8)")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    started = time.perf_counter()
    record: dict = {"kills": args.kills, "seed": args.seed, "jobs": {}}
    with tempfile.TemporaryDirectory() as folder:
        base = Path(folder) / "base"
        all_jobs = jobs(base / "scans" / "scan-0" / "report.json")
        for name, job in all_jobs.items():
            code, seconds, printed = run(job.argv(base, 0))
            assert code == 0, printed[-2000:]
            expected = job.complete(base, 0)
            assert expected is not None and not staging_left(base)
            moments = [round(seconds * (0.1 + 0.9 * (i + 0.5) / args.kills), 2) for i in range(args.kills)]
            print(f"{name}: uninterrupted {seconds:.1f} s; killing at {moments}", flush=True)
            rows = kill_and_rerun(job, Path(folder) / name, moments, expected, while_writing=True)
            record["jobs"][name] = {"uninterrupted_seconds": round(seconds, 1), "attempts": rows}
    record["seconds"] = round(time.perf_counter() - started, 1)
    (HERE / "faults.json").write_text(json.dumps(record, indent=1) + "\n")
    lines = ["# Jobs killed outright (issue 23)", "",
             f"`python benchmarks/faults.py --kills {args.kills}`, one run, {record['seconds']:.0f} s on this machine "
             "(tests/faults.py). Each job first runs uninterrupted; then attempt after attempt is SIGKILLed at the"
             " next moment of an even spread over that run's length (the first second or two start the "
             "interpreter), then one is SIGKILLed as soon as it has a staging file or folder (it is writing an "
             "output; looked at every 2 ms), and a last attempt runs to its end. Scans and repairs write a fresh "
             "output per attempt into one folder; the reference build writes the same file each time and resumes "
             "from the learners it kept. After every attempt each output was checked: absent, or complete (a "
             "report folder with every file; a learner that loads) and equal to the uninterrupted run's numbers "
             "(per-class flip rates, indices and losses; the repaired tensors; the whole reference). After the "
             "last attempt, no staging "
             "file or folder was left anywhere (the next writer in a folder removes what a killed one left).", "",
             "| job | uninterrupted (s) | attempts to kill | each attempt: when, what happened, its output | last run "
             "| staging left |",
             "|---|---|---|---|---|---|"]
    for name, job in record["jobs"].items():
        rows = job["attempts"]
        killed = [r for r in rows if r["kill_after"] is not None]
        after = "; ".join(f"{r['kill_after']}{'' if r['kill_after'] == 'writing' else ' s'}: "
                          f"{'killed' if r['code'] == -9 else 'finished'}, output {r['output']}" for r in killed)
        last = rows[-1]
        lines.append(f"| {name} | {job['uninterrupted_seconds']} | {len(killed)} attempts | {after} | "
                     f"exit {last['code']}, {last['output']}, equal to the uninterrupted run | none |")
    (HERE / "faults.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
