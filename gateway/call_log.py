"""The gateway's per-call log line: one ``call`` event at info for every finished ``tools/call``.

A ``CallRecord`` observer (``ToolService.observers``). The fields are the same in JSON and on a
terminal: ``request_id`` (also in the worker's line for the call), ``tool``, ``principal`` (the
subject), ``era``, ``outcome``, ``duration_ms``, and ``trace_id`` / ``error`` when there is one.

Written in batches off the per-call path (``bus.log_lines``): a finished call only appends its
record; the line carries the time of the call's end.
"""

from __future__ import annotations

from typing import Any, Final

import structlog

from bus.log_lines import BatchedLines
from bus.telemetry import trace_id
from gateway.tool_service import CallRecord

LOGGER: Final = "toolbus.calls"
log = structlog.get_logger(LOGGER)

EVENT: Final = "call"


def call_fields(record: CallRecord) -> dict[str, Any]:
    """The fields of ``record``'s line, in the order a reader scans them."""
    fields: dict[str, Any] = {
        "tool": record.tool,
        "outcome": record.outcome,
        "duration_ms": round(record.duration_s * 1000, 3),
        "request_id": record.request_id,
        "principal": record.principal.subject,
        "era": record.era,
    }
    if record.traceparent:
        fields["trace_id"] = trace_id(record.traceparent)
    if record.error is not None:
        fields["error"] = record.error
    return fields


def log_call(record: CallRecord) -> None:
    """Write ``record`` as one info line now (through structlog: for one-off callers)."""
    log.info(EVENT, **call_fields(record))


class CallLog:
    """The per-call log as a ``ToolService`` observer that batches its lines (``bus.log_lines``)."""

    def __init__(self) -> None:
        self._lines = BatchedLines(LOGGER, EVENT, call_fields)

    def observe(self, record: CallRecord) -> None:
        """Keep ``record``'s line for the next batch (the per-call cost: an append)."""
        self._lines.add(record, record.started_at + record.duration_s)

    def close(self) -> None:
        """At shutdown: write what is left."""
        self._lines.flush()
