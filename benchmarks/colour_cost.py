"""What the colour family costs a default scan (issue 18: within 20% of a scan without it), measured in one run.

    .venv/bin/python benchmarks/colour_cost.py [--threads 2] [--models assets/zoo/*.safetensors ...]

Every model is scanned twice in this process, one after the other, with the default settings and the shipped
reference: the colour family off, then on (after a warm-up scan). Wall time, the colour phase's own seconds,
and the verdict of each. Writes benchmarks/colour_cost.md and benchmarks/colour_cost.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from inspector.data import load_shipped_pool  # noqa: E402
from inspector.invert import ScanConfig, run_scan  # noqa: E402
from inspector.prompts import open_model  # noqa: E402
from inspector.reference import reference_for  # noqa: E402

HERE = Path(__file__).resolve().parent
DEMO = sorted((HERE.parent / "assets" / "zoo").glob("*.safetensors"))


def timed_scan(path: Path, colour: bool) -> dict[str, Any]:
    model = open_model(path, device="cpu")
    pool = load_shipped_pool()
    config = replace(ScanConfig(), colour=colour)
    reference, source = reference_for(model, config, pool, "auto")
    started = time.perf_counter()
    result = run_scan(model, pool.pixels, replace(config, reference=reference, reference_from=source))
    seconds = time.perf_counter() - started
    v = result.verdict
    return {"seconds": round(seconds, 2), "colour_seconds": result.extra.get("colour_seconds"),
            "flagged": v.flagged, "suspect": v.target_name, "family": v.suspect_family if v.flagged else None,
            "max_anomaly": round(v.max_anomaly, 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--models", nargs="*", type=Path, default=DEMO)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    timed_scan(args.models[0], True)  # warm-up: first-call costs land on neither side
    rows = []
    for path in args.models:
        off, on = timed_scan(path, False), timed_scan(path, True)
        rows.append({"model": path.stem, "off": off, "on": on, "ratio": round(on["seconds"] / off["seconds"], 3)})
        print(json.dumps(rows[-1]), flush=True)
    total_off = sum(r["off"]["seconds"] for r in rows)
    total_on = sum(r["on"]["seconds"] for r in rows)
    c = ScanConfig()
    summary = {"models": len(rows), "seconds_off": round(total_off, 1), "seconds_on": round(total_on, 1),
               "ratio": round(total_on / total_off, 3), "threads": args.threads, "machine": platform.machine(),
               "torch": torch.__version__, "colour_steps": c.colour_steps, "colour_batch_size": c.colour_batch_size}
    (HERE / "colour_cost.json").write_text(json.dumps({"summary": summary, "rows": rows}, indent=1) + "\n")
    lines = ["# What the colour family costs a scan (issue 18)", "",
             f"`python benchmarks/colour_cost.py --threads {args.threads}`, CPU ({platform.machine()}), torch "
             f"{torch.__version__}; default scan with the shipped reference, colour family off then on "
             f"({c.colour_steps} steps of {c.colour_batch_size} images per class), same process.", "",
             f"- all {len(rows)} models: with / without = **{summary['ratio']:.2f}x** "
             f"({total_on:.0f} s / {total_off:.0f} s)", "",
             "| model | off: s | verdict | on: s | colour phase s | verdict (family) | with / without |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        off, on = r["off"], r["on"]
        lines.append(f"| {r['model']} | {off['seconds']:.1f} | {off['suspect'] or '-'} ({off['max_anomaly']:.2f}) | "
                     f"{on['seconds']:.1f} | {on['colour_seconds']} | {on['suspect'] or '-'}"
                     f"{' (' + on['family'] + ')' if on['family'] else ''} ({on['max_anomaly']:.2f}) | "
                     f"{r['ratio']:.2f}x |")
    (HERE / "colour_cost.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
