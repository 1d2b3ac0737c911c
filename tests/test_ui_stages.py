"""A job's page updates over three events: nothing lost, the live ones cut to few outputs, a cancel stops the job."""

from __future__ import annotations

from collections.abc import Iterator

from inspector.ui.layout import build_app
from inspector.ui.stages import Handover, JobStages


def test_stages_split_a_job_and_lose_nothing() -> None:
    closed = []

    def job() -> Iterator[dict]:
        yield {"progress": "choosing", "model_info": "m"}
        yield {"verdict": "", "clean_examples": None, "scan_button": "busy"}
        yield Handover()
        yield {"progress": "step 1", "trigger_picture": 1}
        yield {"progress": "step 2"}
        yield {"progress": "finished", "report_files": ["a"], "scan_button": "idle"}
        yield {"report_files": ["b"], "class_picker": "clock"}

    stages = JobStages(job())
    assert list(stages.start()) == [{"progress": "choosing", "model_info": "m"},
                                    {"verdict": "", "clean_examples": None, "scan_button": "busy"}]
    live = list(stages.live(["progress", "trigger_picture", "scan_button"]))
    assert live == [{"progress": "step 1", "trigger_picture": 1}, {"progress": "step 2"}]
    # the end comes whole, at once, with the latest value of each name
    assert list(stages.end()) == [{"progress": "finished", "report_files": ["b"], "scan_button": "idle",
                                   "class_picker": "clock"}]
    assert list(stages.end()) == []

    def endless() -> Iterator[dict]:
        try:
            yield Handover()
            while True:
                yield {"progress": "step"}
        finally:
            closed.append(True)

    stages = JobStages(endless())
    assert list(stages.start()) == []
    stream = stages.live(["progress"])
    next(stream)
    stream.close()  # the page left: Gradio closes the live event's generator
    assert closed == [True]


def test_every_job_streams_through_few_outputs_in_the_engine_slot() -> None:
    app = build_app()
    events = {fn.api_name: fn for fn in app.fns.values() if fn.api_name}
    everything = len(events["page_scan"].outputs)
    for job in ("page_scan", "page_repair", "page_implant", "page_build_reference"):
        start, live, end = events[job], events[f"{job}_live"], events[f"{job}_end"]
        assert len(live.outputs) <= 20 < everything == len(start.outputs) == len(end.outputs), job
        assert live.concurrency_id == "engine" and live.concurrency_limit == 1, job
        assert start.concurrency_id != "engine" and end.concurrency_id != "engine", job
