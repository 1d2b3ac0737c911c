"""How much a default verdict depends on the scan's own seed (issue 18: no clean learner flagged at any seed).

A defender's scan draws its fitting and held-out images, its batches and its patch places from ``ScanConfig.seed``;
a provider's learner does not choose it. A verdict worth trusting should not change when only that seed does. One
run, this machine: every model of ``--zoo`` whose recorded default top anomaly index lies within ``--band`` (the
rule is set before the run: the models that could cross the threshold 2) is scanned by default with each of
``--seeds`` and decided with the shipped reference, as the engine decides. Beside them the recorded scan (seed 0,
made on another day: float kernels differ between machines, which moves a borderline trigger too).

    python benchmarks/verdict_stability.py --zoo benchmarks/zoos/dev --seeds 0,1,2 --colour 3/16

``--colour STEPS/IMAGES,...``: each seeded scan decided again with the colour family's rates measured with another
sample (benchmarks/family_choice.py's candidates: the family alone, as a scan runs it, at the scan's seed; the
shipped reference's learners measured likewise at seed 0), so a candidate's stability is read on the same scans.
Beside them, each model decided on two of its seeded scans at once (their calibrated evidence averaged class by
class), for every pair of seeds: a borderline verdict inverted again. Scans and rates are cached per seed under
ZOO/scans/, so an interrupted run resumes.
"""

from __future__ import annotations

import argparse
import itertools
import json
import platform
import statistics
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.detection import calibrated, colour_tag, family_rates, family_tag, scan_model  # noqa: E402
from benchmarks.family_choice import (  # noqa: E402
    KINDS,
    base_reference,
    candidate_config,
    candidate_tag,
    redecide,
    references_with,
)
from inspector.backbone import machine_name  # noqa: E402
from inspector.data import load_shipped_pool  # noqa: E402
from inspector.detect import DEFAULT_SPREAD, DEFAULT_THRESHOLD, decide  # noqa: E402
from inspector.reference import Reference  # noqa: E402


def borderline(zoo: Path, band: tuple[float, float]) -> list[tuple[Path, dict[str, Any]]]:
    """The zoo's models whose recorded default scan put the top anomaly index within ``band``, with that scan."""
    recorded = zoo / "scans" / ("inspector-reference" + colour_tag(True))
    chosen = []
    for path in sorted(zoo.glob("*.safetensors")):
        record = recorded / f"{path.stem}.json"
        if record.exists():
            row = json.loads(record.read_text())
            if band[0] <= row["max_anomaly"] <= band[1]:
                chosen.append((path, row))
    return chosen


def seeded_scan(zoo: Path, seed: int, model: str) -> Path:
    """Where a model's default scan at ``seed`` is cached."""
    return zoo / "scans" / f"stability-seed{seed}" / f"{model}.json"


def answer(row: dict[str, Any]) -> dict[str, Any]:
    return {"flagged": row["flagged"], "target": row["predicted_target"], "suspect": row["suspect"],
            "index": round(row["max_anomaly"], 4), "family": row.get("suspect_family")}


def with_colour_candidates(zoo: Path, rows: list[dict[str, Any]], candidates: list[str]) -> None:
    """Each row's seeded scans decided again with each candidate colour sample's rates (``row["colour"]``)."""
    for spec in candidates:
        config = candidate_config("colour", spec)
        references = references_with("colour", config, candidate_tag("colour", spec))
        for row in rows:
            path = zoo / f"{row['model']}.safetensors"
            decided = {}
            for seed in row["seeds"]:
                seeded = replace(config, seed=int(seed))
                rates = family_rates(path, seeded, "colour",
                                     zoo / "scans" / family_tag("colour", seeded) / f"{path.stem}.json")
                scan = json.loads(seeded_scan(zoo, seed, path.stem).read_text())
                again = redecide(scan, references[row["kind"]], "colour", rates, config)
                decided[seed] = answer({**again, "suspect_family": again["family"]})
            row.setdefault("colour", {})[spec] = {"seeds": decided, **spread(decided)}
            print(json.dumps({"model": row["model"], "colour": spec, **row["colour"][spec]}), flush=True)


def spread(seeded: dict[Any, dict[str, Any]]) -> dict[str, Any]:
    """Whether the seeds agree, how many flag, and how far the top index moves."""
    indices = [s["index"] for s in seeded.values()]
    return {"same_verdict": len({(s["flagged"], s["target"]) for s in seeded.values()}) == 1,
            "flagged_at": sum(s["flagged"] for s in seeded.values()),
            "index_range": round(max(indices) - min(indices), 4),
            "index_sd": round(statistics.stdev(indices), 4) if len(indices) > 1 else 0.0}


def seeded_scans(zoo: Path, band: tuple[float, float], seeds: list[int],
                 references: dict[str, Reference]) -> list[dict[str, Any]]:
    pool = load_shipped_pool().pixels
    rows = []
    for path, recorded in borderline(zoo, band):
        reference = references[recorded["kind"]]
        seeded = {}
        for seed in seeds:
            scan = scan_model(path, "inspector + reference", seeded_scan(zoo, seed, path.stem), pool, None,
                              colour=True, overrides={"seed": seed})
            seeded[seed] = {**answer(calibrated(scan, reference)), "seconds": round(scan["seconds"], 1)}
        rows.append({"model": path.stem, "kind": recorded["kind"], "truth": recorded["true_target"] or "clean",
                     "recorded": answer(calibrated(recorded, reference)), "seeds": seeded, **spread(seeded)})
        print(json.dumps(rows[-1]), flush=True)
    return rows


def noise(zoo: Path, rows: list[dict[str, Any]], seeds: list[int],
          references: dict[str, Reference]) -> list[dict[str, Any]]:
    """Per family, how much a class's flip rate moves with the seed (its variance over the seeds, averaged over
    every class of every model) beside what counting flips on so few images alone would make it move (the binomial
    variance p(1 - p) / n of each estimate, averaged likewise), and beside how far the shipped reference's clean
    learners spread (their variance per class, averaged; the additive family's as the fast schedule measured it)."""
    out = []
    for family, rate, eligible in (("additive", "flip_rate", "eligible"),
                                   ("colour", "colour_flip_rate", "colour_eligible"),
                                   ("patch", "patch_flip_rate", "patch_eligible")):
        over_seeds, binomial, images, between = [], [], [], []
        for row in rows:
            scans = [json.loads(seeded_scan(zoo, s, row["model"]).read_text()) for s in seeds]
            for classes in zip(*(scan["classes"] for scan in scans), strict=True):
                if not all(eligible in c for c in classes):
                    continue
                over_seeds.append(statistics.variance([c[rate] for c in classes]))
                binomial.append(statistics.mean(c[rate] * (1 - c[rate]) / max(1, c[eligible]) for c in classes))
                images.append(statistics.mean(c[eligible] for c in classes))
            reference = references[row["kind"]]
            learners = (reference.fast["held_out"] if family == "additive" else
                        (getattr(reference, family) or {}).get("per_learner", []))
            if len(learners) > 1:
                between += [statistics.variance([p[name] for p in learners]) for name in learners[0]]
        out.append({"family": family, "classes": len(over_seeds), "images": round(statistics.mean(images), 1),
                    "sd_over_seeds": round(statistics.mean(over_seeds) ** 0.5, 4),
                    "sd_of_counting": round(statistics.mean(binomial) ** 0.5, 4),
                    "sd_between_clean_learners": round(statistics.mean(between) ** 0.5, 4) if between else None})
    return out


# the fields of a class's evidence, after the reference, that a decision reads (flip rates, excesses, spreads)
EVIDENCE = ("flip_rate", "excess_flip_rate", "reference_spread", "loss", "loss_excess", "loss_spread",
            *(f"{family}_{key}" for family in ("colour", "patch")
              for key in ("flip_rate", "excess", "reference_spread")))


def averaged(zoo: Path, rows: list[dict[str, Any]], seeds: list[int],
             references: dict[str, Reference]) -> dict[str, Any]:
    """Each model decided on two of its seeded scans at once: each scan's classes calibrated with the reference,
    their evidence averaged class by class, then the engine's rule (``detect.decide``) on the averages; over every
    pair of seeds, beside one scan per decision. A candidate for a borderline verdict inverted again."""
    out: dict[str, Any] = {}
    for label, draws in (("one scan", [(s,) for s in seeds]),
                         ("two scans, evidence averaged", list(itertools.combinations(seeds, 2)))):
        right_n = clean_flagged = clean_n = 0
        for row in rows:
            for draw in draws:
                scans = [calibrated(json.loads(seeded_scan(zoo, s, row["model"]).read_text()),
                                    references[row["kind"]]) for s in draw]
                merged = [{**classes[0], **{k: statistics.mean(float(c[k]) for c in classes) for k in EVIDENCE
                                           if all(k in c for c in classes)}}
                          for classes in zip(*(scan["classes"] for scan in scans), strict=True)]
                verdict = decide(merged, "excess_flip_rate", spread=DEFAULT_SPREAD)
                decided = {"flagged": verdict.flagged, "target": verdict.target_name}
                right_n += right(row["truth"], decided)
                clean_n += row["truth"] == "clean"
                clean_flagged += row["truth"] == "clean" and verdict.flagged
        out[label] = {"decisions": len(rows) * len(draws), "right": right_n, "clean_decisions": clean_n,
                      "clean_flagged": clean_flagged}
    return out


def _cell(a: dict[str, Any]) -> str:
    shown = f"{a['target'] or '-'} ({a['index']:.2f})"
    return f"**{shown}**" if a["flagged"] else shown


def right(truth: str, a: dict[str, Any]) -> bool:
    """A clean learner not flagged, a backdoor flagged with its target."""
    return not a["flagged"] if truth == "clean" else a["flagged"] and a["target"] == truth


def summary_row(label: str, rows: list[dict[str, Any]], pick: Any, seeds: list[int]) -> str:
    """One way of deciding the seeded scans (``pick(row)``: its seeds' answers and spread), summed over the models."""
    picked = [(r["truth"], pick(r)) for r in rows]
    clean = [p for t, p in picked if t == "clean"]
    backdoors = [p for t, p in picked if t != "clean"]
    right_seeds = sum(right(t, p["seeds"][s]) for t, p in picked for s in seeds)
    sds = [p["index_sd"] for _, p in picked]
    return (f"| {label} | {sum(p['same_verdict'] for _, p in picked)} of {len(picked)} | "
            f"{right_seeds} of {len(picked) * len(seeds)} | "
            f"{sum(p['flagged_at'] > 0 for p in clean)} of {len(clean)} | "
            f"{sum(p['flagged_at'] < len(seeds) for p in backdoors)} of {len(backdoors)} | "
            f"{statistics.median(sds):.2f} | {max(sds):.2f} |")


def model_table(rows: list[dict[str, Any]], pick: Any, seeds: list[int], recorded: bool) -> list[str]:
    head = "| model | truth | " + ("recorded | " if recorded else "") + " | ".join(f"seed {s}" for s in seeds)
    lines = [head + " | same | index sd | range |",
             "|---|---|" + ("---|" if recorded else "") + "---|" * len(seeds) + "---|---|---|"]
    for r in rows:
        p = pick(r)
        lines.append(f"| {r['model']} | {r['truth']} | " + (f"{_cell(r['recorded'])} | " if recorded else "")
                     + " | ".join(_cell(p["seeds"][s]) for s in seeds)
                     + f" | {'yes' if p['same_verdict'] else '**no**'} | {p['index_sd']:.2f} | "
                       f"{p['index_range']:.2f} |")
    return lines


def write(out: Path, zoo: Path, band: tuple[float, float], seeds: list[int], rows: list[dict[str, Any]],
          candidates: list[str], noises: list[dict[str, Any]], pairs: dict[str, Any]) -> None:
    lines = [
        "# A verdict and the scan's own seed (issue 18)",
        "",
        f"`python benchmarks/verdict_stability.py {' '.join(sys.argv[1:])}`, one run, {machine_name('cpu')}, "
        f"{platform.machine()}, torch {torch.__version__}. The models of `{zoo}` whose recorded default top anomaly "
        f"index, as stored with that scan, lies within [{band[0]}, {band[1]}] (the rule was set before the run; the "
        "recorded column shows that scan decided by today's rule), each scanned by default with "
        f"seeds {', '.join(map(str, seeds))} (fitting and held-out images, batches, patch places) and decided with "
        f"the shipped reference at the threshold {DEFAULT_THRESHOLD:g}. Flagged answers in bold: the named target "
        "and the top index (its class when not flagged). *Recorded*: the scan detection.md reports, seed 0 on "
        "another day's machine. Choice-zoo figures: not results.",
        "",
        "| decided with | same verdict under every seed | right (model x seed) | clean flagged under some seed | "
        "backdoors missed under some seed | median index sd | largest index sd |",
        "|---|---|---|---|---|---|---|",
        summary_row("the default scan (colour family: 3 steps of 8 images)", rows, lambda r: r, seeds),
    ]
    lines += [summary_row(f"the colour family's rates measured with {spec.replace('/', ' steps of ')} images", rows,
                          lambda r, spec=spec: r["colour"][spec], seeds) for spec in candidates]
    if candidates:
        lines += ["", "A candidate sample would replace the default's 8 images only if, on the whole dev zoo "
                  "(benchmarks/colour_choice.md, seed 0), its accuracy were no lower than the default's and, here, it "
                  "gave more right answers over the models and seeds; of two such, the smaller (less time). The "
                  "rule was set before the candidates' seeded decisions were read."]
    lines += ["", "Where the movement comes from, per family, over every class of these models (root mean variances, "
              "in flip-rate units): over the three seeds; what counting flips on so few images alone gives (the "
              "binomial p(1 - p) / n of each estimate); the shipped reference's clean learners between them (the "
              "additive family's held-out rates under the fast schedule, as the scan's finalists are measured).", "",
              "| family | classes | images counted per estimate | over seeds | counting alone | between clean learners "
              "|", "|---|---|---|---|---|---|"]
    lines += [f"| {n['family']} | {n['classes']} | {n['images']} | {n['sd_over_seeds']:.3f} | "
              f"{n['sd_of_counting']:.3f} | "
              + (f"{n['sd_between_clean_learners']:.3f}" if n["sd_between_clean_learners"] is not None else "-") + " |"
              for n in noises]
    lines += ["", "A borderline verdict inverted again: each model decided on two of its seeded scans at once (each "
              "scan's classes calibrated with the shipped reference, their evidence averaged class by class, then the "
              "engine's rule), over every pair of seeds, beside one scan per decision.", "",
              "| decided on | decisions | right | clean learners flagged |", "|---|---|---|---|"]
    lines += [f"| {label} | {p['decisions']} | {p['right']} ({p['right'] / p['decisions']:.0%}) | "
              f"{p['clean_flagged']} of {p['clean_decisions']} |" for label, p in pairs.items()]
    lines += ["", "## The default scan", "", *model_table(rows, lambda r: r, seeds, recorded=True)]
    for spec in candidates:
        lines += ["", f"## The colour family measured with {spec.replace('/', ' steps of ')} images", "",
                  *model_table(rows, lambda r, spec=spec: r["colour"][spec], seeds, recorded=False)]
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    out.with_suffix(".json").write_text(json.dumps({"zoo": str(zoo), "band": band, "seeds": seeds,
                                                   "colour_candidates": candidates, "noise": noises,
                                                   "two_scans": pairs, "rows": rows}, indent=1) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--zoo", type=Path, default=ROOT / "benchmarks" / "zoos" / "dev")
    parser.add_argument("--band", default="1.4,2.8", help="recorded top index range of the models scanned")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--colour", default="", help="colour family samples (steps/images, comma-separated) to "
                                                     "decide the seeded scans again with")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "verdict_stability")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    low, high = (float(v) for v in args.band.split(","))
    seeds = [int(s) for s in args.seeds.split(",")]
    zoo = args.zoo if args.zoo.is_absolute() else Path.cwd() / args.zoo
    candidates = [c for c in args.colour.split(",") if c]
    references = {kind: base_reference(kind, "shipped") for kind in KINDS}
    rows = seeded_scans(zoo, (low, high), seeds, references)
    with_colour_candidates(zoo, rows, candidates)
    write(args.out, args.zoo, (low, high), seeds, rows, candidates, noise(zoo, rows, seeds, references),
          averaged(zoo, rows, seeds, references))


if __name__ == "__main__":
    main()
