"""The registry's bus side: record announcements, answer list/get, and answer calls nobody can.

Answering calls: the registry listens on every call subject (in its own queue group) and
replies only when no worker will — the tool is unknown, or no live worker serves it — so a
caller gets a typed error at once instead of waiting for its deadline.

Listening on every call subject also means NATS never says "no responders" for a tool, so
the registry must notice dead workers itself, and fast: it pings each worker every
``PROBE_INTERVAL_S`` (a dead connection gets "no responders" at once). When a worker turns
out dead, the calls for its tools that the registry let through in the last
``RECENT_CALLS_S`` — and that arrived before any worker still alive was serving the tool —
can only have gone to the dead one (or to nobody): they get NO_WORKER. A caller takes the
first reply, so a call the dead worker did answer is not affected. Calls that a live worker
may be running are left alone. See docs/bus-protocol.md.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque

import structlog
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from bus.cancellation import cancel_and_wait
from bus.connection import caught_up, published_only, send_request
from bus.errors import BusTimeout, ConnectionClosed, NoResponders, nats_boundary
from bus.payloads import Payloads
from bus.principal import PrincipalSigner
from bus.provisioning import ensure_bucket
from bus.replies import send_error
from bus.subjects import RELEASE_VERBS, Subjects
from registry.audit_stream import ensure_audit_stream
from registry.catalogue import Catalogue
from registry.releases import Releases, SignaturePolicy
from registry.signatures import load_trusted_key
from registry.surfaces import SurfaceCatalogue
from registry.task_desk import TaskDesk
from schemas.codec import DecodeError, decode, encode
from schemas.config import DEFAULT_MAX_PAYLOAD_BYTES, MAX_RATE_WINDOW_S, RegistrySettings, TasksSettings
from schemas.errors import ErrorCode
from schemas.wire import RegistryEvent, ToolGetRequest, ToolList, ToolListRequest, WorkerAnnouncement
from stores import PackageStore, TaskStore

log = structlog.get_logger(__name__)

LIVENESS_MISSED_ANNOUNCEMENTS = 3
"""A worker not heard from for this many announcement intervals counts as gone."""
LOAD_TIMEOUT_S = 10.0
"""How long start-up waits for the existing catalogue to stream in from KV."""
STARTUP_GRACE_S = 1.0
"""After start, workers answer our hello within milliseconds; until then, stay silent on calls."""
PROBE_INTERVAL_S = 0.25
"""How often every worker is pinged: bounds how long a call to a dead worker waits for its error."""
PROBE_TIMEOUT_S = 2.0
"""A busy worker may answer slowly; only "no responders" (a gone connection) counts as dead."""
RECENT_CALLS_S = 3.0
"""Calls let through are remembered this long, to answer them if their worker dies; longer than
a probe round can take under load (``PROBE_TIMEOUT_S`` plus an interval)."""


class RegistryService:
    """Keeps the catalogue and answers the registry's requests until stopped."""

    def __init__(
        self,
        nc: NatsClient,
        subjects: Subjects,
        settings: RegistrySettings,
        announce_interval_s: float = 5.0,
        tasks: TasksSettings | None = None,
        *,
        replicas: int = 1,
        principal_signer: PrincipalSigner | None = None,
        max_payload_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES,
    ) -> None:
        self._max_payload_bytes = max_payload_bytes
        """``[nats] max_payload_bytes``: the largest task arguments and results (``bus.payloads``)."""
        self._tasks_settings = tasks or TasksSettings()
        self._principal_signer = principal_signer
        """Checks the principals task requests claim (``registry.task_desk``)."""
        self._replicas = replicas
        """JetStream replicas of the streams and buckets this registry creates."""
        self._nc = nc
        self._subjects = subjects
        self._settings = settings
        self._liveness_window_s = announce_interval_s * LIVENESS_MISSED_ANNOUNCEMENTS
        self._subscriptions: list[Subscription] = []
        self._tasks: list[asyncio.Task[None]] = []
        self._recent_calls: dict[str, deque[tuple[float, str]]] = {}
        self._answering_since = 0.0
        self.catalogue: Catalogue | None = None
        self.store: PackageStore | None = None
        self.releases: Releases | None = None
        self.tasks: TaskDesk | None = None

    def _signature_policy(self) -> SignaturePolicy:
        """The trusted keys, read now: a missing or bad key file stops the registry at start.

        Raises:
            SignatureError: a key file cannot be read or is not an ECDSA P-256 public key.
        """
        keys = [load_trusted_key(path) for path in self._settings.trusted_keys]
        return SignaturePolicy(trusted=keys, required=self._settings.require_signatures)

    async def start(self) -> None:
        """Provision JetStream, load the catalogue, subscribe, and ask workers to announce.

        Each store creates its own buckets and streams if missing (once each).

        Raises:
            SignatureError: a trusted key file cannot be read (checked first, before anything is created).
        """
        signatures = self._signature_policy()
        await ensure_audit_stream(
            self._nc, self._subjects, replicas=self._replicas, max_events=self._settings.audit_max_events
        )
        tools_kv = await ensure_bucket(self._nc, self._subjects.tools_bucket, replicas=self._replicas)
        # Only the registry may create streams (bus.permissions): the gateways' rate-limit bucket
        # too, whether or not a limit is set (keys idle for the longest window expire).
        await ensure_bucket(
            self._nc, self._subjects.rate_limits_bucket, replicas=self._replicas, ttl_s=MAX_RATE_WINDOW_S
        )
        self.store = await PackageStore.open(self._nc, self._subjects, replicas=self._replicas)
        # Views set at run time (stores.view_store): operators write it, gateways watch it.
        await ensure_bucket(self._nc, self._subjects.views_bucket, replicas=self._replicas)
        surfaces_kv = await ensure_bucket(self._nc, self._subjects.surfaces_bucket, replicas=self._replicas)
        surfaces = SurfaceCatalogue(surfaces_kv)
        self.catalogue = Catalogue(tools_kv, self._liveness_window_s, packages_kv=self.store.kv, surfaces=surfaces)
        self._tasks.append(asyncio.create_task(self.catalogue.watch()))
        self._tasks.append(asyncio.create_task(surfaces.watch()))
        await asyncio.wait_for(surfaces.loaded.wait(), LOAD_TIMEOUT_S)
        self._tasks.append(asyncio.create_task(self.catalogue.watch_packages()))
        await asyncio.wait_for(self.catalogue.loaded.wait(), LOAD_TIMEOUT_S)
        await asyncio.wait_for(self.catalogue.packages_loaded.wait(), LOAD_TIMEOUT_S)
        self.releases = Releases(self._nc, self._subjects, self.store, self.catalogue.configured_component, signatures)
        task_store = await TaskStore.open(
            self._nc,
            self._subjects,
            self._tasks_settings,
            replicas=self._replicas,
            max_payload_bytes=self._max_payload_bytes,
        )
        payloads = Payloads(self._nc, self._subjects, max_bytes=self._max_payload_bytes, replicas=self._replicas)
        await payloads.bucket()  # the registry provisions it (with its TTL): no other role may create it
        self.tasks = TaskDesk(
            self._nc, self._subjects, task_store, self.catalogue.knows, self._principal_signer, payloads
        )
        await self.tasks.start()
        s, q = self._subjects, self._subjects.registry_queue
        # Every replica hears every announcement (no queue group) so each knows every worker.
        self._subscriptions.append(
            await self._nc.subscribe(s.announce, cb=published_only(s.announce, self._on_announce))
        )
        self._subscriptions.append(
            await self._nc.subscribe(s.registry_list, queue=q, cb=published_only(s.registry_list, self._on_list))
        )
        self._subscriptions.append(
            await self._nc.subscribe(s.registry_get, queue=q, cb=published_only(s.registry_get, self._on_get))
        )
        for verb in RELEASE_VERBS:
            self._subscriptions.append(
                await self._nc.subscribe(
                    s.registry_release(verb),
                    queue=q,
                    cb=published_only(s.registry_release(verb), self.releases.handler(verb)),
                )
            )
        self._answering_since = time.monotonic() + STARTUP_GRACE_S
        if self._settings.answer_unknown_tools:
            self._subscriptions.append(
                await self._nc.subscribe(s.call_any, queue=q, cb=published_only(s.call_any, self._on_call))
            )
        self._tasks.append(asyncio.create_task(self._probe_periodically()))
        # Not nc.flush(): its PING can overtake our SUBs (see bus.connection.caught_up).
        await caught_up(self._nc)
        await self._nc.publish(s.registry_hello, b"")
        log.info("registry ready", tools=len(self.catalogue.tools))

    async def stop(self) -> None:
        """Unsubscribe and stop background work."""
        if self.tasks is not None:
            await self.tasks.stop()
        for sub in self._subscriptions:
            try:
                with nats_boundary:
                    await sub.unsubscribe()
            except ConnectionClosed:
                pass
        await cancel_and_wait(self._tasks)

    async def _on_announce(self, msg: Msg) -> None:
        assert self.catalogue is not None
        try:
            announcement = decode(msg.data, WorkerAnnouncement)
        except DecodeError as exc:
            log.warning("undecodable announcement ignored", error=str(exc))
            return
        # A draining worker still answers every call delivered to it, so nothing to answer here;
        # later calls find no live worker and get NO_WORKER in _on_call.
        known = announcement.worker_id in self.catalogue.workers
        await self.catalogue.record(announcement)
        if not known and announcement.state == "ready":
            await self._worker_event("worker_joined", announcement.worker_id, [t.name for t in announcement.tools])
        elif known and announcement.state == "stopped":
            await self._worker_event("worker_left", announcement.worker_id, [t.name for t in announcement.tools])

    async def _on_list(self, msg: Msg) -> None:
        assert self.catalogue is not None
        try:
            request = decode(msg.data, ToolListRequest) if msg.data.strip() else ToolListRequest()
        except DecodeError as exc:
            await send_error(self._nc, msg.reply, ErrorCode.BAD_REQUEST, f"list request: {exc}")
            return
        tools, next_cursor = self.catalogue.page(request.cursor, request.limit)
        live = {tool.name: len(self.catalogue.live_workers(tool.name)) for tool in tools}
        await msg.respond(encode(ToolList(tools=tools, next_cursor=next_cursor, live_workers=live)))

    async def _on_get(self, msg: Msg) -> None:
        assert self.catalogue is not None
        try:
            request = decode(msg.data, ToolGetRequest)
        except DecodeError as exc:
            await send_error(self._nc, msg.reply, ErrorCode.BAD_REQUEST, f"get request: {exc}")
            return
        tool = self.catalogue.tools.get(request.name)
        if tool is None:
            await send_error(self._nc, msg.reply, ErrorCode.UNKNOWN_TOOL, f"unknown tool {request.name!r}")
        else:
            await msg.respond(encode(tool))

    async def _on_call(self, msg: Msg) -> None:
        assert self.catalogue is not None
        if not msg.reply:
            return
        tool = self._subjects.tool_from_call(msg.subject)
        now = time.monotonic()
        if not self.catalogue.knows(tool):
            await send_error(self._nc, msg.reply, ErrorCode.UNKNOWN_TOOL, f"unknown tool {tool!r}")
        elif now >= self._answering_since and not self.catalogue.live_workers(tool):
            await send_error(self._nc, msg.reply, ErrorCode.NO_WORKER, _no_worker(tool))
        else:
            # A worker should answer; remember the call in case that worker turns out to be dead.
            recent = self._recent_calls.setdefault(tool, deque())
            recent.append((now, msg.reply))
            while recent and recent[0][0] < now - RECENT_CALLS_S:
                recent.popleft()

    async def _probe_periodically(self) -> None:
        """Ping every worker; forget the dead, answer their lost calls, withdraw unserved tools."""
        assert self.catalogue is not None
        await asyncio.sleep(STARTUP_GRACE_S)
        # Every live worker has answered our hello by now: a tool nobody announced has no worker.
        self.catalogue.may_remove = True
        await self.catalogue.sync()
        # Calls that came in while we waited for the first announcements, for tools still without a worker.
        for tool in [t for t in self._recent_calls if not self.catalogue.live_workers(t)]:
            await self._answer_lost(tool)
        while True:
            await asyncio.sleep(PROBE_INTERVAL_S)
            try:
                await self._probe_once()
            except Exception:
                # A KV write that timed out under load must not end probing for good: without it
                # a dead worker's tools stay listed until its liveness window passes, and a
                # restarted worker can announce them again before that.
                log.exception("probing workers failed; trying again next round")

    async def _probe_once(self) -> None:
        assert self.catalogue is not None
        ids = list(self.catalogue.workers)
        outcomes = await asyncio.gather(*(self._ping(w) for w in ids))
        for worker_id, alive in zip(ids, outcomes, strict=True):
            if not alive:
                tools = self.catalogue.forget(worker_id)
                await self._worker_event("worker_left", worker_id, tools)
                for tool in tools:
                    await self._answer_lost(tool)
        # Also catches workers that went silent without dying (their liveness window passed).
        await self.catalogue.sync()

    async def _worker_event(self, kind: str, worker_id: str, tools: list[str]) -> None:
        """Publish a worker's arrival or departure (each registry replica publishes its own)."""
        event = RegistryEvent(kind=kind, worker_id=worker_id, tools=tools, at=time.time())  # type: ignore[arg-type]
        await self._nc.publish(self._subjects.event(kind), encode(event))

    async def _ping(self, worker_id: str) -> bool:
        """False only when the worker's connection is gone (NATS says no responders)."""
        try:
            await send_request(self._nc, self._subjects.worker_ping(worker_id), b"", timeout_s=PROBE_TIMEOUT_S)
        except NoResponders:
            log.warning("worker gone", worker_id=worker_id)
            return False
        except (BusTimeout, ConnectionClosed, ValueError):
            pass  # slow or unreachable from here is not proof of death; announcements decide
        return True

    async def _answer_lost(self, tool: str) -> None:
        """Reply NO_WORKER to the recent calls of ``tool`` that no live worker can have taken."""
        assert self.catalogue is not None
        since = self.catalogue.serving_since(tool)
        calls = self._recent_calls.get(tool, deque())
        lost = 0
        # Remembered calls are in arrival order; those before `since` predate every live worker.
        while calls and (since is None or calls[0][0] < since):
            _, reply = calls.popleft()
            await send_error(self._nc, reply, ErrorCode.NO_WORKER, _no_worker(tool))
            lost += 1
        if lost:
            log.warning("answered calls a gone worker can no longer answer", tool=tool, calls=lost)


def _no_worker(tool: str) -> str:
    return f"no worker is serving tool {tool!r} right now"
