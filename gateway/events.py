"""One call's events (progress, logs) on their way from the worker to the MCP client.

A worker publishes ``CallEvent``s to the subject in the call's ``Toolbus-Events`` header while
the guest runs. ``EventRelay`` is what the gateway subscribes with: it decodes each event, keeps
only what the client asked for and forwards the rest, in order, through the front end's sinks.

- progress: only when the client sent a ``progressToken`` (the front end then gives
  ``on_progress``), and only reports whose ``progress`` is strictly greater than the last one
  relayed — the spec requires progress to increase, and a worker cannot be trusted to.
- logs: only when the client asked for a level, and only at that level or more severe.

Independent of the mcp SDK: the sinks are plain callables.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Awaitable, Callable
from typing import Any, Final

import msgspec
import structlog

from schemas.wire import CallEvent, LogEvent, ProgressEvent, log_severity

log = structlog.get_logger(__name__)

ProgressSink = Callable[[float, float | None, str | None], Awaitable[None]]
"""Sends ``notifications/progress`` with the client's token: ``(progress, total, message)``."""
LogSink = Callable[[str, Any, str | None], Awaitable[None]]
"""Sends ``notifications/message``: ``(level, data, logger)``."""

CATCH_UP_TIMEOUT_S: Final = 1.0
"""Longest a finished call waits for its already-received events to reach the client."""

_decoder: Final = msgspec.json.Decoder(CallEvent)


class EventRelay:
    """Relays one call's events to its client, filtered and in order.

    ``on_progress`` is given only when the client sent a progress token; ``on_log`` and
    ``log_level`` only when it asked for logs. A relay that wants neither is not worth a
    subscription (``wanted`` is false).
    """

    def __init__(
        self,
        *,
        on_progress: ProgressSink | None = None,
        on_log: LogSink | None = None,
        log_level: str | None = None,
    ) -> None:
        self._on_progress = on_progress
        self._min_severity = log_severity(log_level)
        self._on_log = on_log if self._min_severity is not None else None
        self.log_level = log_level if self._on_log is not None else None
        """The lowest level wanted (sent to the worker as ``Toolbus-Log-Level``), or ``None``."""
        self._last_progress: float | None = None
        self._handled = 0
        self._caught_up: asyncio.Event | None = None
        self._target = 0

    @property
    def wanted(self) -> bool:
        """True when the client asked for progress or logs."""
        return self._on_progress is not None or self._on_log is not None

    async def on_message(self, data: bytes) -> None:
        """Handle one message from the events subject (never raises)."""
        try:
            await self._relay(data)
        except Exception as exc:  # the client went away, or a sink failed: the call goes on
            log.debug("call event not relayed", error=str(exc) or type(exc).__name__)
        finally:
            self._handled += 1
            if self._caught_up is not None and self._handled >= self._target:
                self._caught_up.set()

    async def _relay(self, data: bytes) -> None:
        try:
            event = _decoder.decode(data)
        except msgspec.DecodeError:
            log.debug("malformed call event dropped", event=data[:200])
            return
        if isinstance(event, ProgressEvent):
            await self._progress(event)
        else:
            await self._log(event)

    async def _progress(self, event: ProgressEvent) -> None:
        progress = event.progress
        if self._on_progress is None or not math.isfinite(progress):
            return
        if self._last_progress is not None and progress <= self._last_progress:
            return
        self._last_progress = progress
        await self._on_progress(progress, event.total, event.message)

    async def _log(self, event: LogEvent) -> None:
        rank = log_severity(event.level)
        if self._on_log is None or self._min_severity is None or rank is None or rank < self._min_severity:
            return
        await self._on_log(event.level, event.data, event.logger)

    async def catch_up(self, received: int, timeout_s: float = CATCH_UP_TIMEOUT_S) -> None:
        """Wait until the first ``received`` messages have been handled (bounded by ``timeout_s``).

        Events a worker published before its reply arrive before the reply, but they are handled
        on the subscription's own task; this lets the result wait for them, so a client sees every
        progress report before the result.
        """
        if self._handled >= received:
            return
        self._target = received
        self._caught_up = asyncio.Event()
        try:
            await asyncio.wait_for(self._caught_up.wait(), timeout_s)
        except TimeoutError:
            log.debug("call events still pending at the result", pending=received - self._handled)
        finally:
            self._caught_up = None
