"""The console's live feed: bus events fanned out to each open page as server-sent events.

One ``LiveFeed`` per gateway listens, while a page is open (and ``LINGER_S`` after the last one
closed, so that the page an action reloads misses nothing), to what already happens
on the bus — catalogue changes (the gateway's own mirror, ``gateway.catalogue_mirror``), worker
announcements, registry events, task transitions and the audit subjects (``PREFIX.audit.>``) —
and hands each page a bounded queue of events. Nothing polls: a page refetches a part only when
an event says it changed. The one timer is the calls-per-second line, a rate over the metrics
the gateway keeps (``gateway.console.stats``), sent every ``STATS_INTERVAL_S`` while a page is open.

A slow page loses its oldest events (``PAGE_QUEUE``), never the gateway's memory. While the
feed listens, this gateway hears every audit event of the deployment (one per tool call, from
every gateway): that is why it listens only while someone watches.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from typing import Any, Final

import structlog
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from bus.errors import BusError, nats_boundary
from bus.subjects import Subjects
from gateway.catalogue_mirror import CatalogueChange, CatalogueMirror
from schemas.codec import DecodeError, decode
from schemas.wire import WorkerAnnouncement

log = structlog.get_logger(__name__)

PAGE_QUEUE: Final = 256
"""Events waiting for one page; past this its oldest are dropped."""
STATS_INTERVAL_S: Final = 2.0
LINGER_S: Final = 60.0
"""The feed keeps listening this long after the last page closed (an action reloads its page)."""
KEEPALIVE_S: Final = 15.0
"""A comment line this often keeps proxies from closing an idle stream."""
WORKER_STALE_S: Final = 30.0
"""A worker not heard from for this long leaves the workers table (the registry's liveness window
is a few announce intervals, 5 s each by default)."""
RECENT_AUDIT: Final = 50
"""Audit events a newly opened page is shown first (those seen since the feed started): a page
reloaded by an action still shows that action's event."""
MAX_WORKERS: Final = 1000
"""Workers remembered (announcements are unauthenticated data as far as this table goes)."""

Event = tuple[str, str]
"""(SSE event name, data)."""


class LiveFeed:
    """Bus events for the console's open pages (see the module)."""

    def __init__(self, subjects: Subjects, catalogue: CatalogueMirror, stats: Callable[[], dict[str, Any]]) -> None:
        self._subjects = subjects
        self._catalogue = catalogue
        self._stats = stats
        self._pages: set[asyncio.Queue[Event]] = set()
        self._subscriptions: list[Subscription] = []
        self._unsubscribe_catalogue: Callable[[], None] | None = None
        self._ticker: asyncio.Task[None] | None = None
        self._linger: asyncio.Task[None] | None = None
        self._nc: NatsClient | None = None
        self._recent: deque[Event] = deque(maxlen=RECENT_AUDIT)
        self.workers: dict[str, tuple[float, WorkerAnnouncement]] = {}
        """Worker id → (monotonic time last heard, its last announcement)."""

    def live_workers(self) -> list[WorkerAnnouncement]:
        """Workers heard from within ``WORKER_STALE_S``, by id."""
        now = time.monotonic()
        for worker_id in [w for w, (seen, _) in self.workers.items() if now - seen > WORKER_STALE_S]:
            del self.workers[worker_id]
        return [announcement for _, (_, announcement) in sorted(self.workers.items())]

    @property
    def listening(self) -> bool:
        """Is the feed subscribed to the bus now?"""
        return self._nc is not None

    async def start(self, nc: NatsClient) -> None:
        """Listen to the bus (idempotent; each page opened calls it)."""
        if self._linger is not None:
            self._linger.cancel()
            self._linger = None
        if self._nc is not None:
            return
        self._nc = nc
        s = self._subjects
        try:
            with nats_boundary:
                for subject, handler in (
                    (s.announce, self._on_announcement),
                    (s.events_any, self._on_audit),
                    (s.audit_any, self._on_audit),
                    (s.task_status_any, self._on_task),
                ):
                    self._subscriptions.append(await nc.subscribe(subject, cb=handler))
        except BusError as exc:
            log.warning("console live feed: a subscription was refused", error=str(exc))
        self._unsubscribe_catalogue = self._catalogue.subscribe(self._on_catalogue)
        self._ticker = asyncio.create_task(self._tick(), name="console-stats")

    def end_streams(self) -> None:
        """End every open page's stream now (the gateway is shutting down; pages reconnect elsewhere)."""
        for page in self._pages:
            self._put(page, ("end", ""))

    async def stop(self) -> None:
        """Stop listening; open pages' streams end."""
        if self._linger is not None and self._linger is not asyncio.current_task():
            self._linger.cancel()
        self._linger = None
        if self._ticker is not None:
            self._ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._ticker
            self._ticker = None
        if self._unsubscribe_catalogue is not None:
            self._unsubscribe_catalogue()
            self._unsubscribe_catalogue = None
        for subscription in self._subscriptions:
            with contextlib.suppress(BusError, Exception):
                await subscription.unsubscribe()
        self._subscriptions.clear()
        self._nc = None
        self.end_streams()

    async def stream(self) -> AsyncIterator[bytes]:
        """One page's server-sent events, until it goes away or the feed stops."""
        page: asyncio.Queue[Event] = asyncio.Queue(PAGE_QUEUE)
        for event in self._recent:
            page.put_nowait(event)
        self._pages.add(page)
        try:
            yield b"retry: 2000\n\n"
            while True:
                try:
                    name, data = await asyncio.wait_for(page.get(), KEEPALIVE_S)
                except TimeoutError:
                    yield b": keepalive\n\n"
                    continue
                if name == "end":
                    return
                lines = "".join(f"data: {line}\n" for line in data.splitlines() or [""])
                yield f"event: {name}\n{lines}\n".encode()
        finally:
            self._pages.discard(page)
            if not self._pages and self._nc is not None and self._linger is None:
                self._linger = asyncio.create_task(self._stop_unwatched(), name="console-linger")

    async def _stop_unwatched(self) -> None:
        await asyncio.sleep(LINGER_S)
        if not self._pages:
            await self.stop()

    # -- sources --------------------------------------------------------------------------------
    def _send(self, name: str, data: str) -> None:
        for page in self._pages:
            self._put(page, (name, data))

    @staticmethod
    def _put(page: asyncio.Queue[Event], event: Event) -> None:
        if page.full():
            with contextlib.suppress(asyncio.QueueEmpty):
                page.get_nowait()
        page.put_nowait(event)

    def _on_catalogue(self, change: CatalogueChange) -> None:
        self._send("catalogue", json.dumps({"tools": len(self._catalogue)}))

    async def _on_announcement(self, msg: Msg) -> None:
        try:
            announcement = decode(msg.data, WorkerAnnouncement)
        except DecodeError:
            return
        known = self.workers.get(announcement.worker_id)
        if known is None and len(self.workers) >= MAX_WORKERS:
            self.live_workers()  # forget the stale ones first
            if len(self.workers) >= MAX_WORKERS:
                return
        self.workers[announcement.worker_id] = (time.monotonic(), announcement)
        if known is None or known[1] != announcement:
            self._send("workers", announcement.worker_id)

    async def _on_audit(self, msg: Msg) -> None:
        try:
            body = json.loads(msg.data or b"{}")
        except ValueError:
            body = {"raw": (msg.data or b"").decode("utf-8", "replace")[:500]}
        subject = msg.subject.removeprefix(self._subjects.prefix + ".")
        event = ("audit", json.dumps({"subject": subject, "at": time.time(), "body": body}))
        self._recent.append(event)
        self._send(*event)

    async def _on_task(self, msg: Msg) -> None:
        self._send("tasks", msg.subject.rsplit(".", 1)[-1])

    async def _tick(self) -> None:
        while True:
            await asyncio.sleep(STATS_INTERVAL_S)
            if self._pages:
                self._send("stats", json.dumps(self._stats()))
