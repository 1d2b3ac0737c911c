"""Twenty users at once on one app (issue 23): scans, repairs and clean-reference builds submitted together through
the named API on loopback (tests/load.py), each compared with a solo CLI run of the same request.

    python benchmarks/app_load.py [--users 20]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from tests.app_server import memory_mib, running_app  # noqa: E402
from tests.load import differences, mix, numbers, serve_all, solo_runs  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--users", type=int, default=20)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        solo_started = time.perf_counter()
        solo = solo_runs(Path(folder) / "solo")
        solo_seconds = time.perf_counter() - solo_started
        runs = Path(folder) / "runs"
        runs.mkdir()
        with running_app(runs, "--allow-path", str(Path(folder) / "solo")) as (url, process, _):
            started = time.perf_counter()
            served = serve_all(url, mix(args.users), solo["report"])
            wall = time.perf_counter() - started
            memory = memory_mib(process.pid)
    wrong = differences(served, solo)
    rows = [{"user": s.user, "kind": s.kind, "seconds": round(s.seconds, 1), "ranks": s.ranks,
             "error": s.error, "same_as_solo": s.result is not None and s.error is None
             and numbers(s.kind, s.result) == solo[s.kind]} for s in served]
    kinds = Counter(s.kind.split()[0] for s in served)
    record = {"users": args.users, "kinds": dict(kinds), "wall_seconds": round(wall, 1),
              "solo_cli_seconds": round(solo_seconds, 1), "memory": memory, "differences": wrong, "rows": rows}
    (HERE / "app_load.json").write_text(json.dumps(record, indent=1) + "\n")
    lines = ["# Twenty users at once (issue 23)", "",
             f"`python benchmarks/app_load.py --users {args.users}`, one run on this machine: one `python app.py` "
             f"process on loopback, {args.users} `gradio_client` users submitting at the same moment "
             f"({kinds['scan']} scans of clean-coop on two class sets, {kinds['repair']} repairs from a scan's "
             f"report, {kinds['reference']} clean-reference builds of one learner; tests/load.py), each polling "
             "its job's status while it waits. One engine job runs at a time, so they queue. Each user's numbers "
             "(per-class flip rates, indices and losses; accuracy and trigger ASR before and after; the "
             "reference's seeds, accuracies and mean flip rates) were compared with a solo CLI run of the same "
             f"request ({solo_seconds:.0f} s for all of them, run first).", "",
             f"- errors: {sum(1 for s in served if s.error)}; users whose numbers differ from the solo run: "
             f"{len(wrong)} of {args.users}",
             f"- all {args.users} served in {wall:.0f} s; the app's resident memory after them "
             f"{memory['rss_mib']:.0f} MiB (peak {memory['peak_mib']:.0f} MiB)",
             "- queue positions each user was shown while it waited (Gradio's rank, 0 = next), and its time from "
             "submitting to its result:", "",
             "| user | request | seconds | queue positions shown | same numbers as solo |", "|---|---|---|---|---|"]
    for r in rows:
        shown = " → ".join(map(str, r["ranks"])) or "(started at once)"
        same = "yes" if r["same_as_solo"] else f"NO: {r['error']}"
        lines.append(f"| {r['user']} | {r['kind']} | {r['seconds']} | {shown} | {same} |")
    (HERE / "app_load.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
