"""Numbers the page states come from the recorded run they name, so a new speed run cannot leave them stale."""

from __future__ import annotations

import json
from pathlib import Path

from inspector.ui.layout import SCHEDULE_INFO, TEACH_INTRO

ROOT = Path(__file__).resolve().parent.parent


def test_the_teach_tab_quotes_the_last_speed_runs_implant_seconds() -> None:
    implants = json.loads((ROOT / "benchmarks" / "speed-interactive.json").read_text())["summary"]["interactive"][
        "implants"]
    assert {row["base"] for row in implants} == {"clean-coop", "clean-cocoop"}
    for row in implants:
        assert row["attack"] == "blended"  # the page speaks of the default Blended implant
        assert f"{round(row['seconds'])} s into {row['base']} " in TEACH_INTRO, (row["base"], row["seconds"])
    assert "(two tries)" in TEACH_INTRO
    coop = next(row for row in implants if row["base"] == "clean-coop")
    assert "after 2 tries" in coop["page_said"]  # what "(two tries)" says of that run


def test_the_schedule_picker_quotes_the_last_schedule_run() -> None:
    data = json.loads((ROOT / "benchmarks" / "speed-schedules.json").read_text())
    rows = data["rows"]
    same = sum(row["fast"]["flagged"] == row["faithful"]["flagged"] for row in rows)
    assert f"same verdict on {same} of {len(rows)} models " in SCHEDULE_INFO, (same, len(rows))
    assert f"{data['summary']['time_ratio']}x the time" in SCHEDULE_INFO


def test_the_schedule_runs_zoo_verdicts_are_the_cached_scans_decided_with_the_shipped_reference() -> None:
    """Each zoo row of the recorded schedule comparison is what its committed scans give, decided as a scan with the
    shipped reference decides now: a reference rebuilt after the run would make this fail until it is run again."""
    from benchmarks.speed import summary_of, zoo_scans
    from inspector.data import load_shipped_pool

    data = json.loads((ROOT / "benchmarks" / "speed-schedules.json").read_text())
    pool = load_shipped_pool().pixels
    zoo_rows = [row for row in data["rows"] if row["group"] != "demo"]
    assert len(zoo_rows) >= 80
    for row in zoo_rows:
        fast, faithful = zoo_scans(ROOT / "benchmarks" / "zoos" / row["group"] / f"{row['model']}.safetensors", pool,
                                   run=False)
        assert faithful is not None, row["model"]
        for schedule, decided in (("fast", fast), ("faithful", faithful)):
            shown = {key: row[schedule][key] for key in ("flagged", "target", "max_anomaly")}
            assert {key: summary_of(decided, schedule)[key] for key in shown} == shown, (row["model"], schedule)
