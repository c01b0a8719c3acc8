"""Info lines of one event written in batches, off the per-call path: the gateway's and the
worker's per-call log (``gateway.call_log``, ``workers.telemetry.call_log``).

Writing a line through structlog as a call finished cost the gateway ~43 µs and the worker
~13 µs of CPU per call (issue 17: the processor chain, a timestamp, the encoder, one ``write``
and flush per line). ``BatchedLines.add`` only appends (well under a µs); a timer
``FLUSH_AFTER_S`` later writes every line gathered meanwhile at once, and ``flush`` at stop
writes what is left, so every call keeps its line and a crash loses at most ``FLUSH_AFTER_S``
of them. When the process renders JSON lines (``cli.logs``: ``toolbus up`` and the roles do
unless on a terminal) a batch is encoded here with msgspec into the lines structlog would write
(same keys in the same order, the item's own time as the timestamp); other renderers (a
terminal, tests' ``capture_logs``) still get each line through structlog.
"""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from typing import IO, Any, Final, Generic, TypeVar

import msgspec
import structlog

FLUSH_AFTER_S: Final = 0.05
"""How long a line may wait for its batch: short enough for someone tailing the log."""
MAX_BATCH: Final = 512
"""Lines held at most: a burst is written without waiting for the timer (bounds memory)."""

_JSON: Final = msgspec.json.Encoder(enc_hook=repr)

Item = TypeVar("Item")


class BatchedLines(Generic[Item]):
    """Writes ``event`` at info for each item added, as ``fields(item)``, in batches."""

    def __init__(
        self, logger_name: str, event: str, fields: Callable[[Item], dict[str, Any]], stream: IO[str] | None = None
    ) -> None:
        self._log = structlog.get_logger(logger_name)
        self._event = event
        self._fields = fields
        self._stream = stream
        """Where JSON lines go; ``None``: ``sys.stderr`` when written (where ``cli.logs`` sends them)."""
        self._pending: list[tuple[Item, float]] = []
        self._timer: asyncio.TimerHandle | None = None
        self._second = -1
        self._second_text = ""

    def add(self, item: Item, at: float) -> None:
        """Keep ``item``'s line (stamped ``at``, a Unix time) for the next batch: the per-call cost."""
        pending = self._pending
        pending.append((item, at))
        if len(pending) >= MAX_BATCH:
            self.flush()
        elif self._timer is None:
            try:
                self._timer = asyncio.get_running_loop().call_later(FLUSH_AFTER_S, self.flush)
            except RuntimeError:  # no event loop: nothing would write it later, so now
                self.flush()

    def flush(self) -> None:
        """Write every line kept so far; never raises (a log line must not break a call)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        pending, self._pending = self._pending, []
        if not pending:
            return
        try:
            if not _renders_json():
                for item, _ in pending:
                    self._log.info(self._event, **self._fields(item))
            elif self._log.bind().is_enabled_for(logging.INFO):
                lines = [self._json_line(item, at) for item, at in pending]
                stream = self._stream or sys.stderr
                stream.write(b"".join(lines).decode())
                stream.flush()
        except Exception:  # a closed stderr at shutdown, say
            logging.getLogger(__name__).debug("log lines not written", exc_info=True)

    def _json_line(self, item: Item, at: float) -> bytes:
        line = self._fields(item)
        # The keys structlog's processors add (cli.logs), in the order they add them.
        line["event"] = self._event
        line["level"] = "info"
        line["timestamp"] = self._timestamp(at)
        return _JSON.encode(line) + b"\n"

    def _timestamp(self, at: float) -> str:
        """``at`` as structlog's ``TimeStamper(fmt="iso", utc=True)`` writes it (to the µs)."""
        # Formatting a datetime took ~4.5 µs a line; the lines of one second share its text.
        second = int(at)
        if second != self._second:
            self._second = second
            self._second_text = datetime.fromtimestamp(second, UTC).strftime("%Y-%m-%dT%H:%M:%S")
        return f"{self._second_text}.{int((at - second) * 1_000_000):06d}Z"


def _renders_json() -> bool:
    """Whether structlog is configured to write JSON lines (the last processor is its JSON renderer)."""
    processors = structlog.get_config()["processors"]
    return bool(processors) and isinstance(processors[-1], structlog.processors.JSONRenderer)
