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
from typing import Any, Protocol

from schemas.wire import CallEvent, Content, LogEvent, ProgressEvent, log_severity

EventSink = Callable[[CallEvent], None]
"""Publishes one event for the caller; thread-safe (called from guest threads)."""


class AskFailed(Exception):
    """A guest's request to its client got no answer; ``kind`` is the ``ask-error`` case
    (``unsupported``, ``timed-out``, ``cancelled``, ``failed``), ``message`` its text."""

    def __init__(self, kind: str, message: str = "") -> None:
        super().__init__(f"{kind}: {message}" if message else kind)
        self.kind = kind
        self.message = message


Asker = Callable[[dict[str, dict[str, Any]]], dict[str, Any]]
"""Sends a guest's question (key → ``{"method", "params"}``) to its client and blocks the guest's
thread until the answers (key → result) arrive; raises ``AskFailed`` (``workers.conversation``)."""


class Cancelled:
    """Whether a call was cancelled: set once (by a cancel message, on the event loop), read by the
    guest's thread at every epoch tick and host call.

    A plain flag, not a ``threading.Event``: nothing blocks on it (a running guest is stopped at its
    next epoch tick, a guest waiting for its client's answer polls it), and an Event (a
    ``Condition`` and its locks, made in Python) was ~3 µs of every call.
    """

    __slots__ = ("_set",)

    def __init__(self) -> None:
        self._set = False

    def set(self) -> None:
        self._set = True

    def is_set(self) -> bool:
        return self._set


class RunSlot(Protocol):
    """The worker's bound on guests running at once (``workers.guest_threads.RunSlots``)."""

    def acquire(self) -> object: ...

    def release(self) -> None: ...

    def give_back(self) -> None: ...


@dataclass
class CallContext:
    """One call, as its guest's host functions see it."""

    request_id: str = ""
    cancelled: Cancelled = field(default_factory=Cancelled)
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
    reply_to: str = ""
    """Where the call's reply goes; a question answered by a resume request moves it there."""
    events_subject: str = ""
    """Where ``events`` publishes (a resumed call's caller may listen on a new subject)."""
    asker: Asker | None = None
    """How the guest's ``toolbus:mcp/client`` requests reach its client; ``None``: they cannot."""
    capabilities: frozenset[str] = frozenset()
    """The client capabilities the caller relays (``Toolbus-Can-Ask``; a resume may change them)."""
    missing_capabilities: tuple[str, ...] = ()
    """Set by ``require``: the call ends with MISSING_CAPABILITY naming these, not with a result."""
    interrupts: Any = None
    """The running Store's ``Interrupts``, set by the component: a wait for an answer re-arms them."""
    run_slot: RunSlot | None = None
    """The worker's guests running at once (``concurrency``): held while the guest runs, given
    back while it waits for its client's answer (``workers.conversation``)."""
    updates_sent: int = 0
    """``notify.resource-updated`` calls published for this run (``workers.sandbox.notify_host``)."""

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


def bind(context: CallContext | None) -> CallContext | None:
    """Bind ``context`` to this thread; returns the one it replaces, for ``bind`` to put back.

    The plain pair is for the per-call path, where ``running``'s generator costs a microsecond."""
    previous: CallContext | None = getattr(_local, "context", None)
    _local.context = context
    return previous


@contextmanager
def running(context: CallContext) -> Iterator[CallContext]:
    """Bind ``context`` to this thread while its guest runs."""
    previous = bind(context)
    try:
        yield context
    finally:
        bind(previous)


def current() -> CallContext | None:
    """The call whose guest runs on this thread, if any."""
    context: CallContext | None = getattr(_local, "context", None)
    return context
