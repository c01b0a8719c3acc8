"""The worker's announcements: what it serves, how loaded it is and whether it takes calls.

The registry builds its view of the workers from these (``WorkerAnnouncement``): one goes out
at start, at every change of the tool set, when the registry says hello, every
``announce_interval_s``, and as the worker drains and stops.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Literal

import structlog
from nats.aio.client import Client as NatsClient

from bus.errors import ConnectionClosed, OutboundBufferFull, nats_boundary
from bus.subjects import Subjects
from schemas.codec import encode
from schemas.config import WorkerSettings
from schemas.wire import ComponentSurface, ToolDescriptor, WorkerAnnouncement

log = structlog.get_logger(__name__)

WorkerState = Literal["ready", "draining", "stopped"]


class Announcer:
    """Publishes one worker's announcements; ``state`` is what the next one says."""

    def __init__(
        self,
        nc: NatsClient,
        subjects: Subjects,
        worker_id: str,
        settings: WorkerSettings,
        tools: Callable[[], list[ToolDescriptor]],
        in_flight: Callable[[], int],
        surfaces: Callable[[], list[ComponentSurface]] = list,
    ) -> None:
        self._nc = nc
        self._subjects = subjects
        self._worker_id = worker_id
        self._settings = settings
        self._tools = tools
        self._in_flight = in_flight
        self._surfaces = surfaces
        self.state: WorkerState = "ready"
        self.loading: tuple[str, ...] = ()
        """Configured components not loaded yet (announced as ``loading``: a worker serves each
        one's tools as it loads, and ``toolbus up`` waits until every worker's list is empty)."""

    async def announce(self) -> None:
        """Publish what this worker serves and how loaded it is.

        Raises:
            ConnectionLost: the connection cannot carry it now (closed, draining, buffer full…).
        """
        announcement = WorkerAnnouncement(
            worker_id=self._worker_id,
            tools=self._tools(),
            concurrency=self._settings.concurrency,
            in_flight=self._in_flight(),
            state=self.state,
            surfaces=self._surfaces(),
            loading=list(self.loading),
        )
        with nats_boundary:
            await self._nc.publish(self._subjects.announce, encode(announcement))

    async def announce_periodically(self) -> None:
        """Announce every ``announce_interval_s`` until cancelled or the connection is closed for
        good; a failed one is logged, not fatal."""
        while True:
            await asyncio.sleep(self._settings.announce_interval_s)
            try:
                await self.announce()
            except (ConnectionClosed, OutboundBufferFull) as exc:
                log.warning("announce failed", error=str(exc))
                if self._nc.is_closed:  # a closed client never reconnects: one line, not one per interval
                    return
