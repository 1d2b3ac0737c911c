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


def test_the_schedule_picker_quotes_the_last_schedule_runs_clean_flags() -> None:
    rows = json.loads((ROOT / "benchmarks" / "speed-schedules.json").read_text())["rows"]
    clean = [row for row in rows if row["truth"] is None]
    flagged = {name: sum(row[name]["flagged"] for row in clean) for name in ("fast", "faithful")}
    assert (f"flagged {flagged['faithful']} of {len(clean)} clean models where the fast schedule flagged "
            f"{flagged['fast']} ") in SCHEDULE_INFO, flagged
