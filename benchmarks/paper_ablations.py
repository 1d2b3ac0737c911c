"""CLIP-Inspector's ablations (issue 19), run on the third test zoo: the inversion loss, the OOD pool's size, the
batch size, OOD against in-distribution images, and the SSIM of clean against triggered images.

    .venv/bin/python benchmarks/paper_ablations.py                 # every ablation, CoOp models first (cached)
    .venv/bin/python benchmarks/paper_ablations.py --only loss --kinds coop
    .venv/bin/python benchmarks/paper_ablations.py --only basins     # exact and noisy-trigger ASR of learned triggers

Every scan is the paper's own (the faithful schedule: one epoch, Adam 0.1, the anomaly index on raw flip rates, no
clean reference, no colour family), so the ablations compare with each other and with the paper, not with the
engine's default scan; one setting changes at a time from the paper's (margin loss, 1,000 OOD images, batch 32).
Scans go through ``detection.scan_model`` and are cached under ``<zoo>/ablations/<setting>/``; the table is
made by benchmarks/paper.py. SSIM (scikit-image, benchmarks/requirements.txt) compares the task's test images with
their triggered copies, for the implanted trigger and for the default scan's reconstruction of the target's.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.detection import _saved_trigger, scan_model  # noqa: E402
from inspector.candidates import CandidateTrigger, candidate_from_tensors  # noqa: E402
from inspector.data import load_shipped_pool, load_task  # noqa: E402
from inspector.lab.implant import LEARNED  # noqa: E402
from inspector.lab.truth import attack_success_rate, noisy_trigger_asr, read_ground_truth  # noqa: E402
from inspector.prompts import open_model, read_header  # noqa: E402

HERE = Path(__file__).resolve().parent
ZOO = HERE / "zoos" / "test3"
# ablation -> its settings: label -> (scan overrides, images). The paper's setting is the first of each
# that has no override; "in-distribution" scans the task's test images, used unlabelled, at the 500-image size.
ABLATIONS: dict[str, dict[str, tuple[dict[str, Any], str]]] = {
    "loss": {"margin": ({}, "ood"), "cross-entropy": ({"objective": "cross-entropy"}, "ood"),
             "target logit": ({"objective": "target-logit"}, "ood")},
    "pool": {"100": ({"pool_size": 100}, "ood"), "500": ({"pool_size": 500}, "ood"), "1,000": ({}, "ood")},
    "batch": {"1": ({"batch_size": 1}, "ood"), "32": ({}, "ood"), "64": ({"batch_size": 64}, "ood")},
    "images": {"OOD (500)": ({"pool_size": 500}, "ood"), "in-distribution (500)": ({"pool_size": 500}, "task")},
}
SSIM_FILE = "ssim.json"
BASINS_FILE = "basins.json"
BASIN_NOISE = 2.0  # std of the noise on a trigger, in units of its bound (the adaptive recipe's)
TEST_ZOOS_WITH_BADCLIP = ("test", "test2")  # BadCLIP's test-zoo models, beside the third zoo's adaptive ones
DEFAULT_SCANS = "inspector-reference-colour3x8"  # benchmarks/detection.py's folder of the default scans


def setting_folder(overrides: dict[str, Any], images: str) -> str:
    """One cache folder per distinct scan, so settings shared by two ablations are scanned once."""
    parts = [f"{key}-{value}" for key, value in sorted(overrides.items())] + ([images] if images != "ood" else [])
    return "paper-" + ("-".join(parts) or "default")


def zoo_models(zoo: Path, kinds: tuple[str, ...]) -> list[Path]:
    """The zoo's learner files of ``kinds``, CoOp first (the cheaper scans)."""
    files = sorted(zoo.glob("*.safetensors"))
    kind_of = {path: read_header(path).get("kind", "coop") for path in files}
    return [path for kind in kinds for path in files if kind_of[path] == kind]


def run_ablations(zoo: Path, only: list[str], kinds: tuple[str, ...]) -> None:
    pools = {"ood": load_shipped_pool().pixels, "task": load_task().test_pixels}
    wanted = {setting_folder(*setting): setting for name in only for setting in ABLATIONS[name].values()}
    for path in zoo_models(zoo, kinds):
        for folder, (overrides, images) in wanted.items():
            cache = zoo / "ablations" / folder / f"{path.stem}.json"
            fresh = not cache.exists()
            row = scan_model(path, "inspector-faithful", cache, pools[images], None, overrides=overrides)
            if fresh:
                print(f"{folder:40s} {path.stem:40s} flagged={row['flagged']} target={row['predicted_target']} "
                      f"index={row['max_anomaly']:.2f} ({row['seconds']:.0f} s)", flush=True)


def ssim(clean: torch.Tensor, triggered: torch.Tensor) -> float:
    """Mean SSIM over images ((N, 3, S, S) in [0, 1]), scikit-image's Gaussian-weighted form (Wang et al. 2004)."""
    from skimage.metrics import structural_similarity

    values = [structural_similarity(a.permute(1, 2, 0).numpy(), b.permute(1, 2, 0).numpy(), channel_axis=2,
                                    data_range=1.0, gaussian_weights=True, sigma=1.5, use_sample_covariance=False)
              for a, b in zip(clean, triggered, strict=True)]
    return float(np.mean(values))


def reconstructed(zoo: Path, stem: str, target: int) -> CandidateTrigger | None:
    """The default scan's additive trigger for class ``target`` (every class's is saved beside its cached row)."""
    folder = zoo / "scans" / DEFAULT_SCANS
    if not (folder / f"{stem}.triggers.pt").exists():
        return None
    epsilon = json.loads((folder / f"{stem}.json").read_text())["settings"]["epsilon"]
    return candidate_from_tensors("inspector", _saved_trigger(folder / stem, target), epsilon)


def measure_ssim(zoo: Path) -> None:
    """SSIM of the test images against the implanted trigger's and the reconstructed trigger's copies."""
    images = load_task().test_pixels[:200]
    rows = []
    for path in zoo_models(zoo, ("coop", "cocoop")):
        truth = read_ground_truth(path)
        if truth is None:
            continue
        with torch.no_grad():
            original = round(ssim(images, truth.trigger(images)), 4)
            row = {"model": path.stem, "attack": truth.attack, "original": original}
            found = reconstructed(zoo, path.stem, truth.target)
            row["reconstructed"] = round(ssim(images, found(images)), 4) if found is not None else None
        rows.append(row)
        print(row, flush=True)
    (zoo / "ablations").mkdir(parents=True, exist_ok=True)
    (zoo / "ablations" / SSIM_FILE).write_text(json.dumps(rows, indent=1) + "\n")


def measure_basins(zoos: list[Path]) -> None:
    """How wide each learned trigger's basin is: its ASR exact and with Gaussian noise of twice its bound added (the
    adaptive attack's second phase teaches the noisy copies their true labels), for BadCLIP and the adaptive
    BadCLIP of the test zoos, on the task's test images."""
    task = load_task()
    rows = []
    for zoo in zoos:
        for path in zoo_models(zoo, ("coop", "cocoop")):
            truth = read_ground_truth(path)
            if truth is None or truth.attack not in LEARNED:
                continue
            model = open_model(path)
            sigma = truth.record["recipe"].get("adaptive_noise", BASIN_NOISE) * truth.trigger.epsilon
            rows.append({"model": path.stem, "zoo": zoo.name, "attack": truth.attack, "kind": model.kind,
                         "asr": round(attack_success_rate(model, truth.trigger, task.test_pixels, truth.target,
                                                          task.test_labels), 4),
                         "noisy_asr": noisy_trigger_asr(model, truth.trigger, sigma, task.test_pixels,
                                                        task.test_labels, truth.target)})
            print(rows[-1], flush=True)
    (zoos[-1] / "ablations").mkdir(parents=True, exist_ok=True)
    (zoos[-1] / "ablations" / BASINS_FILE).write_text(json.dumps(rows, indent=1) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--zoo", default=str(ZOO))
    extra = ["ssim", "basins"]
    parser.add_argument("--only", default=",".join([*ABLATIONS, *extra]), help="of: " + ", ".join([*ABLATIONS, *extra]))
    parser.add_argument("--kinds", default="coop,cocoop")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    zoo, only = Path(args.zoo), [name for name in args.only.split(",") if name]
    torch.set_num_threads(args.threads)
    if "basins" in only:
        measure_basins([HERE / "zoos" / name for name in TEST_ZOOS_WITH_BADCLIP] + [zoo])
    if "ssim" in only:
        measure_ssim(zoo)
    run_ablations(zoo, [name for name in only if name in ABLATIONS], tuple(args.kinds.split(",")))


if __name__ == "__main__":
    main()
