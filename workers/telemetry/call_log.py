"""The worker's per-call log line: one ``call`` event at info for every answered call.

A ``FinishedCall`` observer (``WorkerService.observers``). The fields: ``request_id`` (the same
as in the gateway's line for the call), ``tool``, ``outcome``, ``duration_ms``, ``worker_id``,
and when there is one ``trace_id`` (from the request's ``traceparent``), ``principal`` (only
when a gateway signed it), ``instantiate_ms`` and ``error`` (the start of a failed call's message).
"""

from __future__ import annotations

from typing import Any, Final

import structlog

from bus.telemetry import trace_id
from workers.answers import CallObserver, FinishedCall

log = structlog.get_logger("toolbus.calls")

EVENT: Final = "call"
ERROR_CHARS: Final = 200
"""A failed call's message is cut here: the line says why, the caller has the whole of it."""


def call_logger(worker_id: str) -> CallObserver:
    """An observer that writes each answered call of worker ``worker_id`` as one info line."""

    def log_call(record: FinishedCall) -> None:
        fields: dict[str, Any] = {
            "tool": record.tool,
            "outcome": record.outcome,
            "duration_ms": round(record.duration_s * 1000, 3),
            "request_id": record.request_id,
            "worker_id": worker_id,
        }
        if record.traceparent is not None:  # checked when the record was made: any client may send one
            fields["trace_id"] = trace_id(record.traceparent)
        if record.principal is not None:
            fields["principal"] = record.principal
        if record.instantiate_s is not None:
            fields["instantiate_ms"] = round(record.instantiate_s * 1000, 3)
        if record.error is not None:
            fields["error"] = record.error[:ERROR_CHARS]
        log.info(EVENT, **fields)

    return log_call
