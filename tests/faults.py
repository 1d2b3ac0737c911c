"""Jobs killed outright: a CLI scan, a repair and a reference build run as a user runs them (``python -m
inspector``), SIGKILLed at chosen moments, then run again as the user would.

After every kill, each output is either absent or complete (a report folder with every file and numbers equal to
an uninterrupted run's; a repaired learner that loads and equals the uninterrupted one; a reference equal to an
uninterrupted build's), and once a run has finished, no staging file or folder is left. Used by
tests/test_faults.py (a few moments) and benchmarks/faults.py (many).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from inspector.runs import STAGED

ROOT = Path(__file__).resolve().parent.parent
CLASSES = "star,arrow,clock,map"
REPORT_FILES = ("report.json", "report.html", "triggers.safetensors")


def cli(*argv: str) -> list[str]:
    return [sys.executable, "-m", "inspector", "--device", "cpu", *argv]


def run(argv: list[str], kill_after: float | None = None, kill_when: Callable[[int], bool] | None = None,
        timeout: float = 600) -> tuple[int, float, str]:
    """Run ``argv`` from the repository root; SIGKILL it ``kill_after`` seconds in, or as soon as ``kill_when(its
    process id)`` holds (looked at every 2 ms). (exit code, seconds, what it printed)"""
    started = time.perf_counter()
    with tempfile.TemporaryFile("w+") as printed:  # a file, not a pipe: a full pipe would stall the job
        process = subprocess.Popen(argv, cwd=ROOT, stdout=printed, stderr=subprocess.STDOUT, text=True,
                                   env={**os.environ, "PYTHONPATH": str(ROOT)})
        try:
            if kill_after is not None:
                try:
                    process.wait(timeout=kill_after)
                except subprocess.TimeoutExpired:
                    process.send_signal(signal.SIGKILL)
            elif kill_when is not None:
                while process.poll() is None and not kill_when(process.pid):
                    time.sleep(0.002)
                process.send_signal(signal.SIGKILL)
            process.wait(timeout=timeout)
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
        printed.seek(0)
        err = printed.read()
    return process.returncode, time.perf_counter() - started, err or ""


def writing(folder: Path) -> Callable[[int], bool]:
    """Whether the process of a given id has a staging file or folder under ``folder``: it is writing an output."""

    def now(pid: int) -> bool:
        return any((m := STAGED.match(p.name)) and int(m.group(1)) == pid for p in folder.rglob(".*"))

    return now


def staging_left(folder: Path) -> list[str]:
    """Staging folders and files (``inspector.runs``) anywhere under ``folder``."""
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if ".partial" in p.name)


def _scan_numbers(folder: Path) -> list[dict[str, Any]]:
    report = json.loads((folder / "report.json").read_text())
    return [{k: c[k] for k in ("name", "flip_rate", "anomaly", "loss")} for c in report["classes"]]


def _tensors(path: Path) -> dict[str, list]:
    from safetensors.torch import load_file

    return {name: value.tolist() for name, value in sorted(load_file(str(path)).items())}


def _reference_numbers(path: Path) -> dict[str, Any]:
    data = json.loads(path.read_text())
    return {k: v for k, v in data.items() if k not in ("seconds", "built", "built_at", "created")}


@dataclass
class Job:
    """One kind of job: its command for attempt ``k`` under a work folder, where its output lands, and how to read
    that output (the numbers compared with an uninterrupted run's)."""

    name: str
    argv: Callable[[Path, int], list[str]]
    output: Callable[[Path, int], Path]
    read: Callable[[Path], Any]
    resumes: bool = False  # later attempts write to the same output (a reference build resumes)

    def complete(self, work: Path, k: int) -> Any:
        """The numbers of attempt ``k``'s output, or None when it is absent; raises when it is half there."""
        out = self.output(work, k)
        if not out.exists():
            return None
        if out.is_dir():
            missing = [name for name in REPORT_FILES if not (out / name).is_file()]
            assert not missing, f"{out} lacks {missing}"
        return self.read(out)


def jobs(base_report: Path) -> dict[str, Job]:
    """The three jobs; the repair repairs from ``base_report`` (an uninterrupted scan's)."""
    return {
        "scan": Job("scan", lambda w, k: cli("scan", "clean-coop", "--classes", CLASSES, "--pool-size", "200",
                                             "--out", str(w / "scans" / f"scan-{k}")),
                    lambda w, k: w / "scans" / f"scan-{k}", _scan_numbers),
        "repair": Job("repair", lambda w, k: cli("repair", "clean-coop", "--report", str(base_report), "--target",
                                                 "star", "--epochs", "2",
                                                 "--out", str(w / "repairs" / f"repaired-{k}.safetensors")),
                      lambda w, k: w / "repairs" / f"repaired-{k}.safetensors", _tensors),
        "reference": Job("reference", lambda w, k: cli("reference", "build", "--kind", "coop", "--learners", "2",
                                                       "--epochs", "1", "--pool-size", "100",
                                                       "--out", str(w / "refs" / "ref.json")),
                         lambda w, k: w / "refs" / "ref.json", _reference_numbers, resumes=True),
    }


def kill_and_rerun(job: Job, work: Path, moments: list[float], expected: Any,
                   while_writing: bool = False) -> list[dict[str, Any]]:
    """Attempt after attempt, each killed at the next of ``moments`` (seconds), then (``while_writing``) one killed
    as soon as it stages an output, then one run to the end: after each kill the outputs are absent or complete and
    equal to ``expected``; after the last run no staging is left."""
    rows: list[dict[str, Any]] = []
    planned: list[float | str | None] = [*moments, *(["writing"] if while_writing else []), None]
    for k, moment in enumerate(planned):
        argv = job.argv(work, 0 if job.resumes else k)
        if moment == "writing":
            code, seconds, err = run(argv, kill_when=writing(work))
        else:
            code, seconds, err = run(argv, kill_after=moment)
        done = job.complete(work, 0 if job.resumes else k)
        rows.append({"job": job.name, "attempt": k, "kill_after": moment, "code": code, "seconds": round(seconds, 1),
                     "output": "absent" if done is None else "complete"})
        assert done is None or done == expected, f"{job.name} attempt {k}: output differs from an uninterrupted run"
        if moment is None:
            assert code == 0 or (job.resumes and "already exists" in err), err[-2000:]
            assert done is not None, f"{job.name}: the run after the kills wrote nothing"
        else:
            assert code in (0, -signal.SIGKILL), err[-2000:]
            if job.resumes and done is not None:  # the build finished (perhaps just before the kill)
                break
    left = staging_left(work)
    assert not left, f"{job.name}: staging left after a finished run: {left}"
    return rows
