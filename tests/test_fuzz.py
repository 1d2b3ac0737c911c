"""Hostile learner files from a seeded fuzzer (tests/fuzzing.py): each one loads and runs, or is refused with a
short message naming the file; never another error. The delivered files are never changed."""

from __future__ import annotations

from pathlib import Path

from inspector.prompts import open_model
from inspector.ui.workspace import _backbone_loader
from inspector.zoo import ZOO_DIR
from tests.fuzzing import fuzz, tally
from tests.untrusted import fingerprint, run_cli

ORIGINALS = ("clean_coop.safetensors", "clean_cocoop.safetensors", "badnets_cocoop.safetensors")
CASES, SEED = 300, 20261205


def _load(path: Path):
    return open_model(path, device="cpu", backbone_loader=_backbone_loader)


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
