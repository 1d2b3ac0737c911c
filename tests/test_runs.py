"""Outputs (issue 7): fresh run folders, nothing half-written when a run is stopped or fails,
reproducible with --seed, inputs never modified; small pools work or are refused clearly."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from inspector import cli, pipeline, report
from inspector.runs import HOST_TAG, STAGING_PREFIX, atomic_file, staged_folder
from tests.untrusted import fingerprint, run_cli

CLASSES = "star,arrow,clock"


def noise_pool(folder: Path, count: int, seed: int = 0) -> Path:
    """``count`` distinct random images: a pool with nothing in common with the task."""
    folder.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    for i in range(count):
        buffer = io.BytesIO()
        Image.fromarray(rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)).save(buffer, format="PNG")
        (folder / f"{i:03d}.png").write_bytes(buffer.getvalue())
    return folder


def test_a_pool_smaller_than_a_batch_scans_and_a_tiny_one_is_refused(tmp_path, capsys):
    pool = noise_pool(tmp_path / "small", 12)  # fewer images than one batch of 32
    (pool / "readme.txt").write_text("not an image")
    before = fingerprint(pool)
    code, out, err = run_cli(capsys, "--device", "cpu", "scan", "clean-coop", "--ood", str(pool), "--classes", CLASSES,
                             "--out", str(tmp_path / "scan"))
    assert code == 0, err
    assert "skipped 1 file(s) of the pool" in err and "readme.txt: not an image file type" in err
    written = json.loads((tmp_path / "scan" / "report.json").read_text())
    assert written["pool"]["images"] == 12 and written["pool"]["skipped"][0]["file"] == "readme.txt"
    assert len(written["classes"]) == 3 and fingerprint(pool) == before

    tiny = noise_pool(tmp_path / "tiny", 3)
    code, _, err = run_cli(capsys, "--device", "cpu", "scan", "clean-coop", "--ood", str(tiny), "--classes", CLASSES,
                           "--out", str(tmp_path / "tiny-scan"))
    assert code == 2 and "Traceback" not in err
    assert err.splitlines()[-2].startswith(f"error: OOD pool {tiny} has 3 usable image(s); a scan needs at least 10")
    assert not (tmp_path / "tiny-scan").exists()


def test_same_seed_same_report_and_each_run_gets_a_fresh_folder(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the default --out is a fresh folder under ./runs
    args = ("--device", "cpu", "scan", "clean-coop", "--classes", CLASSES, "--pool-size", "96", "--seed", "3", "--json")
    reports = []
    for _ in range(2):
        code, out, err = run_cli(capsys, *args)
        assert code == 0, err
        reports.append(json.loads(out))
    first, second = reports
    assert first["report"] != second["report"]  # two runs, two folders
    assert all(Path(r["report"]).is_file() and Path(r["report"]).parent.parent == Path("runs") for r in reports)
    assert first["classes"] == second["classes"]  # identical flip rates, losses and anomaly indices
    _, out, _ = run_cli(capsys, *args[:-3], "--seed", "4", "--json")
    assert json.loads(out)["classes"] != first["classes"]  # the seed does matter


def test_a_run_that_fails_while_writing_leaves_no_files(tmp_path, capsys, monkeypatch):
    real = report.write_report

    def write_then_crash(result, out_dir, *args, **kwargs):
        real(result, out_dir, *args, **kwargs)  # every file written, then the "power cut"
        raise KeyboardInterrupt

    monkeypatch.setattr(pipeline, "write_report", write_then_crash)
    out = tmp_path / "scan"
    code, _, err = run_cli(capsys, "--device", "cpu", "scan", "clean-coop", "--classes", CLASSES, "--pool-size", "64",
                           "--out", str(out))
    assert code == 130 and "nothing was written" in err
    assert list(tmp_path.iterdir()) == []  # no report folder, no staging folder left behind


def test_staged_folder_publishes_all_or_nothing(tmp_path):
    final = tmp_path / "run"
    with pytest.raises(RuntimeError), staged_folder(final) as staging:
        (staging / "half.json").write_text("{")
        raise RuntimeError("stopped")
    assert list(tmp_path.iterdir()) == []
    with staged_folder(final) as staging:
        (staging / "sub").mkdir()
        (staging / "sub" / "a.png").write_bytes(b"png")
        (staging / "report.json").write_text("{}")
    assert sorted(p.name for p in final.rglob("*")) == ["a.png", "report.json", "sub"]
    assert not any(p.name.startswith(STAGING_PREFIX) for p in tmp_path.iterdir())
    with pytest.raises(Exception, match="already exists and is not empty"), staged_folder(final):
        pass
    (tmp_path / "file").write_text("x")
    with pytest.raises(Exception, match="exists and is not a folder"), staged_folder(tmp_path / "file"):
        pass


def test_what_a_killed_writer_left_is_removed_by_the_next_writer_and_a_living_ones_is_not(tmp_path):
    """A process killed outright cannot clean up its staging folder or file: the next writer in that folder removes
    them, by their writer's process id, and leaves a running writer's alone."""
    import os
    import subprocess
    import sys

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    pid = int(dead.stdout)
    left = [tmp_path / f"{STAGING_PREFIX}scan-{pid}-{HOST_TAG}abcd",
            tmp_path / f".ref.json.partial-{pid}-{HOST_TAG}cdef"]
    left[0].mkdir()
    (left[0] / "report.json").write_text("{")
    left[1].write_text("{")
    other_host = next(tag for tag in ("0000", "ffff") if tag != HOST_TAG)
    running = [tmp_path / f"{STAGING_PREFIX}other-{os.getpid()}-{HOST_TAG}abcd",
               tmp_path / f".m.partial-{os.getpid()}-aa",
               tmp_path / f"{STAGING_PREFIX}remote-{pid}-{other_host}abcd"]  # another host's: its pid says nothing
    running[0].mkdir()
    running[1].write_text("")  # not a staging name (8 hex digits): never touched
    running[2].mkdir()
    kept = tmp_path / f"{STAGING_PREFIX}notes"  # not a staging name either
    kept.write_text("mine")

    with staged_folder(tmp_path / "scan") as staging:
        (staging / "report.json").write_text("{}")
    assert not any(p.exists() for p in left[:1]) and not left[1].exists()
    assert all(p.exists() for p in running) and kept.read_text() == "mine"

    left[1].write_text("{")
    with atomic_file(tmp_path / "ref.json") as staging:
        assert staging.parent == tmp_path and staging.name.startswith(".ref.json.partial-")
        staging.write_text("{}")
    assert (tmp_path / "ref.json").read_text() == "{}" and not left[1].exists()
    with pytest.raises(RuntimeError), atomic_file(tmp_path / "ref.json") as staging:
        staging.write_text("{ half")
        raise RuntimeError("stopped")
    assert (tmp_path / "ref.json").read_text() == "{}"
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["scan", "ref.json", kept.name,
                                                                  *(p.name for p in running)])


def test_out_that_is_a_file_or_unwritable_is_a_clear_error(tmp_path, capsys):
    blocker = tmp_path / "taken"
    blocker.write_text("my notes")
    code, _, err = run_cli(capsys, "scan", "clean-coop", "--out", str(blocker))
    assert code == 2 and "exists and is not a folder" in err and blocker.read_text() == "my notes"
    code, _, err = run_cli(capsys, "scan", "clean-coop", "--out", str(blocker / "inside"))
    assert code == 2 and err.startswith(f"error: cannot create {blocker / 'inside'}: {blocker} is a file")


def test_unexpected_failures_are_one_line_unless_debug(capsys, monkeypatch):
    def broken(args):
        raise ZeroDivisionError("engine bug")

    monkeypatch.setattr(cli, "cmd_zoo_list", broken)
    code, _, err = run_cli(capsys, "zoo", "list")
    assert code == 1 and err.splitlines()[0] == "error: unexpected ZeroDivisionError: engine bug"
    assert "--debug" in err and "Traceback" not in err
    with pytest.raises(ZeroDivisionError):
        cli.main(["--debug", "zoo", "list"])
