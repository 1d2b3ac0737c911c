"""Memory over a long session (issue 23): one app process (``python app.py`` on loopback) serving scan after scan
through its named API (``gradio_client``), its resident memory read from /proc after every tenth.

A workshop runs one app for hours; a result, a model or a workspace kept by mistake per scan would show here as
memory that climbs with the number of scans. The scans alternate the CoOp and CoCoOp demo models (a clean and a
backdoored one) with their default settings on a smaller pool, so that 50 of them fit in minutes on 2 cores.

    python benchmarks/app_memory.py [--scans 50] [--pool-size 300]
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

from gradio_client import Client  # noqa: E402

from tests.app_server import memory_mib, running_app  # noqa: E402

MODELS = ("clean-coop", "badclip-cocoop")
CLASS_NAMES = ["star", "arrow", "road sign", "national flag", "semaphore flag", "playing card", "stick figure"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--scans", type=int, default=50)
    parser.add_argument("--pool-size", type=int, default=300)
    parser.add_argument("--classes", type=int, default=None, help="scan the first N classes only (default: all)")
    parser.add_argument("--every", type=int, default=10, help="read the memory after every N scans (default: 10)")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as folder, running_app(Path(folder)) as (url, process, _):
        client = Client(url, verbose=False)
        started = time.perf_counter()
        rows.append({"scans": 0, "seconds": 0.0, **memory_mib(process.pid)})
        verdicts: dict[str, set] = {}
        for n in range(1, args.scans + 1):
            model = MODELS[n % 2]
            classes = CLASS_NAMES[:args.classes] if args.classes else None
            result = client.predict(model=model, pool_size=args.pool_size, classes=classes, api_name="/scan")
            assert result["status"] == "finished", result
            verdicts.setdefault(model, set()).add((result["flagged"], result["target"], result["max_anomaly"]))
            if n % args.every == 0:
                rows.append({"scans": n, "seconds": round(time.perf_counter() - started, 1),
                             **memory_mib(process.pid)})
                print(rows[-1], flush=True)
    first, last = rows[1], rows[-1]
    growth = (last["rss_mib"] - first["rss_mib"]) / first["rss_mib"]
    record = {"scans": args.scans, "pool_size": args.pool_size, "models": MODELS, "rows": rows,
              "rss_growth_after_first_tenth": round(growth, 4),
              "verdicts": {model: sorted(map(list, seen)) for model, seen in verdicts.items()}}
    if args.classes:  # a quicker probe, not the recorded run
        print(json.dumps(record))
        return
    (HERE / "app_memory.json").write_text(json.dumps(record, indent=1) + "\n")
    lines = ["# The app's memory over a long session (issue 23)", "",
             f"`python benchmarks/app_memory.py --scans {args.scans} --pool-size {args.pool_size}`, one run on this "
             f"machine: one `python app.py` process, {args.scans} scans in a row through its named `/scan` API "
             f"(gradio_client on loopback), alternating {' and '.join(MODELS)} at their default settings on a "
             f"{args.pool_size}-image pool; resident memory (VmRSS) and its peak so far (VmHWM) from /proc after "
             f"every {args.every}th scan.", "",
             "| scans | seconds | RSS (MiB) | peak RSS so far (MiB) |", "|---|---|---|---|"]
    lines += [f"| {r['scans']} | {r['seconds']} | {r['rss_mib']} | {r['peak_mib']} |" for r in rows]
    lines += ["", f"RSS after scan {last['scans']} against after scan {first['scans']}: {growth:+.1%} "
              f"(bar: flat within 10%). Scans of one model gave (flagged, target, max index): "
              + "; ".join(f"{m}: {', '.join(str(tuple(v)) for v in sorted(s))}" for m, s in verdicts.items()) + "."]
    (HERE / "app_memory.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
