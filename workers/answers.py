"""A call's answer: the reply a worker sends, and the record of it its observers are told.

Every call ends in exactly one ``Answer`` (a result, or a typed error reply: ``error_answer``), whether a guest
ran or not; the service turns each into a ``FinishedCall`` for metrics, the log line and spans.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from time import perf_counter_ns

import msgspec

from bus.replies import error_reply
from bus.subjects import Header
from bus.telemetry import valid_traceparent
from schemas.errors import ErrorCode, failed_outcome
from schemas.wire import CallToolResult, TextContent

Answer = tuple[bytes, dict[str, str] | None, str | None, str]
"""A reply: body, headers (None: a ``CallToolResult``), the error STATS records (None: success),
and the outcome the observers see (``FinishedCall.outcome``)."""


def error_answer(code: ErrorCode, message: str, capabilities: list[str] | None = None) -> Answer:
    """The typed error reply ``code`` saying ``message`` (``capabilities``: the missing ones)."""
    body, headers = error_reply(code, message, capabilities)
    return body, headers, f"{code.name}: {message}", failed_outcome(code)


def error_text(result: CallToolResult) -> str:
    """What an ``isError`` result says: its text blocks (for STATS' ``last_error``, a task's status)."""
    texts = [block.text for block in result.content if isinstance(block, TextContent)]
    return " ".join(texts) or "isError result without text"


class FinishedCall(msgspec.Struct, frozen=True):
    """One answered call, as the worker's observers (metrics, the log line, spans) see it.

    ``outcome`` is ``ok``, ``tool_error``, ``invalid_arguments`` or the lower-cased ``ErrorCode``
    name of a typed error reply (``overloaded``, ``cancelled``, ``deadline_exceeded``…).
    """

    tool: str
    request_id: str
    traceparent: str | None
    """The request's ``traceparent`` when it is a valid one (checked once, in ``finished_call``, for every observer)."""
    outcome: str
    error: str | None
    duration_s: float
    """From the request's arrival to its reply being queued."""
    instantiate_s: float | None
    """Time the guest took to instantiate (``None``: no guest ran, or a warm instance was reused)."""
    principal: str | None = None
    """Who the call is for, when a gateway vouched for it (``bus.principal``); ``None``: unsigned."""


CallObserver = Callable[[FinishedCall], None]
"""Told of every answered call, on the event loop: must not block."""


def finished_call(
    tool: str,
    request: Mapping[str, str],
    principal: str | None,
    outcome: str,
    error: str | None,
    started_ns: int,
    instantiate_s: float | None,
) -> FinishedCall:
    """The record of a call answered now; ``request`` holds its headers."""
    return FinishedCall(
        tool,
        request.get(Header.REQUEST_ID, ""),
        valid_traceparent(request.get(Header.TRACEPARENT)),
        outcome,
        error,
        (perf_counter_ns() - started_ns) / 1e9,
        instantiate_s,
        principal,
    )
