"""Hostile learner files from a seeded fuzzer (tests/fuzzing.py): each one loads and runs, or is refused with a
short message naming the file; never another error. The delivered files are never changed."""

from __future__ import annotations

from pathlib import Path

import pytest

from inspector.backbone import shared_backbone
from inspector.errors import InputError
from inspector.prompts import open_model
from inspector.zoo import ZOO_DIR
from tests.fuzzing import fuzz, tally
from tests.untrusted import fingerprint, run_cli

ORIGINALS = ("clean_coop.safetensors", "clean_cocoop.safetensors", "badnets_cocoop.safetensors")
CASES, SEED = 300, 20261205


def _load(path: Path):
    return open_model(path, device="cpu", backbone_loader=shared_backbone)


def test_hostile_learner_files_run_or_are_refused_by_name_never_an_unexpected_error(tmp_path):
    before = fingerprint(ZOO_DIR)
    originals = {name: (ZOO_DIR / name).read_bytes() for name in ORIGINALS}
    rows = list(fuzz(originals, tmp_path, CASES, SEED, _load))
    findings = [row for row in rows if row["outcome"] not in ("ran", "refused")]
    assert not findings, findings[:8]
    counts = tally(rows)
    assert counts["refused"] >= CASES // 3 and counts["ran"] >= 10, counts  # both sides of the gate are reached
    assert fingerprint(ZOO_DIR) == before


def test_the_cli_refuses_a_fuzzed_learner_in_one_line_naming_it(tmp_path, capsys):
    """The scan command on refused mutants: exit 2, one error line that names the file (and at most the line that
    says what to do), no traceback."""
    originals = {"clean_coop.safetensors": (ZOO_DIR / "clean_coop.safetensors").read_bytes()}
    rows = list(fuzz(originals, tmp_path, 60, SEED + 1, _load, keep=True))
    refused = [row for row in rows if row["outcome"] == "refused"]
    kinds = {row["mutation"].split()[0]: row for row in refused}  # one of each kind of refusal
    assert len(kinds) >= 5, sorted(kinds)
    for row in kinds.values():
        path = Path(row["path"])
        code, _, err = run_cli(capsys, "scan", str(path), "--out", str(tmp_path / "run"))
        lines = [line for line in err.splitlines() if line.strip()]
        assert code == 2 and lines[0].startswith("error: ") and path.name in lines[0], (row, err)
        assert lines[1:] in ([], [lines[-1]]) and all(line.startswith("  what to do: ") for line in lines[1:]), err
        assert "Traceback" not in err, err


def test_hostile_reference_files_are_refused_by_name_never_an_unexpected_error(tmp_path):
    """Mutated clean references (values of other types and ranges, keys removed, lists cut or lengthened, damaged
    text) given to a scan: each is used or refused with a short message naming the file."""
    from inspector.reference import REFERENCE_DIR
    from tests.fuzzing import fuzz_json, reference_use

    original = REFERENCE_DIR / "pocket-clip-coop.json"
    before = original.read_bytes()
    rows = list(fuzz_json(before, tmp_path, 200, SEED, reference_use()))
    findings = [row for row in rows if row["outcome"] not in ("ran", "refused")]
    assert not findings, findings[:8]
    counts = tally(rows)
    assert counts["refused"] >= 100 and counts["ran"] >= 10, counts
    assert original.read_bytes() == before


def test_hostile_scan_reports_given_to_repair_are_refused_by_name_never_an_unexpected_error(tmp_path):
    """Mutated reports of a real scan (three classes of the clean CoOp demo model), taken as `repair --report` takes
    them before it trains: each is used or refused with a short message naming the file; a report cannot send the
    reader to a triggers file outside its folder."""
    import json
    import shutil

    from inspector.data import load_shipped_pool
    from inspector.invert import ScanConfig
    from inspector.pipeline import open_delivered, scan_job
    from inspector.report import read_report
    from tests.fuzzing import fuzz_json, report_use

    delivered = open_delivered("clean-coop", device="cpu")
    scanned = tmp_path / "scan"
    list(scan_job(delivered, load_shipped_pool(delivered.model.backbone.image_size), ScanConfig(classes=(0, 1, 2)),
                  scanned))
    work = tmp_path / "work"
    work.mkdir()
    shutil.copy(scanned / "triggers.safetensors", work)
    original = (scanned / "report.json").read_bytes()
    rows = list(fuzz_json(original, work, 200, SEED, report_use(work), name="report"))
    findings = [row for row in rows if row["outcome"] not in ("ran", "refused")]
    assert not findings, findings[:8]
    counts = tally(rows)
    assert counts["refused"] >= 50 and counts["ran"] >= 50, counts

    outside = work / "outside.json"
    outside.write_text(json.dumps({**json.loads(original), "triggers_file": "../scan/triggers.safetensors"}))
    with pytest.raises(InputError, match="triggers_file '../scan/triggers.safetensors' is not a file name"):
        read_report(outside, delivered.model.class_names)
