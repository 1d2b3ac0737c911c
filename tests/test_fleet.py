"""Vetting a fleet on a local Ray runtime (issue 22): the same numbers as solo scans, one error line for a broken
file, a re-run that skips what is done, and a killed worker or an interrupted run that loses no finished result.

The scans read five candidate classes (every demo backdoor's target among them) to keep the suite short; the fleet
passes them on unchanged, so the comparison with solo scans is exact either way."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import torch

from inspector.calibration import backdoor_probability
from inspector.errors import InputError
from inspector.fleet import JOURNAL, PAGE, FleetSettings, read_fleet, read_journal
from inspector.invert import ScanConfig, parse_classes
from inspector.pipeline import ReportWritten, open_delivered, open_pool, scan_job
from inspector.runs import STAGED
from inspector.zoo import resolve_model

ROOT = Path(__file__).resolve().parent.parent
CLASSES = "playing card,balloon,clock,map,arrow"
FLEET = {"vendor-a": "clean-coop", "vendor-b": "badnets-cocoop", "vendor-c": "clean-cocoop",
         "vendor-d": "blended-cocoop", "vendor-e": "wanet-cocoop", "vendor-f": "badclip-cocoop"}
REPORT_FILES = ("report.json", "report.html", "triggers.safetensors")
SOLO: dict[tuple[str, int], dict[str, Any]] = {}


def fleet_folder(where: Path, names: list[str], broken: bool = True) -> Path:
    """Demo models under other names (and a truncated learner file, and a note that is not a model)."""
    where.mkdir(parents=True)
    for name in names:
        shutil.copy(resolve_model(FLEET[name]), where / f"{name}.safetensors")
    if broken:
        (where / "broken.safetensors").write_bytes(resolve_model("clean-coop").read_bytes()[:3000])
    (where / "notes.txt").write_text("not a model")
    return where


def solo(name: str, tmp: Path, workers: int) -> dict[str, Any]:
    """The same model scanned alone, in this process, through the engine's scan job, on as many threads as each of
    the fleet's ``workers`` gets (sums of floats split over another number of threads can round otherwise)."""
    threads = max(1, (os.cpu_count() or 1) // workers)
    if (name, threads) not in SOLO:
        delivered = open_delivered(resolve_model(FLEET[name]), device="cpu")
        config = ScanConfig(classes=parse_classes(CLASSES, delivered.model.class_names))
        pool = open_pool(None, delivered.model.backbone.image_size)
        before = torch.get_num_threads()
        torch.set_num_threads(threads)
        try:
            written = [e for e in scan_job(delivered, pool, config, tmp / f"solo-{name}-{threads}")
                       if isinstance(e, ReportWritten)]
        finally:
            torch.set_num_threads(before)
        SOLO[(name, threads)] = written[0].report
    return SOLO[(name, threads)]


def fleet_cli(source: Path, out: Path, *extra: str) -> subprocess.Popen:
    argv = [sys.executable, "-m", "inspector", "--device", "cpu", "fleet", "scan", str(source), "--out", str(out),
            "--classes", CLASSES, "--json", *extra]
    return subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})


def finish(process: subprocess.Popen, timeout: float = 600) -> tuple[int, dict[str, Any] | None, str]:
    out, err = process.communicate(timeout=timeout)
    return process.returncode, json.loads(out) if out.strip() else None, err


def assert_complete_folders(out: Path) -> None:
    """Every model folder holds a whole report, and no staging is left."""
    assert not [p.name for p in out.iterdir() if STAGED.match(p.name)]
    for folder in (p for p in out.iterdir() if p.is_dir()):
        assert all((folder / name).is_file() for name in REPORT_FILES), folder


def test_a_fleet_scan_gives_solo_numbers_one_error_line_and_a_rerun_skips_what_is_done(tmp_path: Path) -> None:
    source = fleet_folder(tmp_path / "delivered", list(FLEET))
    out = tmp_path / "fleet"
    code, summary, err = finish(fleet_cli(source, out, "--workers", "2"))
    assert code == 0, err
    lines = {line["model"]: line for line in summary["lines"]}
    assert set(lines) == {*FLEET, "broken"}
    assert summary["errors"] == 1 and lines["broken"]["verdict"] == "error"
    assert "broken.safetensors" in lines["broken"]["error"] and lines["broken"]["hint"]
    assert "Traceback" not in err
    for name in FLEET:
        line, report = lines[name], solo(name, tmp_path, workers=2)
        assert (line["flagged"], line["target"], line["suspect"]) == (report["flagged"], report["target"],
                                                                      report["suspect"]), name
        assert line["max_anomaly"] == report["max_anomaly"], name
        assert line["suspect_flip_rate"] == report["suspect_flip_rate"], name
        assert line["probability"] is None is backdoor_probability(report)  # the fit is for scans of every class
        written = json.loads((out / name / "report.json").read_text())
        assert [c["flip_rate"] for c in written["classes"]] == [c["flip_rate"] for c in report["classes"]]
    assert {lines[n]["target"] for n in FLEET if lines[n]["flagged"]} <= {"playing card", "clock", "map", "balloon"}
    assert_complete_folders(out)
    assert read_journal(out) == lines
    assert len((out / JOURNAL).read_text().splitlines()) == len(lines)  # one line per model
    page = (out / PAGE).read_text()
    assert all(name in page for name in lines) and "could not scan" in page
    assert page.count("<img src='data:image/png;base64,") == len(FLEET)  # every scanned model's suspect trigger
    flagged = [n for n in FLEET if lines[n]["flagged"]]
    calm = [n for n in FLEET if not lines[n]["flagged"]]
    assert flagged and calm and max(page.index(f">{n}<") for n in flagged) < min(page.index(f">{n}<") for n in calm)

    stamps = {name: (out / name / "report.json").stat().st_mtime_ns for name in FLEET}
    code, again, err = finish(fleet_cli(source, out, "--workers", "2"))
    assert code == 0, err
    assert f"1 of {len(lines)} model(s) to scan; {len(FLEET)} finished earlier" in err
    assert {name: (out / name / "report.json").stat().st_mtime_ns for name in FLEET} == stamps
    again_lines = {line["model"]: line for line in again["lines"]}
    assert set(again_lines) == set(lines) and all(again_lines[name] == lines[name] for name in FLEET)
    assert len((out / JOURNAL).read_text().splitlines()) == len(lines)

    code, _, err = finish(fleet_cli(source, out, "--workers", "2", "--threshold", "3"))
    assert code == 2 and "other settings" in err and "Traceback" not in err


def _scanning_workers() -> list[int]:
    """Ray worker processes running a fleet scan task now (Ray titles them ``ray::scan_model``)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if (entry / "cmdline").read_bytes().startswith(b"ray::scan_model"):
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


def _wait_for(condition: Any, timeout: float = 300) -> None:
    deadline = time.time() + timeout
    while not condition():
        assert time.time() < deadline, "timed out"
        time.sleep(0.05)


def test_a_killed_worker_or_an_interrupted_run_loses_no_finished_result(tmp_path: Path) -> None:
    names = ["vendor-a", "vendor-b", "vendor-c"]
    source = fleet_folder(tmp_path / "delivered", names, broken=False)
    out = tmp_path / "fleet"

    # a worker killed in the middle of its scan: Ray runs that model again, nothing is lost or half-written
    process = fleet_cli(source, out, "--workers", "1")
    _wait_for(lambda: (out / JOURNAL).is_file() and _scanning_workers())
    time.sleep(2)
    killed = _scanning_workers()
    assert killed
    for pid in killed:
        os.kill(pid, signal.SIGKILL)
    code, summary, err = finish(process)
    assert code == 0, err
    assert [x["model"] for x in summary["lines"] if x["verdict"] != "error"] == names
    for line in summary["lines"]:
        assert line["max_anomaly"] == solo(line["model"], tmp_path, workers=1)["max_anomaly"]
    assert_complete_folders(out)

    # the run interrupted (Ctrl-C) after its first result: that result stays, the re-run scans only the rest
    shutil.rmtree(out)
    process = fleet_cli(source, out, "--workers", "1")
    _wait_for(lambda: len(read_journal(out)) >= 1)
    process.send_signal(signal.SIGINT)
    code, summary, err = finish(process)
    assert code == 130 and "finished result(s) kept" in err and "Traceback" not in err
    kept = read_journal(out)
    assert 1 <= len(kept) < len(names)
    assert_complete_folders(out)
    code, summary, err = finish(fleet_cli(source, out, "--workers", "1"))
    assert code == 0, err
    assert f"{len(names) - len(kept)} of {len(names)} model(s) to scan" in err
    assert [x["model"] for x in summary["lines"]] == names
    for line in summary["lines"]:
        assert line["max_anomaly"] == solo(line["model"], tmp_path, workers=1)["max_anomaly"]
    assert_complete_folders(out)


def test_a_manifest_names_paths_weights_and_references(tmp_path: Path) -> None:
    models = tmp_path / "models"
    models.mkdir()
    for name in ("a", "b"):
        (models / f"{name}.safetensors").write_bytes(b"x")
    (tmp_path / "list.json").write_text(json.dumps([{"path": "models/a.safetensors", "reference": "ref.json"},
                                                    "models/b.safetensors", {"path": "models/a.safetensors",
                                                                             "reference": "none"}]))
    fleet = read_fleet(tmp_path / "list.json")
    assert [m.name for m in fleet] == ["a", "b", "a-2"]  # a file listed twice gets a folder of its own
    assert fleet[2].reference == "none"
    assert fleet[0].path == (models / "a.safetensors").resolve()
    assert fleet[0].reference == str((tmp_path / "ref.json").resolve()) and fleet[1].reference is None
    (tmp_path / "list.csv").write_text("path,weights\nmodels/b.safetensors,openai\n"
                                       "models/a.safetensors,w.safetensors\n")
    fleet = read_fleet(tmp_path / "list.csv")
    assert fleet[0].weights == "openai" and fleet[1].weights == str((tmp_path / "w.safetensors").resolve())
    assert [m.name for m in read_fleet(models)] == ["a", "b"]

    for text, words in (("[]", "lists no models"), ("[{\"weights\": \"x\"}]", "no path"), ("{oops", "not valid JSON")):
        (tmp_path / "bad.json").write_text(text)
        with pytest.raises(InputError, match=words):
            read_fleet(tmp_path / "bad.json")
    (tmp_path / "nothing").mkdir()
    with pytest.raises(InputError, match="holds no .safetensors"):
        read_fleet(tmp_path / "nothing")
    with pytest.raises(InputError, match="does not exist"):
        read_fleet(tmp_path / "missing")


def test_fleet_settings_key_changes_with_what_changes_numbers() -> None:
    base = FleetSettings()
    assert base.key() == FleetSettings().key()
    assert base.key() != FleetSettings(ScanConfig(threshold=3.0)).key()
    assert base.key() != FleetSettings(classes="clock").key()
    assert base.key() != FleetSettings(ood="pool.zip").key()
