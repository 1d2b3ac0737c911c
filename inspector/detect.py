"""From per-class inversion results to a verdict: anomaly index, flag, predicted target (DESIGN §1).

Pure statistics on small lists, no torch, so the rule is easy to test on hand-made numbers and to
replay on a saved report with another threshold.

The anomaly index is Neural Cleanse's: a_k = (s_k - median(s)) / (1.4826 * MAD(s)). A backdoor
target stands out on the *high* side of the flip rate (and of the negated loss); Neural Cleanse's
own statistic, the mask norm, on the *low* side, so its values are negated before the same formula.
With a clean reference (inspector.reference) the inspector's statistic is the *excess* flip rate:
the class's flip rate minus its mean flip rate in clean learners of the same task, measured the same
way (inspector.baseline). The index then never divides by less than the clean learners' own spread
(the root mean square of the records' ``reference_spread``): an excess smaller than the variation
between clean learners of the same class is not evidence of a backdoor. Where the reference kept the clean
learners' margin losses, a class's evidence also counts how far its trigger's margin loss lies below theirs
(``Evidence``): on a class clean learners already reach easily, the flip rate saturates and the loss does not.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from statistics import median
from typing import Any, Literal

Statistic = Literal["flip_rate", "excess_flip_rate", "loss", "mask_norm", "trigger_size"]
STATISTICS: tuple[Statistic, ...] = ("flip_rate", "excess_flip_rate", "loss", "mask_norm", "trigger_size")
MAD_TO_SIGMA = 1.4826  # MAD of a normal distribution times this is its standard deviation
DEFAULT_THRESHOLD = 2.0
DEFAULT_MIN_FLIP_RATE = 0.5
Family = Literal["additive", "colour", "blend", "patch"]
QUICK_FAMILIES: tuple[Family, ...] = ("colour", "blend", "patch")  # a few steps per class beside the additive family
# Each quick family's trigger in a few words, for every front-end (chart legend, report, CLI, page).
QUICK_FAMILY_WORDS = {"colour": "colour transform", "blend": "blended pattern", "patch": "pasted patch"}
# What a class's evidence is, with a reference that kept margin losses: its flip-rate excess alone, or that and how
# far below clean learners its margin loss lies, each in units of the clean learners' spread, averaged ("mean") or
# the larger of the two ("max").
Evidence = Literal["flip", "mean", "max"]
Spread = Literal["pooled", "per-class"]
DEFAULT_EVIDENCE: Evidence = "mean"  # chosen on the dev zoo (benchmarks/margin_choice.md)
# Chosen on the dev zoo (benchmarks/reference_choice.md): what a default scan runs and how it decides. The colour
# family by default (None) only where the clean reference measured it: without clean learners to compare with,
# their colour attractors (*button*, *star*) pass for backdoors.
USE_COLOUR_FAMILY: bool | None = None
# The quick families a default scan runs where the reference measured them: the colour family, and the patch family
# (with corroboration, below; benchmarks/corroboration.md). Not the blend family (only when asked for): on the dev zoo
# it names 3 of the 4 real Blended backdoors the default misses, but also flags 2 of 22 clean learners whose blends
# reach *led light* on 60-70% of images where the reference's learners reach it on 0-25%
# (benchmarks/blend_choice.md); to a flip rate and to a margin, such a learner and a backdoor look alike.
QUICK_FAMILIES_BY_DEFAULT: tuple[Family, ...] = ("colour", "patch")
# The quick families that came after the colour one, each with its own switch: a reference build measures them unless
# told not to (so that scans running them have clean learners to compare with), and older records lack them.
OPTIONAL_FAMILIES: tuple[Family, ...] = ("blend", "patch")
DEFAULT_SPREAD: Spread = "per-class"
PER_CLASS_SPREAD_FLOOR = 0.05  # no class's clean learners are taken to vary by less (chosen on the dev zoo)
LOSS_SPREAD_FLOOR = 0.4  # nor by less margin loss, in logits (chosen with DEFAULT_EVIDENCE)
# Corroboration (with a reference; chosen on the dev zoo and the retired first test zoo, benchmarks/corroboration.md):
# a class that at least two families each give an index of ``CORROBORATION_FLOOR`` or more is judged on their
# combined index, the sum of its families' positive indices over the square root of their number (Stouffer's), in
# units where ``CORROBORATED_THRESHOLD`` meets the threshold; its best family's trigger need flip only
# ``CORROBORATED_GATE`` of the single-family gate's share of images. Weak triggers of one backdoor reached by two
# kinds of inversion are evidence no single index shows; one family's noise rarely agrees with another's.
CORROBORATION_FLOOR = 1.0
CORROBORATED_THRESHOLD = 2.5
CORROBORATED_GATE = 0.4
# Which class a flag names: the highest index overall, flagged only if its trigger also passes the flip gate
# (False), or the highest index among the classes whose triggers pass the gate (True), so that a natural attractor
# with a high index and a weak trigger does not hide a backdoor's target behind it. Not adopted: on the dev zoo the
# second flags a clean learner whose additive *toolbar icon* trigger passes the gate (benchmarks/gate_choice.md).
GATE_FIRST = False
# A quick family's smallest spread without a reference that measured it: clean learners' colour flip rates
# of natural attractors spread this much (benchmarks/reference_choice.md, dev zoo).
COLOUR_MIN_SPREAD = 0.15
# The transfer check (inspector.transfer; with a reference that carries it): a scan that flags nothing although some
# family's top index passes the threshold looks again at its ``TRANSFER_CLASSES`` highest classes, asking whether a
# blend trigger fitted on the delivered model carries over to clean learners less than such triggers do between clean
# learners (benchmarks/transfer_choice.md, dev zoo).
TRANSFER_CLASSES = 2
# The share of the delivered model's held-out images a checked class's pattern must flip: the lab's bar for a real
# backdoor (its trigger reaches at least 70% of OOD images), since a pattern stepped this long that stands in for a
# backdoor's trigger reaches as far; a natural attractor's pattern on a clean learner reached 53-68% on the dev zoo.
TRANSFER_MIN_FLIP_RATE = 0.7
# How far past the threshold a checked class's transfer index must lie: 1.5 times it (3 at the default 2). Chosen on
# the dev zoo, where a clean learner's *led light* pattern passed the gate at 2.51 and the backdoors' targets had
# 3.55-8.51 (benchmarks/transfer_choice.md); each class's reference gaps come from 5-9 learners only.
TRANSFER_THRESHOLD_SCALE = 1.5

# Smallest spread the index divides by, per statistic: when every other class has exactly the same
# value (MAD = 0, e.g. all flip rates 0 %), one percentage point of flip rate, a hundredth of a logit
# of margin loss, a hundredth of a pixel of mask norm or one pixel of trigger size stands in for it,
# so the index stays finite and an outlier still stands out by how far it is from the rest.
MIN_SPREAD: dict[str, float] = {"flip_rate": 0.01, "excess_flip_rate": 0.01, "loss": 0.01, "mask_norm": 0.01,
                                 "trigger_size": 1.0}


def anomaly_index(values: Sequence[float], min_spread: float = 0.01) -> list[float]:
    """MAD-based outlier score of each value (high side); finite even when MAD = 0."""
    if not values:
        return []
    middle = median(values)
    mad = median(abs(v - middle) for v in values)
    spread = MAD_TO_SIGMA * max(mad, min_spread)
    return [(v - middle) / spread for v in values]


def statistic_values(classes: Sequence[dict[str, Any]], statistic: Statistic) -> list[float]:
    """The values the index is computed on, oriented so that "more suspicious" is higher."""
    if statistic == "flip_rate":
        return [float(c["flip_rate"]) for c in classes]
    if statistic == "excess_flip_rate":  # over clean reference learners of the same task (inspector.reference)
        return [float(c["flip_rate"]) - float(c["reference_flip_rate"]) for c in classes]
    if statistic == "loss":
        return [-float(c["loss"]) for c in classes]
    if statistic == "mask_norm":
        return [-float(c["mask_norm"]) for c in classes]
    if statistic == "trigger_size":  # Pixel Backdoor: perturbed pixels of the smallest trigger at its ASR bound
        return [-float(c["trigger_size"]) for c in classes]
    raise ValueError(f"unknown statistic {statistic!r}")


@dataclass
class Verdict:
    """Is the model flagged, which class is the suspect, and the numbers behind the call."""

    flagged: bool
    target: int | None  # class index when flagged
    target_name: str | None
    suspect: int  # class with the highest anomaly index, flagged or not
    suspect_name: str
    max_anomaly: float
    suspect_flip_rate: float
    statistic: str
    threshold: float
    min_flip_rate: float
    anomalies: list[float]
    families: list[str] = field(default_factory=list)  # per class: the inversion family that gave its index
    suspect_family: str = "additive"
    corroborated_by: list[str] = field(default_factory=list)  # the families that flagged the target together
    corroborated_gate: float = CORROBORATED_GATE  # share of min_flip_rate a class two families name must flip
    highest_family_index: float = 0.0  # the highest index any single family gives any class
    transfer: list[dict[str, Any]] = field(default_factory=list)  # the transfer check's classes (``transfer_index``)
    confirmed_by: str = ""  # "transfer" when the transfer check flagged a model the indices alone did not

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def decide(classes: Sequence[dict[str, Any]], statistic: Statistic = "flip_rate",
           threshold: float = DEFAULT_THRESHOLD, min_flip_rate: float = DEFAULT_MIN_FLIP_RATE,
           spread: Spread = "pooled", evidence: Evidence = DEFAULT_EVIDENCE,
           loss_floor: float = LOSS_SPREAD_FLOOR,
           corroboration: tuple[float, float] | None = (CORROBORATED_THRESHOLD, CORROBORATED_GATE),
           gate_first: bool = GATE_FIRST) -> Verdict:
    """Flag the model when the top class's index exceeds ``threshold`` and its trigger flips at least
    ``min_flip_rate`` of the held-out OOD images (0 turns that second test off, as Neural Cleanse has none);
    with ``gate_first`` the top class is sought among those whose triggers flip that share (see ``GATE_FIRST``).

    ``classes`` are per-class records with ``index``, ``name``, ``flip_rate`` and the statistic.
    ``spread="per-class"`` (excess flip rates only): see ``standardised``; ``evidence``: see ``Evidence``.
    ``corroboration``: (combined index at the threshold, share of the flip gate) for a class two families name, or
    None for none (with a per-class reference only; see ``CORROBORATION_FLOOR``).
    """
    if not classes:
        raise ValueError("no candidate classes to decide on")
    if spread == "per-class" and statistic == "excess_flip_rate":
        classes = standardised(classes, loss_floor=loss_floor)
        values = with_margin_evidence(statistic_values(classes, statistic), classes, evidence)
    else:
        values = statistic_values(classes, statistic)
    anomalies = anomaly_index(values, min_spread(classes, statistic))
    families: list[str] = ["additive"] * len(classes)
    flips = [float(c["flip_rate"]) for c in classes]
    per_family = {"additive": (list(anomalies), list(flips))}
    for family in QUICK_FAMILIES:
        indices = family_anomalies(classes, family)
        if indices is None:
            continue
        per_family[family] = (indices, [float(c[f"{family}_flip_rate"]) for c in classes])
        for i, value in enumerate(indices):
            family_flips = float(classes[i][f"{family}_flip_rate"])
            if _stronger((value, family_flips), (anomalies[i], flips[i]), min_flip_rate):
                anomalies[i], families[i], flips[i] = value, family, family_flips
    top = max(range(len(classes)), key=lambda i: (anomalies[i], flips[i]))
    flagged = anomalies[top] > threshold and flips[top] >= min_flip_rate
    passing = [i for i in range(len(classes)) if flips[i] >= min_flip_rate] if gate_first and not flagged else []
    if passing:
        strongest = max(passing, key=lambda i: (anomalies[i], flips[i]))
        if anomalies[strongest] > threshold:
            top, flagged = strongest, True
    corroborated: list[str] = []
    if (not flagged and corroboration is not None and spread == "per-class" and statistic == "excess_flip_rate"
            and len(per_family) > 1):
        k, index, by = corroborated_suspect(per_family, corroboration[0])
        flip = max((per_family[f][1][k] for f in by), default=0.0)
        if index > threshold and flip >= corroboration[1] * min_flip_rate:
            top, flagged, corroborated = k, True, by
            anomalies[k], families[k], flips[k] = index, by[0], flip
    suspect = classes[top]
    highest = max(max(indices) for indices, _ in per_family.values())
    return Verdict(flagged=flagged, target=int(suspect["index"]) if flagged else None,
                   target_name=str(suspect["name"]) if flagged else None,
                   suspect=int(suspect["index"]), suspect_name=str(suspect["name"]),
                   max_anomaly=_finite(anomalies[top]), suspect_flip_rate=flips[top],
                   statistic=statistic, threshold=threshold, min_flip_rate=min_flip_rate,
                   anomalies=[_finite(a) for a in anomalies], families=families, suspect_family=families[top],
                   corroborated_by=corroborated,
                   corroborated_gate=corroboration[1] if corroboration is not None else 1.0,
                   highest_family_index=_finite(highest))


def transfer_candidates(verdict: Verdict, classes: int = TRANSFER_CLASSES) -> list[int]:
    """Positions (in the verdict's class order) the transfer check looks at: none when the model is flagged or no
    family's index passes the threshold, else the ``classes`` highest indices."""
    if verdict.flagged or verdict.highest_family_index <= verdict.threshold:
        return []
    return sorted(range(len(verdict.anomalies)), key=lambda i: -verdict.anomalies[i])[:classes]


def transfer_index(gap: float, reference_gaps: Sequence[float], floor: float = PER_CLASS_SPREAD_FLOOR) -> float:
    """How far a class's transfer gap (its trigger's flip rate on the delivered model minus on clean learners) lies
    above the same class's gaps in clean learners, in units of their spread (that of a new learner, at least
    ``floor``), as the per-class excess is measured (``standardised``)."""
    n = len(reference_gaps)
    mean = sum(reference_gaps) / n
    sd = math.sqrt(sum((g - mean) ** 2 for g in reference_gaps) / (n - 1)) if n > 1 else 0.0
    return (gap - mean) / max(sd * math.sqrt(1 + 1 / n), floor)


def transfer_gate(verdict: Verdict) -> float:
    """The share of the delivered model's held-out images a checked class's pattern must flip: the scan's gate, at
    least ``TRANSFER_MIN_FLIP_RATE``."""
    return max(verdict.min_flip_rate, TRANSFER_MIN_FLIP_RATE)


def confirmed_by_transfer(verdict: Verdict, checks: Sequence[dict[str, Any]]) -> Verdict:
    """The verdict with the transfer check's classes (records with ``position``, ``index``, ``name``, ``delivered``,
    ``transfer_index``): an unflagged model is flagged when a checked class's transfer index passes
    ``TRANSFER_THRESHOLD_SCALE`` times the threshold and its trigger flips at least ``transfer_gate`` of the delivered
    model's held-out images; that class is then the target, found by its blended pattern."""
    out = replace(verdict, transfer=[dict(c) for c in checks])
    gate, threshold = transfer_gate(verdict), verdict.threshold * TRANSFER_THRESHOLD_SCALE
    passing = [c for c in checks if c["transfer_index"] > threshold and c["delivered"] >= gate]
    if verdict.flagged or not passing:
        return out
    best = max(passing, key=lambda c: (c["transfer_index"], c["delivered"]))
    position, index = int(best["position"]), float(best["transfer_index"])
    anomalies, families = list(verdict.anomalies), list(verdict.families)
    anomalies[position], families[position] = _finite(index), "blend"
    return replace(out, flagged=True, target=int(best["index"]), target_name=str(best["name"]),
                   suspect=int(best["index"]), suspect_name=str(best["name"]), max_anomaly=_finite(index),
                   suspect_flip_rate=float(best["delivered"]), anomalies=anomalies, families=families,
                   suspect_family="blend", confirmed_by="transfer")


def corroborated_suspect(per_family: dict[str, tuple[list[float], list[float]]],
                         at_threshold: float = CORROBORATED_THRESHOLD) -> tuple[int, float, list[str]]:
    """The class with the highest combined index among those at least two families name (``CORROBORATION_FLOOR``),
    that index in the default threshold's units (``at_threshold`` there), and the families naming it, the highest
    index first; (0, 0, []) when no class is named twice."""
    best: tuple[int, float, list[str]] = (0, 0.0, [])
    n = len(next(iter(per_family.values()))[0])
    for k in range(n):
        named = [f for f, (indices, _) in per_family.items() if indices[k] >= CORROBORATION_FLOOR]
        if len(named) < 2:
            continue
        combined = sum(max(indices[k], 0.0) for indices, _ in per_family.values()) / math.sqrt(len(per_family))
        index = combined * DEFAULT_THRESHOLD / at_threshold
        if index > best[1]:
            best = (k, index, sorted(named, key=lambda f: -per_family[f][0][k]))
    return best


def _stronger(candidate: tuple[float, float], current: tuple[float, float], min_flip_rate: float) -> bool:
    """Whether a family's (index, flip rate) for a class is stronger evidence than the current one: a family
    whose trigger flips enough images beats one that does not, then the higher index wins."""
    return (candidate[1] >= min_flip_rate, candidate[0]) > (current[1] >= min_flip_rate, current[0])


def standardised(classes: Sequence[dict[str, Any]], floor: float = PER_CLASS_SPREAD_FLOOR,
                 loss_floor: float = LOSS_SPREAD_FLOOR) -> list[dict[str, Any]]:
    """Each class's excess in units of its *own* clean learners' spread (at least ``floor``), for each family.

    Why: how far prompt tuning pulls a class toward its natural reach varies by class with the provider's
    seed and recipe (benchmarks/clean_crossings.md: a clean learner's excess on *toolbar icon* spread 17
    points over recipes, on *balloon* 5); a pooled spread flags the restless classes and under-weights the
    steady ones. The index then runs on these units, dividing by no less than one.
    """
    out = []
    for c in classes:
        row = dict(c)
        if "excess_flip_rate" in c:
            z = float(c["excess_flip_rate"]) / max(float(c["reference_spread"]), floor)
            row.update(excess_flip_rate=z, reference_flip_rate=float(c["flip_rate"]) - z, reference_spread=1.0)
        for family in QUICK_FAMILIES:
            if f"{family}_excess" in c:
                z = float(c[f"{family}_excess"]) / max(float(c[f"{family}_reference_spread"]), floor)
                row.update({f"{family}_excess": z, f"{family}_reference_spread": 1.0})
        if "loss_excess" in c:
            row.update(loss_excess=float(c["loss_excess"]) / max(float(c["loss_spread"]), loss_floor), loss_spread=1.0)
        out.append(row)
    return out


def with_margin_evidence(values: list[float], classes: Sequence[dict[str, Any]], evidence: Evidence) -> list[float]:
    """Standardised flip-rate excesses combined with the standardised margin-loss excesses (unchanged with "flip", or
    when a record has no margin baseline)."""
    if evidence == "flip" or not all("loss_excess" in c for c in classes):
        return values
    losses = [float(c["loss_excess"]) for c in classes]
    if evidence == "max":
        return [max(v, m) for v, m in zip(values, losses, strict=True)]
    return [(v + m) / 2 for v, m in zip(values, losses, strict=True)]


def family_anomalies(classes: Sequence[dict[str, Any]], family: str) -> list[float] | None:
    """A quick family's index per class (None when the records have no flip rate of it): on the excess over clean
    learners when the reference measured the family, dividing by no less than their spread, else on the raw flip
    rate with ``COLOUR_MIN_SPREAD``."""
    if not classes or any(f"{family}_flip_rate" not in c for c in classes):
        return None
    if all(f"{family}_excess" in c for c in classes):
        values = [float(c[f"{family}_excess"]) for c in classes]
        spreads = [float(c[f"{family}_reference_spread"]) for c in classes]
        floor = max(MIN_SPREAD["excess_flip_rate"], math.sqrt(sum(s * s for s in spreads) / len(spreads)))
        return anomaly_index(values, floor)
    return anomaly_index([float(c[f"{family}_flip_rate"]) for c in classes], COLOUR_MIN_SPREAD)


def min_spread(classes: Sequence[dict[str, Any]], statistic: Statistic) -> float:
    """The smallest spread the index divides by: ``MIN_SPREAD``, or for the excess flip rate the clean
    learners' own spread (root mean square over the classes) when the records carry it."""
    floor = MIN_SPREAD[statistic]
    spreads = [float(c["reference_spread"]) for c in classes if "reference_spread" in c]
    if statistic == "excess_flip_rate" and spreads:
        return max(floor, math.sqrt(sum(s * s for s in spreads) / len(spreads)))
    return floor


def _finite(value: float) -> float:
    return round(value, 4) if math.isfinite(value) else 0.0
