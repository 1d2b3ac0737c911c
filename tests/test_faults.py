"""Jobs killed outright (SIGKILL) while they run: a CLI scan, a repair and a reference build leave no half-written
output, and the next run succeeds, with an uninterrupted run's numbers (tests/faults.py; benchmarks/faults.py kills
each at many more moments and compares a resumed reference build with an uninterrupted one)."""

from __future__ import annotations

import json
import random
import signal

import pytest

from inspector.reference import Reference
from tests.faults import jobs, kill_and_rerun, run, staging_left

SEED = 20261205


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    """An uninterrupted scan (attempt 0 under this folder), whose report the repairs start from, and its seconds."""
    folder = tmp_path_factory.mktemp("base")
    code, seconds, err = run(jobs(folder)["scan"].argv(folder, 0))
    assert code == 0, err
    return folder, seconds


def _moments(seconds: float, count: int, seed: int) -> list[float]:
    """``count`` kill moments spread over a run of ``seconds`` (its first second or two start the interpreter)."""
    rng = random.Random(seed)
    return sorted(round(rng.uniform(0.25, 0.98) * seconds, 2) for _ in range(count))


@pytest.mark.parametrize("name", ["scan", "repair"])
def test_a_killed_scan_or_repair_leaves_no_half_written_output_and_the_next_run_succeeds(base, tmp_path, name):
    folder, seconds = base
    job = jobs(folder / "scans" / "scan-0" / "report.json")[name]
    if name == "repair":
        code, seconds, err = run(job.argv(folder, 0))
        assert code == 0, err
    expected = job.complete(folder, 0)
    assert expected is not None and not staging_left(folder)
    rows = kill_and_rerun(job, tmp_path, _moments(seconds, 2 if name == "scan" else 1, SEED), expected,
                          while_writing=True)
    assert any(row["code"] == -signal.SIGKILL for row in rows), rows  # a run really was killed mid-way


def test_a_reference_build_killed_after_its_first_learner_resumes_from_it(base, tmp_path):
    folder, _ = base
    job = jobs(folder / "scans" / "scan-0" / "report.json")["reference"]
    kept = tmp_path / "refs" / "ref.learners"

    def first_learner_kept(_pid: int) -> bool:
        return kept.is_dir() and any(p.suffix == ".json" and ".partial" not in p.name for p in kept.iterdir())

    code, _, _ = run(job.argv(tmp_path, 0), kill_when=first_learner_kept)
    assert code == -signal.SIGKILL and not job.output(tmp_path, 0).exists()
    code, _, err = run(job.argv(tmp_path, 0))
    assert code == 0 and "[kept from an earlier run]" in err, err[-2000:]
    reference = Reference.read(job.output(tmp_path, 0))
    assert len(reference.seeds) == 2 and json.loads(job.output(tmp_path, 0).read_text())["seeds"] == reference.seeds
    assert not staging_left(tmp_path)
