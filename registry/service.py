"""The registry's bus side: record announcements, answer list/get, and answer calls nobody can.

Answering calls: the registry listens on every call subject (in its own queue group) and
replies only when no worker will — the tool is unknown, or no live worker serves it — so a
caller gets a typed error at once instead of waiting for its deadline. See
docs/bus-protocol.md for the cost of this and the switch that turns it off.
"""

from __future__ import annotations

import asyncio

import nats.errors
import structlog
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from bus.provisioning import ensure_bucket, provision
from bus.replies import send_error
from bus.subjects import Subjects
from registry.catalogue import Catalogue
from schemas.codec import DecodeError, decode, encode
from schemas.config import RegistrySettings
from schemas.errors import ErrorCode
from schemas.wire import ToolGetRequest, ToolList, ToolListRequest, WorkerAnnouncement

log = structlog.get_logger(__name__)

LIVENESS_MISSED_ANNOUNCEMENTS = 3
"""A worker not heard from for this many announcement intervals counts as gone."""
LOAD_TIMEOUT_S = 10.0
"""How long start-up waits for the existing catalogue to stream in from KV."""


class RegistryService:
    """Keeps the catalogue and answers the registry's requests until stopped."""

    def __init__(
        self, nc: NatsClient, subjects: Subjects, settings: RegistrySettings, announce_interval_s: float = 5.0
    ) -> None:
        self._nc = nc
        self._subjects = subjects
        self._settings = settings
        self._liveness_window_s = announce_interval_s * LIVENESS_MISSED_ANNOUNCEMENTS
        self._subscriptions: list[Subscription] = []
        self._watch_task: asyncio.Task[None] | None = None
        self.catalogue: Catalogue | None = None

    async def start(self) -> None:
        """Provision JetStream, load the catalogue, and subscribe."""
        await provision(self._nc, self._subjects)
        tools_kv = await ensure_bucket(self._nc, self._subjects.tools_bucket)
        self.catalogue = Catalogue(tools_kv, self._liveness_window_s)
        self._watch_task = asyncio.create_task(self.catalogue.watch())
        await asyncio.wait_for(self.catalogue.loaded.wait(), LOAD_TIMEOUT_S)
        s, q = self._subjects, self._subjects.registry_queue
        # Every replica hears every announcement (no queue group) so each knows every worker.
        self._subscriptions.append(await self._nc.subscribe(s.announce, cb=self._on_announce))
        self._subscriptions.append(await self._nc.subscribe(s.registry_list, queue=q, cb=self._on_list))
        self._subscriptions.append(await self._nc.subscribe(s.registry_get, queue=q, cb=self._on_get))
        if self._settings.answer_unknown_tools:
            self._subscriptions.append(await self._nc.subscribe(s.call_any, queue=q, cb=self._on_call))
        await self._nc.flush()
        log.info("registry ready", tools=len(self.catalogue.tools))

    async def stop(self) -> None:
        """Unsubscribe and stop watching."""
        for sub in self._subscriptions:
            try:
                await sub.unsubscribe()
            except nats.errors.ConnectionClosedError:
                pass
        if self._watch_task:
            self._watch_task.cancel()

    async def _on_announce(self, msg: Msg) -> None:
        assert self.catalogue is not None
        try:
            announcement = decode(msg.data, WorkerAnnouncement)
        except DecodeError as exc:
            log.warning("undecodable announcement ignored", error=str(exc))
            return
        await self.catalogue.record(announcement)

    async def _on_list(self, msg: Msg) -> None:
        assert self.catalogue is not None
        try:
            request = decode(msg.data, ToolListRequest) if msg.data.strip() else ToolListRequest()
        except DecodeError as exc:
            await self._error(msg, ErrorCode.BAD_REQUEST, f"list request: {exc}")
            return
        tools, next_cursor = self.catalogue.page(request.cursor, request.limit)
        await msg.respond(encode(ToolList(tools=tools, next_cursor=next_cursor)))

    async def _on_get(self, msg: Msg) -> None:
        assert self.catalogue is not None
        try:
            request = decode(msg.data, ToolGetRequest)
        except DecodeError as exc:
            await self._error(msg, ErrorCode.BAD_REQUEST, f"get request: {exc}")
            return
        tool = self.catalogue.tools.get(request.name)
        if tool is None:
            await self._error(msg, ErrorCode.UNKNOWN_TOOL, f"unknown tool {request.name!r}")
        else:
            await msg.respond(encode(tool))

    async def _on_call(self, msg: Msg) -> None:
        assert self.catalogue is not None
        if not msg.reply:
            return
        tool = self._subjects.tool_from_call(msg.subject)
        if tool not in self.catalogue.tools:
            await self._error(msg, ErrorCode.UNKNOWN_TOOL, f"unknown tool {tool!r}")
        elif not self.catalogue.live_workers(tool):
            await self._error(msg, ErrorCode.NO_WORKER, f"no worker is serving tool {tool!r} right now")
        # Otherwise a worker answers; staying silent is the point.

    async def _error(self, msg: Msg, code: ErrorCode, message: str) -> None:
        await send_error(self._nc, msg.reply, code, message)
