"""The suite's fuzzers (tests/fuzzing.py), run long, with their tally (issue 23): thousands of hostile mutations of
the shipped demo learners, each loaded as ``scan`` loads a delivered model, of the shipped clean references, each
given to a scan as ``--reference FILE``, of a real scan's report, each taken as ``repair --report`` takes it, and
(tests/fuzz_images.py) of images, OOD pools and labelled sets in folders and zips, each read as ``scan --ood`` and
``eval --task`` read them.

    python benchmarks/fuzz.py [--cases 5000] [--references 2000] [--reports 2000] [--images 3000] [--pools 1000]
                              [--labelled 1000] [--seed 1]
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from collections import Counter, defaultdict
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from inspector.backbone import shared_backbone  # noqa: E402
from inspector.data import load_shipped_pool  # noqa: E402
from inspector.invert import ScanConfig  # noqa: E402
from inspector.pipeline import open_delivered, scan_job  # noqa: E402
from inspector.prompts import open_model  # noqa: E402
from inspector.reference import REFERENCE_DIR  # noqa: E402
from inspector.zoo import ZOO_DIR  # noqa: E402
from tests.fuzz_images import fuzz_images, fuzz_sources  # noqa: E402
from tests.fuzzing import fuzz, fuzz_json, reference_use, report_use, tally  # noqa: E402

OUTCOMES = ("ran", "refused", "used", "skipped", "unnamed", "long", "unexpected")
PREFIXED = ("reference", "report", "image", "pool", "labelled")


def kind_of(mutation: str) -> str:
    """The row of the by-mutation table: the learner mutation's name, or the file kind and its mutation's name."""
    words = mutation.replace(";", " ").split()
    if words[0] in ("pool", "labelled"):
        return " ".join(words[:3] if words[1] == "zip" else words[:2])
    return " ".join(words[:2]) if words[0] in PREFIXED else words[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cases", type=int, default=5000, help="mutants (default: 5000)")
    parser.add_argument("--references", type=int, default=2000, help="reference mutants, half of each kind's "
                        "(default: 2000)")
    parser.add_argument("--reports", type=int, default=2000, help="report mutants (default: 2000)")
    parser.add_argument("--images", type=int, default=3000, help="hostile images, each decoded alone (default: 3000)")
    parser.add_argument("--pools", type=int, default=1000, help="hostile OOD pools, folders and zips (default: 1000)")
    parser.add_argument("--labelled", type=int, default=1000, help="hostile labelled sets (default: 1000)")
    parser.add_argument("--seed", type=int, default=1, help="the fuzzer's seed (the suite uses another)")
    args = parser.parse_args()
    originals = {path.name: path.read_bytes() for path in sorted(ZOO_DIR.glob("*.safetensors"))}
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as folder:
        rows = list(fuzz(originals, Path(folder), args.cases, args.seed,
                         lambda path: open_model(path, device="cpu", backbone_loader=shared_backbone)))
        for kind in ("coop", "cocoop"):
            original = (REFERENCE_DIR / f"pocket-clip-{kind}.json").read_bytes()
            rows += [{**row, "original": f"pocket-clip-{kind}.json", "mutation": f"reference {row['mutation']}"}
                     for row in fuzz_json(original, Path(folder), args.references // 2, args.seed,
                                          reference_use(kind))]
        scanned = Path(folder) / "scan"  # a real report: three classes of the clean CoOp demo model
        delivered = open_delivered("clean-coop", device="cpu")
        list(scan_job(delivered, load_shipped_pool(delivered.model.backbone.image_size),
                      ScanConfig(classes=(0, 1, 2)), scanned))
        work = Path(folder) / "reports"
        work.mkdir()
        shutil.copy(scanned / "triggers.safetensors", work)
        rows += [{**row, "original": "report.json of a scan of clean-coop", "mutation": f"report {row['mutation']}"}
                 for row in fuzz_json((scanned / "report.json").read_bytes(), work, args.reports, args.seed,
                                      report_use(work), name="report")]
        rows += [{**row, "original": "generated", "mutation": f"image {row['mutation']}"}
                 for row in fuzz_images(args.images, args.seed)]
        for kind, cases in (("pool", args.pools), ("labelled", args.labelled)):
            sources = Path(folder) / kind
            sources.mkdir()
            rows += [{**row, "original": "generated", "mutation": f"{kind} {row['mutation']}"}
                     for row in fuzz_sources(sources, cases, args.seed, kind)]
            shutil.rmtree(sources)
    seconds = time.perf_counter() - started
    counts = tally(rows)
    by_kind: dict[str, Counter[str]] = defaultdict(Counter)
    for row in rows:
        by_kind[kind_of(row["mutation"])][row["outcome"]] += 1
    findings = [{k: row[k] for k in ("case", "original", "mutation", "outcome", "detail")} for row in rows
                if row["outcome"] not in ("ran", "refused", "used", "skipped")]
    record = {"cases": args.cases, "references": args.references, "reports": args.reports, "images": args.images,
              "pools": args.pools, "labelled": args.labelled, "seed": args.seed,
              "seconds": round(seconds, 1), "originals": sorted(originals),
              "tally": dict(counts), "by_mutation": {k: dict(v) for k, v in sorted(by_kind.items())},
              "findings": findings}
    (HERE / "fuzz.json").write_text(json.dumps(record, indent=1) + "\n")
    lines = ["# Fuzzing the learner, reference and report files, images, pools and labelled sets (issue 23)", "",
             f"`python benchmarks/fuzz.py --cases {args.cases} --references {args.references} --reports "
             f"{args.reports} --images {args.images} --pools {args.pools} --labelled {args.labelled} --seed "
             f"{args.seed}`, "
             f"one run, {seconds:.0f} s on this machine (tests/fuzzing.py): {args.cases} mutants of the "
             f"{len(originals)} shipped demo learners, each loaded as `scan` loads a delivered model and, when it "
             f"loads, run once; {args.references} mutants of the two shipped clean references (half each), each "
             "given to a scan of the kind's clean demo model as `--reference FILE` and deciding that model's "
             f"recorded scan; {args.reports} mutants of the report of a real scan (three classes of clean-coop), "
             "each taken as `repair --report` takes it before it trains; "
             f"{args.images} hostile images (damaged bytes, lying dimensions, decompression bombs, odd modes, bad "
             "EXIF, several frames, wrong suffixes, extreme values), each decoded as a pool decodes it; "
             f"{args.pools} OOD pools and {args.labelled} labelled sets (tests/fuzz_images.py), half folders, half "
             "zips with a hostile twist (unsafe or undecodable names, links, encrypted, nested or lying entries, "
             "a 40 MB entry, a damaged or truncated archive), each read as `scan --ood` and `eval --task` read "
             "them. *refused*: an error naming the file in under 600 characters; *used* / *skipped*: an image "
             "decoded to pixels in [0, 1], or skipped with its reason (a pool's every file is one of the two); "
             "*unnamed*, *long*, *unexpected*: findings.", "",
             "| outcome | cases |", "|---|---|"]
    lines += [f"| {outcome} | {counts.get(outcome, 0)} |" for outcome in OUTCOMES]
    lines += ["", "| mutation | " + " | ".join(OUTCOMES) + " |", "|---|" + "---|" * len(OUTCOMES)]
    lines += [f"| {kind} | " + " | ".join(str(tallied.get(o, 0)) for o in OUTCOMES) + " |"
              for kind, tallied in sorted(by_kind.items())]
    if findings:
        lines += ["", "Findings:", ""] + [f"- case {f['case']} ({f['original']}, {f['mutation']}): {f['outcome']}: "
                                          f"{f['detail'][:200]}" for f in findings[:50]]
    (HERE / "fuzz.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
