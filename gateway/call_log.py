"""The gateway's per-call log line: one ``call`` event at info for every finished ``tools/call``.

A ``CallRecord`` observer (``ToolService.observers``). The fields are the same in JSON and on a
terminal: ``request_id`` (also in the worker's line for the call), ``tool``, ``principal`` (the
subject), ``era``, ``outcome``, ``duration_ms``, and ``trace_id`` / ``error`` when there is one.
"""

from __future__ import annotations

from typing import Any, Final

import structlog

from bus.telemetry import trace_id
from gateway.tool_service import CallRecord

log = structlog.get_logger("toolbus.calls")

EVENT: Final = "call"


def log_call(record: CallRecord) -> None:
    """Write ``record`` as one info line."""
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
    log.info(EVENT, **fields)
