"""The worker's per-call log line: one ``call`` event at info for every answered call.

A ``FinishedCall`` observer (``WorkerService.observers``). The fields: ``request_id`` (the same
as in the gateway's line for the call), ``tool``, ``outcome``, ``duration_ms``, ``worker_id``,
and when there is one ``trace_id`` (from the request's ``traceparent``), ``principal`` (only
when a gateway signed it), ``instantiate_ms`` and ``error`` (the start of a failed call's message).

On the call path the observer only notes the record and the time (well under a microsecond);
the lines are written in batches, at most ``FLUSH_AFTER_S`` later, and by ``CallLog.flush`` when
the worker stops, so none is lost. Going through structlog cost ~13-16 µs a line on the event
loop (its processor chain, then one write and flush per line); when the process renders JSON
lines (``cli.logs``), a batch is encoded here with msgspec into the lines structlog would write
(same keys in the same order, the time of the call as the timestamp) and written at once.
Other renderers (the console, tests' ``capture_logs``) still get each line through structlog.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import time
from datetime import UTC, datetime
from typing import IO, Any, Final

import msgspec
import structlog

from bus.telemetry import trace_id
from workers.answers import FinishedCall

log = structlog.get_logger("toolbus.calls")

EVENT: Final = "call"
ERROR_CHARS: Final = 200
"""A failed call's message is cut here: the line says why, the caller has the whole of it."""
FLUSH_AFTER_S: Final = 0.05
"""How long a line may wait for its batch: short enough for someone tailing the log."""
MAX_BATCH: Final = 512
"""Lines written at once at most (a burst is written without waiting for the timer)."""

_JSON: Final = msgspec.json.Encoder(enc_hook=repr)


class CallLog:
    """Writes each answered call of worker ``worker_id`` as one info line; call it as an observer."""

    def __init__(self, worker_id: str, stream: IO[str] | None = None) -> None:
        self._worker_id = worker_id
        self._stream = stream
        """Where JSON lines go; ``None``: ``sys.stderr`` when written (where ``cli.logs`` sends them)."""
        self._pending: list[tuple[FinishedCall, float]] = []
        self._timer: asyncio.TimerHandle | None = None
        self._second = -1
        self._second_text = ""

    def __call__(self, record: FinishedCall) -> None:
        """Note one answered call (on the event loop); its line is written with the next batch."""
        pending = self._pending
        pending.append((record, time.time()))
        if len(pending) >= MAX_BATCH:
            self.flush()
        elif self._timer is None:
            try:
                self._timer = asyncio.get_running_loop().call_later(FLUSH_AFTER_S, self.flush)
            except RuntimeError:  # no event loop (a benchmark's loop): written at MAX_BATCH or flush()
                pass

    def flush(self) -> None:
        """Write every line noted so far."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        pending, self._pending = self._pending, []
        if not pending:
            return
        if not _renders_json():
            for record, _ in pending:
                log.info(EVENT, **self._fields(record))
            return
        if not log.bind().is_enabled_for(logging.INFO):
            return
        lines = []
        for record, at in pending:
            line = self._fields(record)
            # The keys structlog's processors add (cli.logs), in the order they add them.
            line["event"] = EVENT
            line["level"] = "info"
            line["timestamp"] = self._timestamp(at)
            lines.append(_JSON.encode(line))
        stream = self._stream or sys.stderr
        stream.write(b"\n".join(lines).decode() + "\n")
        stream.flush()

    def _timestamp(self, at: float) -> str:
        """``at`` as structlog's ``TimeStamper(fmt="iso", utc=True)`` writes it (to the µs)."""
        # Formatting a datetime took ~4.5 µs a line; the calls of one second share its text.
        second = int(at)
        if second != self._second:
            self._second = second
            self._second_text = datetime.fromtimestamp(second, UTC).strftime("%Y-%m-%dT%H:%M:%S")
        return f"{self._second_text}.{int((at - second) * 1_000_000):06d}Z"

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


def _renders_json() -> bool:
    """Whether structlog is configured to write JSON lines (the last processor is its JSON renderer)."""
    processors = structlog.get_config()["processors"]
    return bool(processors) and isinstance(processors[-1], structlog.processors.JSONRenderer)


def call_logger(worker_id: str) -> CallLog:
    """An observer that writes each answered call of worker ``worker_id`` as one info line."""
    return CallLog(worker_id)
