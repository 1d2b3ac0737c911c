"""The engine in a thread of its own while a handler streams its events to the page.

Gradio asks a handler's generator for its next update only once the last one has been sent, so an engine
running inside the handler stands still during every update the page gets (py-spy on a serving app, as
benchmarks/app_profile.py samples it, found the engine's thread waiting for a good part of each scan). Here the
engine's generator runs in its own thread and queues its events; the handler takes them as they come and can
see whether more are already waiting, so that one update covers a burst of them.
"""

from __future__ import annotations

import queue
import threading
import weakref
from collections.abc import Iterator
from typing import Generic, TypeVar

T = TypeVar("T")
_DONE = object()


class Idle:
    """What ``Background.ticking`` yields when no event came for a while: the handler's chance to send what it
    held back (a throttled chart or picture) while the engine is in a long stretch without events."""


IDLE = Idle()


class _Raised:
    def __init__(self, error: BaseException) -> None:
        self.error = error


def _produce(events: Iterator[object], out: queue.SimpleQueue) -> None:
    """The thread's work: every event into ``out``, then the end (or the error that ended it)."""
    try:
        for event in events:
            out.put(event)
    except BaseException as error:  # noqa: BLE001 - handed to the consumer, who raises it in the handler
        out.put(_Raised(error))
    finally:
        out.put(_DONE)


def _stop(stop: threading.Event, thread: threading.Thread) -> None:
    if thread.is_alive():
        stop.set()  # not joined: the thread that drops a handler may be the server's, which must not block


class Background(Generic[T]):
    """Iterate ``events`` (an engine job that checks ``stop``) in a thread; ``waiting`` says whether more events
    are queued. A handler that is closed or dropped mid-run (the page left, Gradio cancelled the event) sets
    ``stop``, so its engine stops at its next step and no job runs on without a page to show it."""

    def __init__(self, events: Iterator[T], stop: threading.Event) -> None:
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._thread = threading.Thread(target=_produce, args=(events, self._queue), daemon=True,
                                        name="inspector-engine")
        self._finalizer = weakref.finalize(self, _stop, stop, self._thread)
        self._thread.start()

    @property
    def waiting(self) -> bool:
        return not self._queue.empty()

    def __iter__(self) -> Iterator[T]:
        return self._events(None)

    def ticking(self, every: float) -> Iterator[T | Idle]:
        """The events, and ``IDLE`` after every ``every`` seconds in which none came."""
        return self._events(every)

    def _events(self, every: float | None) -> Iterator[T | Idle]:
        while True:
            try:
                item = self._queue.get(timeout=every)
            except queue.Empty:
                item = IDLE
            if item is _DONE:
                self._finalizer.detach()
                return
            if isinstance(item, _Raised):
                self._finalizer.detach()
                raise item.error
            try:
                yield item
            except GeneratorExit:
                self._finalizer()
                raise
