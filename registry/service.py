"""The registry's bus side: record announcements, answer list/get, and answer calls nobody can.

The registry stays off the call path: it subscribes to a tool's call subject only while the tool
is known (listed, or announced since start) and no live worker serves it — a *stand-in* that
answers ``NO_WORKER`` at once. A tool a worker serves gets no subscription of ours, so a call
to it is delivered once, to a worker. Calls nobody subscribes to (an unknown tool; a tool whose
worker died before the registry noticed) get NATS's own "no responders" at once.

The registry still pings each worker every ``PROBE_INTERVAL_S``: a dead connection gets "no
responders" at once, so the registry forgets it, withdraws tools nobody serves and stands in
for them. See docs/bus-protocol.md, "Calls nobody can serve".
"""

from __future__ import annotations

import asyncio
import time

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
        self._standins: dict[str, Subscription] = {}
        """Tool → our subscription to its call subject, held while no live worker serves it."""
        self._standins_lock = asyncio.Lock()
        """Announcements and probes both reconcile: one at a time, or a stand-in could leak."""
        self._answering = False
        """Off until every live worker has had time to announce (``STARTUP_GRACE_S``)."""
        self.catalogue: Catalogue | None = None
        self.store: PackageStore | None = None
        self.releases: Releases | None = None
        self.tasks: TaskDesk | None = None

    @property
    def standing_in(self) -> frozenset[str]:
        """The tools whose calls this registry answers now (NO_WORKER): known, no live worker."""
        return frozenset(self._standins)

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
        self._answering = False
        async with self._standins_lock:
            for tool in list(self._standins):
                await self._stop_standing_in(tool)

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
        await self._stand_in_where_needed()

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

    async def _on_unserved_call(self, msg: Msg) -> None:
        """A call to a tool we stand in for: NO_WORKER, unless a worker has come meanwhile."""
        assert self.catalogue is not None
        if not msg.reply:
            return
        tool = self._subjects.tool_from_call(msg.subject)
        # A worker subscribes before it announces: until we drop this stand-in a call reaches
        # both, and the worker's answer is the one that counts.
        if not self.catalogue.live_workers(tool):
            await send_error(self._nc, msg.reply, ErrorCode.NO_WORKER, _no_worker(tool))

    async def _stand_in_where_needed(self) -> None:
        """Subscribe to the call subject of each known tool no live worker serves; unsubscribe
        from those a worker serves again. Idempotent; run after every change of liveness."""
        catalogue = self.catalogue
        if catalogue is None or not self._answering or not self._settings.answer_unknown_tools:
            return
        async with self._standins_lock:
            await self._reconcile_standins(catalogue)

    async def _reconcile_standins(self, catalogue: Catalogue) -> None:
        unserved = {tool for tool in (catalogue.tools.keys() | catalogue.seen) if not catalogue.live_workers(tool)}
        for tool in [t for t in self._standins if t not in unserved]:
            await self._stop_standing_in(tool)
        for tool in unserved - self._standins.keys():
            try:
                subject = self._subjects.call(tool)
            except ValueError:
                continue  # a name no subject can carry was never callable
            try:
                with nats_boundary:
                    self._standins[tool] = await self._nc.subscribe(
                        subject,
                        queue=self._subjects.registry_queue,
                        cb=published_only(subject, self._on_unserved_call),
                    )
            except ConnectionClosed:
                return

    async def _stop_standing_in(self, tool: str) -> None:
        sub = self._standins.pop(tool)
        try:
            with nats_boundary:
                await sub.unsubscribe()
        except ConnectionClosed:
            pass

    async def _probe_periodically(self) -> None:
        """Ping every worker; forget the dead, answer their lost calls, withdraw unserved tools."""
        assert self.catalogue is not None
        await asyncio.sleep(STARTUP_GRACE_S)
        # Every live worker has answered our hello by now: a tool nobody announced has no worker.
        self.catalogue.may_remove = True
        await self.catalogue.sync()
        self._answering = True
        await self._stand_in_where_needed()
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
        # Also catches workers that went silent without dying (their liveness window passed).
        await self.catalogue.sync()
        # Also the tools published or removed meanwhile (the catalogue mirrors KV).
        await self._stand_in_where_needed()

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


def _no_worker(tool: str) -> str:
    return f"no worker is serving tool {tool!r} right now"
