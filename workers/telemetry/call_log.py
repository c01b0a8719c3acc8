"""The worker's per-call log line: one ``call`` event at info for every answered call.

A ``FinishedCall`` observer (``WorkerService.observers``). The fields: ``request_id`` (the same
as in the gateway's line for the call), ``tool``, ``outcome``, ``duration_ms``, ``worker_id``,
and when there is one ``trace_id`` (from the request's ``traceparent``), ``principal`` (only
when a gateway signed it), ``instantiate_ms`` and ``error`` (the start of a failed call's message).

Written in batches off the per-call path (``bus.log_lines``): the observer only notes the
record and the time, and ``CallLog.flush`` writes what is left when the worker stops.
"""

from __future__ import annotations

import time
from typing import IO, Any, Final

from bus.log_lines import BatchedLines
from bus.telemetry import trace_id
from workers.answers import FinishedCall

EVENT: Final = "call"
ERROR_CHARS: Final = 200
"""A failed call's message is cut here: the line says why, the caller has the whole of it."""


class CallLog:
    """Writes each answered call of worker ``worker_id`` as one info line; call it as an observer."""

    def __init__(self, worker_id: str, stream: IO[str] | None = None) -> None:
        self._worker_id = worker_id
        self._lines = BatchedLines("toolbus.calls", EVENT, self._fields, stream)

    def __call__(self, record: FinishedCall) -> None:
        """Note one answered call (on the event loop); its line is written with the next batch."""
        self._lines.add(record, time.time())

    def flush(self) -> None:
        """Write every line noted so far."""
        self._lines.flush()

    def _fields(self, record: FinishedCall) -> dict[str, Any]:
        fields: dict[str, Any] = {
            "tool": record.tool,
            "outcome": record.outcome,
            "duration_ms": round(record.duration_s * 1000, 3),
            "request_id": record.request_id,
            "worker_id": self._worker_id,
        }
        if record.traceparent is not None:  # checked when the record was made: any client may send one
            fields["trace_id"] = trace_id(record.traceparent)
        if record.principal is not None:
            fields["principal"] = record.principal
        if record.instantiate_s is not None:
            fields["instantiate_ms"] = round(record.instantiate_s * 1000, 3)
        if record.error is not None:
            fields["error"] = record.error[:ERROR_CHARS]
        return fields


def call_logger(worker_id: str) -> CallLog:
    """An observer that writes each answered call of worker ``worker_id`` as one info line."""
    return CallLog(worker_id)
