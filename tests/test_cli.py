"""inspector/cli.py: the JSON contracts of `zoo list` and `eval`, and errors without tracebacks."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "inspector", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=600, env={**os.environ, "OMP_NUM_THREADS": "2"})


def test_zoo_list_json():
    result = run_cli("zoo", "list", "--json")
    assert result.returncode == 0, result.stderr
    entries = json.loads(result.stdout)
    names = {e["name"] for e in entries}
    assert {"clean-coop", "clean-cocoop"} <= names
    for entry in entries:
        assert set(entry) == {"name", "path", "kind", "attack", "target"}
        assert Path(entry["path"]).is_file() and entry["kind"] in {"coop", "cocoop"}
    clean = [e for e in entries if e["name"].startswith("clean-")]
    assert all(e["attack"] is None and e["target"] is None for e in clean)


def test_eval_json_reports_accuracy_and_zero_shot():
    result = run_cli("eval", "clean-coop", "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert set(report) >= {"accuracy", "zero_shot_accuracy"}
    assert 0.0 <= report["zero_shot_accuracy"] < report["accuracy"] <= 1.0


def test_bad_model_is_one_clear_error_without_traceback(tmp_path):
    result = run_cli("eval", "no-such-model", "--json")
    assert result.returncode == 2
    assert "no-such-model" in result.stderr and "Traceback" not in result.stderr
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"not a safetensors file")
    result = run_cli("eval", str(junk))
    assert result.returncode == 2 and str(junk) in result.stderr and "Traceback" not in result.stderr
