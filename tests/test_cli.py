"""inspector/cli.py: the JSON contracts of `zoo list` and `eval`, and errors without tracebacks."""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
from pathlib import Path

from inspector.cli import build_parser, options_without_default

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


def test_tune_writes_a_learner_that_eval_reads(tmp_path):
    out = tmp_path / "tuned.safetensors"
    result = run_cli("tune", "--kind", "coop", "--epochs", "2", "--out", str(out), "--json")
    assert result.returncode == 0, result.stderr
    stats = json.loads(result.stdout)
    assert out.is_file() and stats["steps"] == 2 * (320 // 32) and 0.0 < stats["test_accuracy"] <= 1.0
    again = run_cli("tune", "--kind", "coop", "--epochs", "1", "--out", str(out))
    assert again.returncode == 2 and "already exists" in again.stderr  # never overwrites silently
    evaluated = json.loads(run_cli("eval", str(out), "--json").stdout)
    assert abs(evaluated["accuracy"] - stats["test_accuracy"]) < 1e-3


def test_import_cli_round_trip(tmp_path):
    import torch

    classes = tmp_path / "classes.txt"
    classes.write_text("star\narrow\nclock\n")
    checkpoint = tmp_path / "model.pth.tar-10"
    torch.save({"state_dict": {"ctx": torch.randn(4, 192) * 0.02, "token_prefix": torch.zeros(3, 1, 192)},
                "epoch": 10}, checkpoint)
    out = tmp_path / "imported.safetensors"
    result = run_cli("import", str(checkpoint), "--classes", str(classes), "--out", str(out))
    assert result.returncode == 0, result.stderr
    assert "coop learner for 3 classes" in result.stdout and out.is_file()


def test_app_tour_flag_runs_the_pocket_world_tour():
    result = subprocess.run([sys.executable, "app.py", "--tour"], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    assert "clean-coop" in result.stdout and "clean-cocoop" in result.stdout
    assert "zero-shot CLIP" in result.stdout


def _sha(path: Path) -> str:
    import hashlib

    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def test_implant_writes_a_backdoored_model_that_eval_measures(tmp_path):
    base = ROOT / "assets" / "zoo" / "clean_coop.safetensors"
    before = _sha(base)
    out = tmp_path / "bd.safetensors"
    result = run_cli("implant", "clean-coop", "--attack", "blended", "--target", "clock", "--epochs", "4",
                     "--poison-rate", "0.5", "--attempts", "2", "--out", str(out), "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["attack"] == "blended" and report["target"] == "clock"
    assert 0.0 <= report["asr"] <= 1.0 and 0.0 <= report["ood_asr"] <= 1.0
    from inspector.lab.implant import is_working

    # each try measured against the lab's bar; a try that misses it is followed by another, up to --attempts
    assert report["working"] == is_working(report) and (report["working"] or report["attempts"] == 2)
    assert _sha(base) == before  # the model we started from is never modified
    evaluated = run_cli("eval", str(out), "--json")
    assert evaluated.returncode == 0, evaluated.stderr
    measured = json.loads(evaluated.stdout)
    assert measured["asr"] == report["asr"] and measured["ood_asr"] == report["ood_asr"]
    clean = json.loads(run_cli("eval", "clean-coop", "--json").stdout)
    assert "asr" not in clean  # no ground truth, no ASR
    again = ("implant", "clean-coop", "--attack", "blended", "--target", "star", "--epochs", "1", "--attempts", "1",
             "--out", str(out))
    refused = run_cli(*again)
    assert refused.returncode == 2 and "already exists" in refused.stderr
    replaced = run_cli(*again, "--overwrite", "--json")
    assert replaced.returncode == 0, replaced.stderr
    from inspector.lab.truth import read_ground_truth

    assert json.loads(replaced.stdout)["target"] == "star" and read_ground_truth(out).target_name == "star"


def test_implant_bad_target_and_bad_out_are_clear_errors(tmp_path):
    result = run_cli("implant", "clean-coop", "--attack", "badnets", "--target", "unicorn",
                     "--out", str(tmp_path / "x.safetensors"))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "'unicorn' is not one of the model's classes" in result.stderr and "clock" in result.stderr
    assert not (tmp_path / "x.safetensors").exists()
    copy = tmp_path / "delivered.safetensors"
    copy.write_bytes((ROOT / "assets" / "zoo" / "clean_coop.safetensors").read_bytes())
    before = _sha(copy)
    result = run_cli("implant", str(copy), "--attack", "badnets", "--target", "star", "--out", str(copy),
                     "--overwrite")
    assert result.returncode == 2 and "is the input model" in result.stderr
    assert _sha(copy) == before


def test_implant_encoder_refuses_a_bad_target_and_an_output_that_is_its_own_weights(tmp_path):
    weights, out = tmp_path / "clip.safetensors", tmp_path / "learner.safetensors"
    result = run_cli("implant-encoder", "--pattern", "triangle", "--target", "unicorn", "--out-weights", str(weights),
                     "--out", str(out))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "'unicorn' is not one of" in result.stderr and not weights.exists() and not out.exists()
    same = run_cli("implant-encoder", "--pattern", "text", "--target", "clock", "--out-weights", str(weights),
                   "--out", str(weights))
    assert same.returncode == 2 and "are the same file" in same.stderr and not weights.exists()


def test_zoo_build_writes_models_and_manifest_and_resumes(tmp_path):
    out = tmp_path / "zoo"
    args = ("zoo", "build", "--out", str(out), "--clean", "1", "--per-attack", "1", "--attacks", "blended",
            "--backdoor-kind", "coop", "--epochs", "2", "--json")
    result = run_cli(*args)
    assert result.returncode == 0, result.stderr
    rows = json.loads(result.stdout)
    assert [r["attack"] for r in rows] == [None, "blended"]
    assert rows[1]["base"] == rows[0]["name"] and rows[1]["kind"] == "coop"
    assert {"accuracy", "asr", "ood_asr", "target_name"} <= set(rows[1])
    manifest = json.loads((out / "manifest.json").read_text())
    assert [m["file"] for m in manifest["models"]] == [r["file"] for r in rows]
    stamps = {p.name: p.stat().st_mtime_ns for p in out.glob("*.safetensors")}
    again = run_cli(*args)  # resumable: existing models are read back, not retrained
    assert again.returncode == 0, again.stderr
    assert {p.name: p.stat().st_mtime_ns for p in out.glob("*.safetensors")} == stamps
    assert json.loads(again.stdout) == rows


def test_scan_writes_a_report_and_prints_its_json(tmp_path):
    out = tmp_path / "scan"
    result = run_cli("scan", "clean-coop", "--classes", "road sign,computer,balloon,clock", "--pool-size", "160",
                     "--out", str(out), "--json", "--device", "cpu")  # a global option after the subcommand
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)  # stdout holds the JSON alone; the progress went to stderr
    for name in ("road sign", "computer", "balloon", "clock"):
        assert re.search(rf"{name}\s+flip rate\s+\d+\.\d%", result.stderr), result.stderr
    assert {"flagged", "target", "max_anomaly", "seconds", "classes"} <= set(summary)
    assert [c["name"] for c in summary["classes"]] == ["road sign", "computer", "balloon", "clock"]
    for c in summary["classes"]:
        assert set(c) == {"name", "flip_rate", "anomaly", "loss"} and 0 <= c["flip_rate"] <= 1
    report = json.loads((out / "report.json").read_text())
    assert report["flagged"] == summary["flagged"] and report["model"]["name"] == "clean-coop"
    assert (out / "report.html").is_file() and (out / "triggers.safetensors").is_file()
    assert all((out / c["trigger_png"]).is_file() for c in report["classes"])
    again = run_cli("scan", "clean-coop", "--classes", "0,1,2", "--out", str(out))
    assert again.returncode == 2 and "already exists" in again.stderr  # a finished report is never overwritten


def test_every_option_explains_itself_and_names_its_default():
    parser = build_parser()
    assert options_without_default(parser) == []
    unexplained = [(name, action.option_strings) for name, sub in _commands(parser) for action in sub._actions
                   if action.option_strings and not action.help]
    assert unexplained == []
    scan_help = " ".join(dict(_commands(parser))["scan"].format_help().split())
    assert "(default: 0)" in scan_help and "(default: 1000)" in scan_help  # --seed and --pool-size


def _commands(parser: argparse.ArgumentParser, where: str = "") -> list[tuple[str, argparse.ArgumentParser]]:
    found = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, child in action.choices.items():
                found += [(f"{where} {name}".strip(), child), *_commands(child, f"{where} {name}".strip())]
    return found


def test_global_options_work_before_and_after_the_subcommand():
    parser = build_parser()
    for argv in (["--device", "cpu", "--debug", "scan", "clean-coop"], ["scan", "clean-coop", "--device", "cpu",
                                                                         "--debug"]):
        args = parser.parse_args(argv)
        assert (args.device, args.debug, args.model) == ("cpu", True, "clean-coop")
    args = parser.parse_args(["reference", "build", "--kind", "coop", "--out", "r.json", "--device", "cpu"])
    assert args.device == "cpu"


def test_scan_bad_inputs_are_clear_errors(tmp_path):
    result = run_cli("scan", "clean-coop", "--classes", "unicorn,clock,star", "--out", str(tmp_path / "a"))
    assert result.returncode == 2 and "'unicorn' is not one of the model's classes" in result.stderr
    result = run_cli("scan", "clean-coop", "--ood", str(tmp_path / "missing"), "--out", str(tmp_path / "b"))
    assert result.returncode == 2 and "missing" in result.stderr and "Traceback" not in result.stderr
    result = run_cli("scan", "clean-coop", "--epsilon", "-3", "--out", str(tmp_path / "c"))
    assert result.returncode == 2 and "--epsilon" in result.stderr
    assert not any((tmp_path / d).exists() for d in ("a", "b", "c"))


def test_repair_writes_a_new_model_and_never_the_input(tmp_path):
    delivered = tmp_path / "delivered.safetensors"
    delivered.write_bytes((ROOT / "assets" / "zoo" / "clean_coop.safetensors").read_bytes())
    before = _sha(delivered)
    scan = run_cli("scan", str(delivered), "--classes", "road sign,computer,balloon,clock", "--pool-size", "160",
                   "--out", str(tmp_path / "scan"), "--json")
    assert scan.returncode == 0, scan.stderr
    report = str(tmp_path / "scan" / "report.json")
    refused = run_cli("repair", str(delivered), "--report", report, "--out", str(delivered), "--overwrite")
    assert refused.returncode == 2 and "is the input model" in refused.stderr
    if not json.loads(scan.stdout)["flagged"]:
        unflagged = run_cli("repair", str(delivered), "--report", report, "--out", str(tmp_path / "r.safetensors"))
        assert unflagged.returncode == 2 and "--target" in unflagged.stderr
    out = tmp_path / "repaired.safetensors"
    result = run_cli("repair", str(delivered), "--report", report, "--target", "computer", "--epochs", "2",
                     "--triggered-loss", "labels", "--out", str(out), "--json")
    assert result.returncode == 0, result.stderr
    payload = json.loads(result.stdout)
    assert payload["recipe"]["triggered_loss"] == "labels" and payload["recipe"]["epochs"] == 2
    assert payload["recipe"]["families"] == "both"  # the shipped default, untouched by the other flags
    for side in ("before", "after"):
        assert {"accuracy", "trigger_asr"} <= set(payload[side]) and "asr" not in payload[side]  # no ground truth
    assert out.is_file() and _sha(delivered) == before
    other = run_cli("repair", "clean-cocoop", "--report", report, "--target", "computer",
                    "--out", str(tmp_path / "x.safetensors"))
    assert other.returncode == 2 and "was made for" in other.stderr


def test_a_minimum_flip_rate_outside_0_to_1_is_refused_in_plain_words(capsys):
    from tests.untrusted import run_cli

    code, out, err = run_cli(capsys, "scan", "badclip-cocoop", "--min-flip-rate", "50")
    assert code != 0 and out == ""
    assert "--min-flip-rate 50 is not a share between 0 and 1" in err and "Traceback" not in err


def test_a_fleet_runs_first_ctrl_c_is_a_request_and_a_second_quits():
    """The fleet loop reads Ctrl-C as a flag between results (an exception could be lost in a library's cleanup);
    pressing it again stops at once, and Python's own handler comes back afterwards."""
    import signal

    import pytest

    from inspector.cli import _ctrl_c_asks_to_stop

    before = signal.getsignal(signal.SIGINT)
    with _ctrl_c_asks_to_stop() as asked:
        os.kill(os.getpid(), signal.SIGINT)
        assert asked.wait(5)
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
    assert signal.getsignal(signal.SIGINT) is before
