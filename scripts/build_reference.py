"""Build the shipped clean references (assets/reference/<arch>-<kind>.json) for the anomaly index.

    .venv/bin/python scripts/build_reference.py [--kinds coop,cocoop] [--seeds 1000,1001,1002,1003]
        [--arch ViT-B-16 --pretrained openai] [--device cuda] [--out assets/reference] [--learners DIR]

For each learner kind: one clean learner per seed, tuned on the shipped task's train split with the
recipe of every clean learner here (TuneConfig.for_kind), scanned on the shipped OOD pool at the
default epsilon with the published faithful schedule and with the fast one (every class run to the
end, so each class can be compared after whichever round a scan stops it in). The seeds are disjoint from the demo zoo's
(0) and the benchmark zoo's (0-119), so no evaluated model is part of its own reference.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from inspector.backbone import load_backbone  # noqa: E402
from inspector.data import load_shipped_pool, load_task  # noqa: E402
from inspector.reference import REFERENCE_DIR, build_reference  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kinds", default="coop,cocoop")
    parser.add_argument("--seeds", default="1000,1001,1002,1003")
    parser.add_argument("--arch", default="pocket-clip", help="CLIP architecture (e.g. ViT-B-16)")
    parser.add_argument("--pretrained", default=None, help="open_clip tag or weights file (default: pocket)")
    parser.add_argument("--device", default=None)
    parser.add_argument("--out", default=str(REFERENCE_DIR))
    parser.add_argument("--epochs", type=int, default=None, help="tuning epochs (smoke runs only)")
    parser.add_argument("--learners", default=None, help="keep the tuned learners here and reuse them")
    args = parser.parse_args()
    backbone = load_backbone(args.arch, args.pretrained, device=args.device)
    task, pool = load_task(backbone.image_size), load_shipped_pool(backbone.image_size).pixels
    seeds = [int(s) for s in args.seeds.split(",")]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for kind in args.kinds.split(","):
        started = time.time()
        reference = build_reference(kind, backbone, task, pool, seeds, epochs=args.epochs,
                                    learners=Path(args.learners) if args.learners else None)
        path = out / f"{backbone.arch}-{kind}.json"
        path.write_text(json.dumps(reference.as_dict(), indent=1) + "\n")
        top = sorted(reference.flip_rates.items(), key=lambda kv: -kv[1])[:3]
        print(f"wrote {path} in {time.time() - started:.0f} s; highest mean flip rates: "
              + ", ".join(f"{n} {r:.1%}" for n, r in top), flush=True)


if __name__ == "__main__":
    main()
