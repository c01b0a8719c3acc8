"""What one guest call knows about its caller: cancellation, events wanted, content added.

The worker creates a ``CallContext`` per accepted call and the component binds it to the guest
thread while the guest runs (``running``), so host functions (``toolbus:mcp/context``,
``toolbus:http/client``) find their call with ``current()`` — a host function only receives the
Store, not the call it serves.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from schemas.wire import CallEvent, Content, LogEvent, ProgressEvent, log_severity

EventSink = Callable[[CallEvent], None]
"""Publishes one event for the caller; thread-safe (called from guest threads)."""


@dataclass
class CallContext:
    """One call, as its guest's host functions see it."""

    request_id: str = ""
    cancelled: threading.Event = field(default_factory=threading.Event)
    events: EventSink | None = None
    """Where progress and logs go; None when the caller asked for none."""
    log_level: int | None = None
    """Rank (``schemas.wire.log_severity``) of the least severe level the caller wants; None: no logs."""
    deadline: float = float("inf")
    """``time.monotonic()`` at which the call's time is up (host calls are bounded by it)."""
    content: list[Content] = field(default_factory=list)
    """Blocks the guest added with ``add-content``; they become the result's content."""
    instantiate_s: float | None = None
    """How long the guest took to instantiate, set by the component (``None``: a warm instance)."""
    crashed: bool = False
    """The guest did not return: it trapped, exited or hit a limit (set by the component). Its
    ``isError`` result says why; a durable task ends ``failed`` with an error for it, not
    ``completed`` (the tasks extension's line between protocol and tool errors)."""

    def seconds_left(self) -> float:
        return self.deadline - time.monotonic()

    def progress(self, progress: float, total: float | None, message: str | None) -> None:
        if self.events is not None:
            self.events(ProgressEvent(progress=progress, total=total, message=message))

    def log(self, level: str, data: object) -> None:
        """Send a log event if the caller wants ``level``; an unknown level is dropped."""
        if self.events is None or self.log_level is None:
            return
        rank = log_severity(level)
        if rank is not None and rank >= self.log_level:
            self.events(LogEvent(level=level, data=data))


_local = threading.local()


@contextmanager
def running(context: CallContext) -> Iterator[CallContext]:
    """Bind ``context`` to this thread while its guest runs."""
    previous = getattr(_local, "context", None)
    _local.context = context
    try:
        yield context
    finally:
        _local.context = previous


def current() -> CallContext | None:
    """The call whose guest runs on this thread, if any."""
    context: CallContext | None = getattr(_local, "context", None)
    return context
