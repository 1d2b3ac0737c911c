"""The probability of being backdoored (issue 22): a logistic fit of the default scan's top anomaly index on the dev
zoo, written to inspector/calibration.json for every scan to report, and judged once on the paper issue's test zoo.

    .venv/bin/python benchmarks/calibration.py

Reads the recorded default scans (benchmarks/detection_dev.json, detection_test3.json; made by
benchmarks/detection.py), so it runs in seconds. The choice between the index itself and log(1 + index) as the
fit's inputs (the index, log(1 + index), the index with the suspect class's flip rate) is made on the dev zoo alone
(leave-one-out cross-entropy); the test zoo is read only after the calibration file is written, and nothing is chosen
on it.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import log_loss, roc_auc_score
from sklearn.model_selection import LeaveOneOut, cross_val_predict

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from inspector.calibration import CALIBRATION_FILE, Calibration, features  # noqa: E402

CANDIDATES = (("index",), ("log_index",), ("index", "flip_rate"))

HERE = Path(__file__).resolve().parent
METHOD = "inspector + reference"
WORDS = {"index": "index", "log_index": "log(1 + index)", "flip_rate": "flip rate"}
VERDICT_CLIP = 0.01  # a verdict read as a probability: flagged 0.99, not flagged 0.01 (0 and 1 give infinite loss)


def rows_of(zoo: str) -> list[dict[str, Any]]:
    return json.loads((HERE / f"detection_{zoo}.json").read_text())["scans"][METHOD]


def labelled(rows: list[dict[str, Any]]) -> tuple[np.ndarray, np.ndarray]:
    truth = np.array([bool(r["backdoored"]) for r in rows], dtype=int)
    verdict = np.array([bool(r["flagged"]) for r in rows], dtype=int)
    return truth, verdict


def design(rows: list[dict[str, Any]], inputs: tuple[str, ...]) -> np.ndarray:
    return np.array([features(r["max_anomaly"], r["suspect_flip_rate"], inputs) for r in rows])


def loo_cross_entropy(rows: list[dict[str, Any]], truth: np.ndarray, inputs: tuple[str, ...]) -> float:
    probabilities = cross_val_predict(LogisticRegression(C=1.0), design(rows, inputs), truth, cv=LeaveOneOut(),
                                      method="predict_proba")[:, 1]
    return float(log_loss(truth, probabilities, labels=[0, 1]))


def judged(probability: np.ndarray, verdict: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    """Cross-entropy and AUROC of the probability and of the bare verdict (clipped to 0.01 / 0.99)."""
    as_probability = np.where(verdict == 1, 1 - VERDICT_CLIP, VERDICT_CLIP)
    return {"probability_cross_entropy": round(float(log_loss(truth, probability, labels=[0, 1])), 4),
            "probability_auroc": round(float(roc_auc_score(truth, probability)), 4),
            "verdict_cross_entropy": round(float(log_loss(truth, as_probability, labels=[0, 1])), 4),
            "verdict_auroc": round(float(roc_auc_score(truth, verdict)), 4),
            "brier": round(float(np.mean((probability - truth) ** 2)), 4),
            "models": int(len(truth)), "backdoored": int(truth.sum()), "clean": int(len(truth) - truth.sum())}


def bins(probability: np.ndarray, truth: np.ndarray) -> list[tuple[str, int, float, float]]:
    """Reliability: per probability band, models, mean probability, share backdoored."""
    out = []
    for low, high in ((0, 0.1), (0.1, 0.5), (0.5, 0.9), (0.9, 1.0001)):
        inside = (probability >= low) & (probability < high)
        if inside.any():
            out.append((f"{low:.1f}–{min(high, 1):.1f}", int(inside.sum()), float(probability[inside].mean()),
                        float(truth[inside].mean())))
    return out


def main() -> None:
    dev = rows_of("dev")
    truth, verdict = labelled(dev)
    scores = {inputs: loo_cross_entropy(dev, truth, inputs) for inputs in CANDIDATES}
    chosen = min(scores, key=scores.get)
    model = LogisticRegression(C=1.0).fit(design(dev, chosen), truth)
    calibration = Calibration(inputs=chosen, weights=tuple(round(float(w), 6) for w in model.coef_[0]),
                              intercept=round(float(model.intercept_[0]), 6),
                              fitted_on=f"the dev zoo's {len(dev)} default scans ({int(truth.sum())} backdoored, "
                                        f"{int(len(truth) - truth.sum())} clean; benchmarks/calibration.md)")
    CALIBRATION_FILE.write_text(json.dumps(calibration.record(), indent=1) + "\n")
    dev_probability = np.array([calibration.probability(r["max_anomaly"], r["suspect_flip_rate"]) for r in dev])
    dev_judged = judged(dev_probability, verdict, truth)

    test = rows_of("test3")  # read only now, after the calibration is written
    t_truth, t_verdict = labelled(test)
    t_probability = np.array([calibration.probability(r["max_anomaly"], r["suspect_flip_rate"]) for r in test])
    test_judged = judged(t_probability, t_verdict, t_truth)

    result = {"chosen_on_dev": {"leave_one_out_cross_entropy": {" + ".join(k): round(v, 4) for k, v in scores.items()},
                                "inputs": chosen},
              "calibration": calibration.record(), "dev": dev_judged, "test3": test_judged,
              "test3_models": [{"model": r["model"], "backdoored": r["backdoored"], "attack": r["attack"],
                                "max_anomaly": r["max_anomaly"], "suspect_flip_rate": r["suspect_flip_rate"],
                                "flagged": r["flagged"],
                                "probability": round(float(p), 4)} for r, p in zip(test, t_probability, strict=True)]}
    (HERE / "calibration.json").write_text(json.dumps(result, indent=1) + "\n")

    terms = " ".join(f"{w:+.4f} · {WORDS[name]}" for w, name in zip(calibration.weights, chosen, strict=True))
    lines = ["# The probability of being backdoored (issue 22)", "",
             "Made by `.venv/bin/python benchmarks/calibration.py` from the recorded default scans of "
             "`detection_dev.json` (dev zoo: the fit and its one choice) and `detection_test3.json` (the paper "
             "issue's test zoo, read once after the fit; nothing chosen on it). Scans ran on this machine's CPU "
             "(`device` of each row in those files).", "",
             "## The fit (dev zoo)", "",
             "A logistic regression (scikit-learn, L2 with C = 1) of *backdoored* on what the default scan reports. "
             "Its inputs were chosen by leave-one-out cross-entropy on the dev zoo (lower is better):", "",
             "| inputs | leave-one-out cross-entropy (dev) |", "|---|---|",
             *[f"| {' + '.join(WORDS[n] for n in k)} | {v:.4f}{' ← chosen' if k == chosen else ''} |"
               for k, v in scores.items()], "",
             f"p = 1 / (1 + exp(−({terms} {calibration.intercept:+.4f}))), with the top anomaly index floored at 0; "
             "the verdict itself flags an index above 2 with a flip rate of at least 50%.", "",
             "Shipped as `inspector/calibration.json`; every inspector scan of all classes with a clean reference "
             "reports it (`probability` in report.json, `fleet.jsonl`, `fleet.html`). Scans with other settings (no "
             "reference, a baseline method, some classes only) report none: the fit says nothing about their "
             "indices.", "",
             "## Judged", "",
             "Cross-entropy (nats, lower is better) and AUROC of the probability, and of the bare verdict read as "
             f"a probability ({1 - VERDICT_CLIP:.2f} when flagged, {VERDICT_CLIP:.2f} when not).", "",
             "| zoo | models (backdoored / clean) | probability: cross-entropy | probability: AUROC | "
             "verdict: cross-entropy | verdict: AUROC | Brier |", "|---|---|---|---|---|---|---|"]
    for name, j in (("dev (fitted on it: in-sample)", dev_judged), ("**test3 (out of sample)**", test_judged)):
        lines.append(f"| {name} | {j['models']} ({j['backdoored']} / {j['clean']}) | "
                     f"{j['probability_cross_entropy']:.3f} | {j['probability_auroc']:.3f} | "
                     f"{j['verdict_cross_entropy']:.3f} | {j['verdict_auroc']:.3f} | "
                     f"{j['brier']:.3f} |")
    better = [name for name, key in (("cross-entropy", "cross_entropy"), ("AUROC", "auroc"))
              if (test_judged[f"probability_{key}"] < test_judged[f"verdict_{key}"]) == (key == "cross_entropy")]
    lines += ["", "On the test zoo the probability beats the bare verdict on "
              f"{' and '.join(better) or 'neither measure'} (cross-entropy "
              f"{test_judged['probability_cross_entropy']:.3f} against "
              f"{test_judged['verdict_cross_entropy']:.3f}, AUROC {test_judged['probability_auroc']:.3f} against "
              f"{test_judged['verdict_auroc']:.3f}). The verdict also asks the suspect's flip rate to reach 50%, which "
              "the chosen fit leaves out (on the dev zoo adding it did not help); read p beside the verdict, not "
              "instead of it."]
    lines += ["", "Reliability on the test zoo (does p mean what it says?):", "",
              "| p band | models | mean p | share backdoored |", "|---|---|---|---|"]
    lines += [f"| {band} | {n} | {mean:.2f} | {share:.2f} |" for band, n, mean, share in bins(t_probability, t_truth)]
    lines += ["", "Every test-zoo model:", "", "| model | attack | index | flip rate | flagged | p |",
              "|---|---|---|---|---|---|"]
    lines += [f"| {m['model']} | {m['attack'] or 'clean'} | {m['max_anomaly']:.2f} | {m['suspect_flip_rate']:.0%} | "
              f"{'yes' if m['flagged'] else 'no'} | {m['probability']:.3f} |"
              for m in sorted(result["test3_models"], key=lambda m: -m["probability"])]
    lines += ["", "Limits: the fit knows only the pocket world's default scan (its reference, ε and schedule) on 55 "
              "dev models. What it adds over the verdict is a graded number for ranking and triage. On another task "
              "or backbone, refit it on a dev zoo of that task before trusting its values.", ""]
    (HERE / "calibration.md").write_text("\n".join(lines))
    print("\n".join(lines[:30]))
    assert math.isfinite(test_judged["probability_cross_entropy"])


if __name__ == "__main__":
    main()
