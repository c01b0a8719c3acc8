"""The gateway's per-call log line: one ``call`` event at info for every finished ``tools/call``.

A ``CallRecord`` observer (``ToolService.observers``). The fields are the same in JSON and on a
terminal: ``request_id`` (also in the worker's line for the call), ``tool``, ``principal`` (the
subject), ``era``, ``outcome``, ``duration_ms``, and ``trace_id`` / ``error`` when there is one.

**Off the per-call path.** Writing the line through structlog as the call finished cost ~43 µs
of the gateway's CPU per call (issue 17: the processors, a timestamp, the encoder and one
``write`` per line). ``CallLog.observe`` only appends the record (well under a µs); a timer
``FLUSH_INTERVAL_S`` later writes every line gathered meanwhile with one ``write``. With JSON
logs (production: ``toolbus up`` and the roles write JSON unless on a terminal) the lines are
encoded here with msgspec, the same fields, level and ISO timestamp (of the call's end) that
structlog writes; on a terminal structlog renders them as before. Every call still gets its
line; a crash loses the lines of at most the last ``FLUSH_INTERVAL_S`` (and ``close`` writes
what is left at shutdown).
"""

from __future__ import annotations

import asyncio
import logging
import sys
from datetime import UTC, datetime
from typing import Any, Final

import msgspec
import structlog

from bus.telemetry import trace_id
from gateway.tool_service import CallRecord

log = structlog.get_logger("toolbus.calls")

EVENT: Final = "call"
FLUSH_INTERVAL_S: Final = 0.05
"""How long a finished call's line may wait to be written with the others (bounds a crash's loss)."""
MAX_PENDING: Final = 4096
"""Lines held before they are written at once, whatever the timer says (bounds memory under load)."""
_ENCODER: Final = msgspec.json.Encoder(enc_hook=repr)


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
    """The per-call log as a ``ToolService`` observer that batches its lines (see the module)."""

    def __init__(self) -> None:
        self._pending: list[CallRecord] = []
        self._timer: asyncio.TimerHandle | None = None

    def observe(self, record: CallRecord) -> None:
        """Keep ``record``'s line for the next flush (the per-call cost: an append)."""
        self._pending.append(record)
        if len(self._pending) >= MAX_PENDING:
            self.flush()
        elif self._timer is None:
            try:
                self._timer = asyncio.get_running_loop().call_later(FLUSH_INTERVAL_S, self.flush)
            except RuntimeError:  # no loop: a caller outside one gets its line at once
                self.flush()

    def flush(self) -> None:
        """Write every line kept so far; never raises (a log line must not break a call)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        records, self._pending = self._pending, []
        if not records:
            return
        try:
            if _renders_json():
                if log.is_enabled_for(logging.INFO):
                    sys.stderr.write("".join(_json_line(r) for r in records))
                    sys.stderr.flush()
            else:
                for record in records:
                    log_call(record)
        except Exception:  # a closed stderr at shutdown, say
            logging.getLogger(__name__).debug("call lines not written", exc_info=True)

    close = flush
    """At shutdown: write what is left."""


def _renders_json() -> bool:
    """Whether structlog is configured to write JSON lines (``cli.logs.configure_logging``)."""
    processors = structlog.get_config()["processors"]
    return bool(processors) and isinstance(processors[-1], structlog.processors.JSONRenderer)


def _json_line(record: CallRecord) -> str:
    fields = call_fields(record)
    fields["event"] = EVENT
    fields["level"] = "info"
    end = datetime.fromtimestamp(record.started_at + record.duration_s, UTC)
    fields["timestamp"] = end.isoformat().replace("+00:00", "Z")
    return _ENCODER.encode(fields).decode() + "\n"
