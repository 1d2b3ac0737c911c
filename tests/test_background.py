"""The app's handlers run the engine in a thread of their own (ui.background): every event arrives in order, the
engine's errors reach the handler, and a handler that goes away stops its engine."""

from __future__ import annotations

import gc
import threading
import time

import pytest

from inspector.errors import InputError
from inspector.ui.background import IDLE, Background


def job(stop: threading.Event, steps: int, fail_at: int | None = None, ran: list[int] | None = None):
    """An engine job as the workspace's are: a step per event, checking ``stop`` before each."""
    for step in range(steps):
        if stop.is_set():
            yield "stopped"
            return
        if step == fail_at:
            raise InputError("the pool has no images", hint="give a folder with images")
        time.sleep(0.01)
        if ran is not None:
            ran.append(step)
        yield step


def test_events_arrive_in_order_and_more_are_seen_waiting():
    stop = threading.Event()
    events = Background(job(stop, 30), stop)
    time.sleep(0.2)
    assert events.waiting  # the engine went on while nobody asked
    assert list(events) == list(range(30)) and not stop.is_set()


def test_an_engine_error_is_raised_in_the_handler():
    stop = threading.Event()
    with pytest.raises(InputError, match="no images"):
        list(Background(job(stop, 10, fail_at=3), stop))


def test_a_handler_dropped_mid_run_stops_its_engine():
    stop = threading.Event()
    ran: list[int] = []
    events = iter(Background(job(stop, 10_000, ran=ran), stop))
    assert next(events) == 0
    del events
    gc.collect()
    assert stop.is_set()
    time.sleep(0.1)  # the step under way finishes
    done = len(ran)
    time.sleep(0.2)
    assert len(ran) == done < 10_000  # stopped, and not running on


def test_ticking_reports_quiet_stretches_between_the_events():
    """A handler that throttles its updates needs a turn while the engine is quiet, to send what it held back."""
    stop = threading.Event()

    def slow() -> object:
        for step in range(3):
            time.sleep(0.3)
            yield step

    seen = list(Background(slow(), stop).ticking(0.05))
    assert [item for item in seen if item is not IDLE] == [0, 1, 2]
    assert seen.index(0) >= 2 and seen.index(1) - seen.index(0) >= 3  # idle turns while each step ran
    assert not stop.is_set()
