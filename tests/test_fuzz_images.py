"""Hostile images, OOD pools and labelled sets from a seeded fuzzer (tests/fuzz_images.py): each image is used or
skipped with its reason, each folder or zip is read (every file used or listed) or refused naming it; through the
CLI, exit 0, or exit 2 with one line naming the file; never a traceback, never a write outside the run folder, the
inputs unchanged."""

from __future__ import annotations

import random
from collections import Counter
from pathlib import Path

from tests.fuzz_images import (
    ZIP_MUTATIONS,
    fuzz_images,
    fuzz_sources,
    good_png,
    labelled_files,
    pool_files,
    write_zip,
)
from tests.untrusted import fingerprint, run_cli

SEED = 20261205


def _findings(rows: list[dict]) -> list[dict]:
    return [row for row in rows if row["outcome"] not in ("used", "skipped", "ran", "refused")]


def test_hostile_images_are_used_or_skipped_with_a_reason():
    rows = list(fuzz_images(400, SEED))
    assert not _findings(rows), _findings(rows)[:8]
    counts = Counter(row["outcome"] for row in rows)
    assert counts["used"] >= 100 and counts["skipped"] >= 100, counts
    kinds = {row["mutation"].split()[0] for row in rows if row["outcome"] == "skipped"}
    assert {"bomb", "dimensions", "truncate", "empty"} <= kinds, kinds
    exif = [row for row in rows if row["mutation"].startswith("exif")]
    assert exif and all(row["outcome"] == "used" for row in exif)  # damaged EXIF: the pixels are still used


def test_hostile_pools_and_labelled_sets_are_read_or_refused_by_name(tmp_path):
    for kind, cases in (("pool", 120), ("labelled", 120)):
        folder = tmp_path / kind
        folder.mkdir()
        rows = list(fuzz_sources(folder, cases, SEED, kind))
        assert not _findings(rows), _findings(rows)[:8]
        counts = Counter(row["outcome"] for row in rows)
        assert counts["ran"] >= cases // 4 and counts["refused"] >= 5, (kind, counts)


def test_the_cli_takes_each_kind_of_hostile_zip_in_one_line(tmp_path, capsys):
    """`scan --ood ZIP` and `eval --task ZIP` on one zip of each hostile kind: a normal run, or exit 2 with one
    error line naming the zip (and at most the line that says what to do); nothing written but the run folder,
    the zip unchanged."""
    rng = random.Random(SEED)
    bombs: dict = {}
    made: dict[str, list[Path]] = {}
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    while any(len(made.get(kind, [])) < 1 for kind in ZIP_MUTATIONS) and len(made) < 60:
        files, _ = pool_files(rng, bombs, 3)
        files.update({f"more{i}.png": good_png(20 * i) for i in range(10)})  # enough for a scan
        path = inputs / f"pool-{sum(map(len, made.values())):02d}.zip"
        made.setdefault(write_zip(path, files, rng), []).append(path)
    for kind in ("flip", "truncate", "encrypted"):
        files, _ = labelled_files(rng, bombs)
        path = inputs / f"task-{kind}.zip"
        while write_zip(path, files, rng) != kind:
            pass
        made.setdefault(f"task {kind}", []).append(path)
    before = fingerprint(inputs)
    codes = Counter()
    for kind, paths in sorted(made.items()):
        path = paths[0]
        out = tmp_path / "runs" / path.stem
        if kind.startswith("task"):
            argv = ["--device", "cpu", "eval", "clean-coop", "--task", str(path)]
        else:
            argv = ["--device", "cpu", "scan", "clean-coop", "--ood", str(path), "--classes", "star,arrow,clock",
                    "--out", str(out)]
        code, _, err = run_cli(capsys, *argv)
        codes[code] += 1
        lines = [line for line in err.splitlines() if line.strip()]
        assert code in (0, 2) and "Traceback" not in err, (kind, err)
        if code == 2:  # the files a pool skipped may be listed first; then one error line, and what to do
            at = [i for i, line in enumerate(lines) if line.startswith("error: ")]
            assert len(at) == 1 and path.name in lines[at[0]], (kind, err)
            assert all(line.startswith("  what to do: ") for line in lines[at[0] + 1:]) and len(lines) <= at[0] + 2
            assert not out.exists()
    assert fingerprint(inputs) == before
    written = {p.relative_to(tmp_path).parts[:2] for p in tmp_path.rglob("*") if not p.is_relative_to(inputs)}
    assert written <= {("runs",), *{("runs", p[0].stem) for p in made.values()}}, written
    assert codes[0] >= 3 and codes[2] >= 3, codes
