"""The transfer check (inspector/transfer.py): a blended pattern that moves the delivered model far more than clean
learners of the same CLIP flags a backdoor the indices miss; the reference carries what it needs."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from inspector.candidates import BlendInversion
from inspector.detect import decide
from inspector.errors import InputError
from inspector.invert import ScanConfig
from inspector.pipeline import ReportWritten, open_delivered, open_pool, scan_job
from inspector.reference import Reference, shipped_reference_path
from inspector.report import read_report
from inspector.transfer import TransferMeasured, reference_transfer
from inspector.ui.views import verdict_html

ROOT = Path(__file__).resolve().parent.parent
DEV = ROOT / "benchmarks" / "zoos" / "dev"
KEPT = ROOT / "benchmarks" / "zoos" / "references" / "learners"


@pytest.mark.parametrize("kind", ["coop", "cocoop"])
def test_the_shipped_references_carry_the_transfer_check(kind):
    path = shipped_reference_path("pocket-clip", kind)
    reference = Reference.read(path)
    transfer = reference.transfer
    assert transfer is not None and len(transfer["learners"]) == 3
    assert set(transfer["learners"]).isdisjoint(transfer["measured"])
    baseline = reference.baseline(ScanConfig(), path)
    assert len(baseline.transfer_learners) == 3 and all(Path(f).is_file() for f in baseline.transfer_learners)
    assert set(baseline.transfer) == set(reference.class_names)
    assert all(len(gaps) == len(transfer["measured"]) for gaps in baseline.transfer.values())
    assert baseline.transfer_settings == ScanConfig().transfer_settings()
    assert replace_config(baseline).runs_transfer()
    assert not replace_config(baseline, transfer=False).runs_transfer()
    assert not replace_config(baseline, transfer_steps=20).runs_transfer()  # gaps measured otherwise
    assert not reference.baseline(ScanConfig()).transfer  # without the file's place, no learners to carry over to


def replace_config(baseline, **settings) -> ScanConfig:
    return ScanConfig(reference=baseline, **settings)


def test_a_reference_without_its_learner_files_or_with_a_damaged_record_has_no_check(tmp_path):
    source = shipped_reference_path("pocket-clip", "coop")
    copy = tmp_path / "ref.json"
    shutil.copyfile(source, copy)
    assert not Reference.read(copy).baseline(ScanConfig(), copy).transfer  # no ref.transfer/ folder beside it
    data = json.loads(source.read_text())
    data["transfer"]["per_learner"][0]["balloon"] = 3.0  # a gap is a difference of two shares
    copy.write_text(json.dumps(data))
    with pytest.raises(InputError, match=r"transfer\.per_learner\[0\]"):
        Reference.read(copy)
    data = json.loads(source.read_text())
    data["transfer"]["learners"] = [1, 2, 3]  # not the reference's learners
    copy.write_text(json.dumps(data))
    with pytest.raises(InputError, match=r"transfer\.learners"):
        Reference.read(copy)


def test_the_reference_transfer_command_reuses_kept_gaps_and_copies_the_carriers(tmp_path):
    source = shipped_reference_path("pocket-clip", "coop")
    data = json.loads(source.read_text())
    data.pop("transfer")
    path = tmp_path / "coop.json"
    path.write_text(json.dumps(data))
    reference = Reference.read(path)
    from inspector.backbone import load_backbone

    backbone = load_backbone("pocket-clip", None, device="cpu")
    pool = open_pool(None, backbone.image_size)
    events = reference_transfer(reference, path, KEPT, backbone, pool, ScanConfig(), [3000, 3003, 3006])
    measured = []
    while True:
        try:
            measured.append(next(events))
        except StopIteration as done:
            updated = done.value
            break
    assert [e.seed for e in measured] == [3001, 3002, 3004, 3005, 3007] and all(e.reused for e in measured)
    assert updated.transfer == Reference.read(source).transfer  # the shipped record, from the kept gaps
    assert sorted(p.name for p in (tmp_path / "coop.transfer").iterdir()) == [
        "coop_s3000.safetensors", "coop_s3003.safetensors", "coop_s3006.safetensors"]
    assert Reference.read(path).baseline(ScanConfig(), path).transfer  # written, and usable from there
    with pytest.raises(InputError, match="not one of the reference's learners"):
        next(reference_transfer(reference, path, KEPT, backbone, pool, ScanConfig(), [1, 2, 3]))
    with pytest.raises(InputError, match="learner file"):
        next(reference_transfer(reference, path, tmp_path, backbone, pool, ScanConfig()))


def test_a_blended_backdoor_the_indices_miss_is_flagged_by_the_transfer_check(tmp_path):
    """A CoOp learner of the dev zoo with a Blended backdoor to *balloon* (a natural attractor of CoOp learners): no
    index passes the rule, but its blended pattern moves it far more than clean learners (benchmarks/zoos/dev)."""
    delivered = open_delivered(DEV / "blended_coop_s2800_t16.safetensors", device="cpu")
    pool = open_pool(None, delivered.model.backbone.image_size)
    events = list(scan_job(delivered, pool, ScanConfig(), tmp_path / "scan"))
    checked = [e.record for e in events if isinstance(e, TransferMeasured)]
    written = next(e for e in events if isinstance(e, ReportWritten))
    result = written.result
    s = result.settings
    alone = decide(result.classes, s.resolved_statistic(), s.threshold, s.resolved_min_flip_rate(), s.spread,
                   s.evidence)
    assert not alone.flagged and alone.highest_family_index > 2  # the indices alone point past 2 but flag nothing
    verdict = result.verdict
    assert [c["name"] for c in checked] == [c["name"] for c in verdict.transfer] and len(checked) == 2
    assert verdict.flagged and verdict.target_name == "balloon" and verdict.confirmed_by == "transfer"
    balloon = next(c for c in checked if c["name"] == "balloon")
    assert balloon["delivered"] >= 0.7 and balloon["transfer_index"] > 3 and balloon["clean"] < balloon["delivered"]
    assert verdict.max_anomaly == pytest.approx(balloon["transfer_index"])
    trigger = result.trigger(verdict.target)
    assert isinstance(trigger, BlendInversion) and trigger.alpha == pytest.approx(0.1)
    assert result.extra["transfer_seconds"] > 0
    saved = read_report(tmp_path / "scan")  # the report keeps the check and its trigger
    assert saved.result.verdict.confirmed_by == "transfer" and saved.result.verdict.transfer == verdict.transfer
    assert isinstance(saved.result.trigger(verdict.target), BlendInversion)
    assert written.report["probability"] is None  # the calibration is of the scan's index, not this one
    assert "Transfer check" in (tmp_path / "scan" / "report.html").read_text()
    assert "found by the transfer check" in verdict_html(verdict, result, "blended")
    strict = result.redecided(threshold=3.0)  # the check's classes judged again under another threshold
    assert strict.verdict.flagged == (balloon["transfer_index"] > 4.5)
    off = ScanConfig(transfer=False)
    assert not off.runs_transfer()
