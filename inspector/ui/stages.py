"""A job's page updates split over three events, so that its many live updates stay cheap to send.

Gradio rebuilds every output component of an event for each update the event yields, a skipped one included:
44.9 ms an update for the page's 76 outputs against 8.5 ms for a scan's 16 live ones (benchmarks/app_profile.md),
and a default CoCoOp scan sends about 50 to 95 updates, each taking the CPU from the engine on a 2-core laptop.
A job's handler still yields one stream of ``{name: value}`` dicts; ``JobStages`` hands it on: its start (busy
buttons, the results it clears) goes out through an event on every output, until the handler yields
``Handover()`` just before its engine starts; the engine's stream through an event on the job's few live
outputs; the job's end (from its first update that names any other output, kept with the latest value per
name) through a last event on every output.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

Updates = dict[str, Any]


class Handover(dict):
    """Yielded (empty) by a job's handler once the page shows that the job starts, before its engine runs."""


class JobStages:
    """One job's updates, consumed stage by stage by the events that send them."""

    def __init__(self, updates: Iterator[Updates]) -> None:
        self._updates = updates
        self._kept: Updates = {}

    def start(self) -> Iterator[Updates]:
        """The updates up to the handover (all of them if the job ends before its engine starts)."""
        for update in self._updates:
            if isinstance(update, Handover):
                return
            yield update

    def live(self, names: Iterable[str]) -> Iterator[Updates]:
        """The job's updates while they name only ``names``; from the first that names another output (the end of
        the job: its results) everything is kept whole for ``end``, so that the end shows at once. Closing this
        (the page left, the event cancelled) closes the job, so its engine stops."""
        shown = set(names)
        try:
            for update in self._updates:
                if self._kept or not set(update) <= shown:
                    self._kept.update(update)
                elif update:
                    yield update
        except GeneratorExit:
            self.close()
            raise

    def end(self) -> Iterator[Updates]:
        """What the live stage kept back, as one update."""
        kept, self._kept = self._kept, {}
        if kept:
            yield kept

    def close(self) -> None:
        close = getattr(self._updates, "close", None)
        if close is not None:
            close()
