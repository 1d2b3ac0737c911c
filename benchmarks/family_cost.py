"""What the quick inversion families cost a default scan (issue 18: within 20% of a scan without them), measured in
one run.

    .venv/bin/python benchmarks/family_cost.py [--threads 2] [--models assets/zoo/*.safetensors ...]

Every model is scanned four times in this process, one after the other, with the default settings and the given
references (default: the shipped ones): no quick family (the scan before issue 18), the colour family (the default
before the patch family), the colour and patch families (the default now), and the colour and blend families (after a
warm-up scan). Wall time, each family's own seconds, and the verdict of each. Writes benchmarks/family_cost.md and
benchmarks/family_cost.json.
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
from inspector.detect import QUICK_FAMILIES  # noqa: E402
from inspector.invert import ScanConfig, run_scan  # noqa: E402
from inspector.prompts import open_model  # noqa: E402
from inspector.reference import reference_for  # noqa: E402

HERE = Path(__file__).resolve().parent
DEMO = sorted((HERE.parent / "assets" / "zoo").glob("*.safetensors"))
WAYS = {"none": {"colour": False, "blend": False, "patch": False},
        "colour": {"colour": True, "blend": False, "patch": False},
        "colour + patch (default)": {"colour": True, "blend": False, "patch": True},
        "colour + blend": {"colour": True, "blend": True, "patch": False}}
PHASES = {"colour": "colour", "colour + patch (default)": "patch", "colour + blend": "blend"}  # the way's last family


def timed_scan(path: Path, families: dict[str, bool], references: dict[str, str]) -> dict[str, Any]:
    model = open_model(path, device="cpu")
    pool = load_shipped_pool()
    config = replace(ScanConfig(), **families)
    reference, source = reference_for(model, config, pool, references.get(model.kind, "auto"))
    started = time.perf_counter()
    result = run_scan(model, pool.pixels, replace(config, reference=reference, reference_from=source))
    seconds = time.perf_counter() - started
    v = result.verdict
    return {"seconds": round(seconds, 2), **{f"{family}_seconds": result.extra.get(f"{family}_seconds")
                                              for family in QUICK_FAMILIES},
            "flagged": v.flagged, "suspect": v.target_name,
            "family": v.suspect_family if v.flagged else None, "max_anomaly": round(v.max_anomaly, 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--models", nargs="*", type=Path, default=DEMO)
    parser.add_argument("--coop-reference", default="auto", help="reference file for CoOp models (default: shipped)")
    parser.add_argument("--cocoop-reference", default="auto", help="reference file for CoCoOp models")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    references = {"coop": args.coop_reference, "cocoop": args.cocoop_reference}
    timed_scan(args.models[0], WAYS["colour + blend"], references)  # warm-up: first-call costs land on no side
    rows = []
    for path in args.models:
        scans = {way: timed_scan(path, families, references) for way, families in WAYS.items()}
        rows.append({"model": path.stem, **scans,
                     "ratios": {way: round(s["seconds"] / scans["none"]["seconds"], 3) for way, s in scans.items()}})
        print(json.dumps(rows[-1]), flush=True)
    totals = {way: round(sum(r[way]["seconds"] for r in rows), 1) for way in WAYS}
    c = ScanConfig()
    summary = {"models": len(rows), "seconds": totals,
               "ratios": {way: round(totals[way] / totals["none"], 3) for way in WAYS}, "threads": args.threads,
               "machine": platform.machine(), "torch": torch.__version__,
               "colour": f"{c.colour_steps} steps x {c.family_images('colour')} images",
               "blend": f"{c.blend_steps} steps x {c.family_images('blend')} images, opacity {c.blend_alpha}",
               "patch": f"{c.patch_steps} steps x {c.family_images('patch')} images, "
                        f"side {c.patch_share} of the image's"}
    (HERE / "family_cost.json").write_text(json.dumps({"summary": summary, "rows": rows}, indent=1) + "\n")
    lines = ["# What the quick inversion families cost a scan (issue 18)", "",
             f"`python benchmarks/family_cost.py --threads {args.threads}`, CPU ({platform.machine()}), torch "
             f"{torch.__version__}; default scan with the references given (CoOp: {args.coop_reference}, CoCoOp: "
             f"{args.cocoop_reference}), no quick family, then the colour family ({summary['colour']} per class), then "
             f"colour and patch ({summary['patch']}), then colour and blend ({summary['blend']}), same process.", "",
             *(f"- all {len(rows)} models, {way} / none = **{summary['ratios'][way]:.2f}x** "
               f"({totals[way]:.0f} s / {totals['none']:.0f} s)" for way in WAYS if way != "none"), "",
             "| model | none: s | verdict | "
             + " | ".join(f"{way}: s | {family} phase s | verdict (family) | {way} / none"
                          for way, family in PHASES.items()) + " |", "|---" * (3 + 4 * len(PHASES)) + "|"]
    for r in rows:
        cells = [f"{r[way]['seconds']:.1f} | {r[way][f'{family}_seconds']} | {_verdict(r[way])} | "
                 f"{r['ratios'][way]:.2f}x" for way, family in PHASES.items()]
        lines.append(f"| {r['model']} | {r['none']['seconds']:.1f} | {_verdict(r['none'])} | " + " | ".join(cells)
                     + " |")
    (HERE / "family_cost.md").write_text("\n".join(lines) + "\n")


def _verdict(scan: dict[str, Any]) -> str:
    family = f" ({scan['family']})" if scan["family"] else ""
    return f"{scan['suspect'] or '-'}{family} ({scan['max_anomaly']:.2f})"


if __name__ == "__main__":
    main()
