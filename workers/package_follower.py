"""Published packages on a worker: serve each package's ``latest`` version, load artifacts on
demand, and derive tools for the registry when something is published.

The follower watches the ``alias.*.latest`` keys of the packages bucket. When one changes it
fetches that version's artifact by digest (checked against the digest, then kept in
``<cache_dir>/artifacts``; the compile cache makes a second load take milliseconds), loads it
with the settings it was published with and this worker's capabilities, and only then swaps
it in: calls already running finish on the old version, new ones run on the new. A package
whose ``latest`` disappears (retired) stops being served. Changes are applied one at a time,
and a change that arrives while another is loading supersedes it.

Loading happens in a thread: compiling a large component takes seconds, and the worker keeps
serving meanwhile.
"""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path
from typing import Any

import msgspec
import structlog
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from bus.cancellation import cancel_and_wait
from bus.errors import BusError, nats_boundary
from bus.replies import send_error
from bus.subjects import Subjects
from schemas.codec import DecodeError, decode, encode
from schemas.config import ComponentSettings, Settings, describe_validation_error
from schemas.errors import ErrorCode
from schemas.wire import Alias, IntrospectReply, IntrospectRequest, ToolDescriptor
from stores import LATEST, PackageStore, StoreError, parse_key
from workers.errors import PublishedSettingsError, WorkersError
from workers.sandbox import EngineHost, Grants, LoadedCommand, LoadedComponent
from workers.sandbox.compile_cache import write_atomically
from workers.service import WorkerService
from workers.sources import load_one

log = structlog.get_logger(__name__)

ARTIFACTS_DIR = "artifacts"
"""Under ``cache_dir``: artifacts fetched from the store, named by the hex of their digest."""


def published_settings(name: str, path: Path, settings: dict[str, Any]) -> ComponentSettings:
    """The ``ComponentSettings`` a package runs with: its published settings, its name, the artifact.

    Raises:
        PublishedSettingsError: the settings break a rule (the message names the field).
    """
    try:
        return ComponentSettings.model_validate({**settings, "name": name, "path": path})
    except ValueError as exc:  # a settings rule broken (pydantic's ValidationError, worded per field)
        raise PublishedSettingsError(f"package {name!r}: {describe_validation_error(exc)}") from exc


class PackageFollower:
    """Keeps a worker serving the latest version of every published package."""

    def __init__(
        self,
        nc: NatsClient,
        subjects: Subjects,
        store: PackageStore,
        service: WorkerService,
        engine: EngineHost,
        settings: Settings,
    ) -> None:
        self._nc = nc
        self._subjects = subjects
        self._store = store
        self._service = service
        self._engine = engine
        self._settings = settings
        self._artifacts = settings.cache_dir / ARTIFACTS_DIR
        self._wanted: dict[str, str | None] = {}
        """Package → the version it should run (None: none), as last seen in the bucket."""
        self._serving: dict[str, str] = {}
        self._failed: dict[str, str | None] = {}
        """Package → the version that failed to load here (not retried until the alias changes)."""
        self._changed = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._subscription: Subscription | None = None
        self.caught_up = asyncio.Event()
        """Set once the packages published before this worker started are served (or failed)."""

    async def start(self) -> None:
        """Take introspection requests and start following ``latest`` aliases."""
        self._subscription = await self._nc.subscribe(
            self._subjects.worker_introspect, queue=self._subjects.worker_queue, cb=self._on_introspect
        )
        self._tasks.append(asyncio.create_task(self._watch()))
        self._tasks.append(asyncio.create_task(self._apply_changes()))

    async def stop(self) -> None:
        if self._subscription is not None:
            with contextlib.suppress(Exception):
                await self._subscription.unsubscribe()
        await cancel_and_wait(self._tasks)

    @property
    def serving(self) -> dict[str, str]:
        """Package → the version this worker serves now."""
        return dict(self._serving)

    async def _watch(self) -> None:
        watcher = await self._store.kv.watch(f"alias.*.{LATEST}")
        initial = True
        try:
            async for entry in watcher:
                if entry is None:
                    initial = False
                    self._changed.set()
                    if not self._wanted:
                        self.caught_up.set()
                    continue
                parts = parse_key(entry.key)
                if parts is None:
                    continue
                gone = entry.operation in ("DEL", "PURGE") or not entry.value
                try:
                    self._wanted[parts.name] = None if gone else decode(entry.value, Alias).version
                except DecodeError as exc:
                    log.warning("undecodable alias ignored", key=entry.key, error=str(exc))
                    continue
                if not initial:
                    self._changed.set()
        finally:
            with contextlib.suppress(BusError), nats_boundary:  # e.g. the connection is already closed
                await watcher.stop()  # type: ignore[no-untyped-call]

    async def _apply_changes(self) -> None:
        while True:
            await self._changed.wait()
            self._changed.clear()
            for name, version in list(self._wanted.items()):
                if self._serving.get(name) == version or (name in self._failed and self._failed[name] == version):
                    continue
                try:
                    await self._apply(name, version)
                    self._failed.pop(name, None)
                except (StoreError, WorkersError, OSError) as exc:
                    # This worker keeps what it served before (the registry offers a version
                    # only where a worker announces it), and retries at the alias's next change.
                    log.error("package version not served", package=name, version=version, error=str(exc))
                    self._failed[name] = version
            self.caught_up.set()

    async def _apply(self, name: str, version: str | None) -> None:
        if version is None:
            await self._service.remove_source(name)
            self._serving.pop(name, None)
            log.info("package no longer served", package=name)
            return
        record = await self._store.version(name, version)
        if record is None:
            raise StoreError(f"{name} {version}: the alias points at a version that is not published")
        loaded = await self._load(name, record.digest, record.settings)
        tools = [msgspec.structs.replace(t, version=version) for t in loaded.tools]
        await self._service.set_source(name, loaded, tools)
        self._serving[name] = version
        log.info("package served", package=name, version=version, digest=record.digest, tools=[t.name for t in tools])

    async def _load(self, name: str, digest: str, settings: dict[str, Any]) -> LoadedComponent | LoadedCommand:
        path = await self._artifact_path(digest)
        configured = published_settings(name, path, settings)
        grants = Grants.resolve(configured, self._settings.capabilities)
        return await asyncio.to_thread(
            load_one,
            configured,
            self._engine,
            self._settings.cache_dir,
            defaults=self._settings.worker.limits,
            grants=grants,
        )

    async def _artifact_path(self, digest: str) -> Path:
        """A local file holding artifact ``digest``: cached, or fetched (and checked) now."""
        path = self._artifacts / f"{digest.removeprefix('sha256:')}.wasm"
        if path.is_file():
            return path
        data = await self._store.get_artifact(digest)  # checks the hash
        await asyncio.to_thread(write_atomically, path, data)  # megabytes: not on the event loop
        return path

    async def _on_introspect(self, msg: Msg) -> None:
        if not msg.reply:
            return
        try:
            request = decode(msg.data, IntrospectRequest)
            loaded = await self._load(request.name, request.digest, request.settings)
        except (DecodeError, StoreError, WorkersError, OSError) as exc:
            await send_error(self._nc, msg.reply, ErrorCode.RELEASE_REJECTED, str(exc))
            return
        except Exception:  # the outermost handler: a bug must still produce a reply
            log.exception("introspection failed")
            await send_error(self._nc, msg.reply, ErrorCode.INTERNAL, "internal error in worker; see worker logs")
            return
        tools: list[ToolDescriptor] = list(loaded.tools)
        await msg.respond(encode(IntrospectReply(tools=tools, worker_id=self._service.worker_id)))
