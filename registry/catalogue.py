"""The tool catalogue as the registry keeps it: tools in JetStream KV, workers' liveness in memory.

KV is the source of truth for tools (every gateway watches it). It holds exactly the tools
some live worker serves: a tool appears when a worker announces it and leaves when its last
live worker does (``sync``). A tool of a published package is offered only at the version its
``latest`` alias points at, with its deprecation (if any) in the description. The registry
writes a tool only when its descriptor changes, so periodic announcements cost no KV traffic.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

import msgspec
import structlog
from nats.js.kv import KeyValue

from registry.surfaces import SurfaceCatalogue
from schemas.codec import DecodeError, decode, encode
from schemas.wire import Alias, ComponentSurface, PackageVersion, ToolDescriptor, WorkerAnnouncement
from stores import LATEST, parse_key

log = structlog.get_logger(__name__)

KV_GONE = frozenset({"DEL", "PURGE"})


@dataclass
class WorkerEntry:
    """A worker as last heard from."""

    announcement: WorkerAnnouncement
    last_seen: float
    first_seen: float
    """When this registry first heard from the worker (it serves calls from about then on)."""


@dataclass
class Catalogue:
    """Tools (mirrored from KV) and live workers (from announcements)."""

    tools_kv: KeyValue
    liveness_window_s: float
    packages_kv: KeyValue
    tools: dict[str, ToolDescriptor] = field(default_factory=dict)
    _encoded: dict[str, bytes] = field(default_factory=dict)
    workers: dict[str, WorkerEntry] = field(default_factory=dict)
    _serving: dict[str, set[str]] = field(default_factory=dict)
    """tool name → ids of the workers whose last announcement lists it (the per-call lookup)."""
    loaded: asyncio.Event = field(default_factory=asyncio.Event)
    packages_loaded: asyncio.Event = field(default_factory=asyncio.Event)
    seen: set[str] = field(default_factory=set)
    """Every tool name a worker has announced to this registry (calls to them get NO_WORKER,
    not UNKNOWN_TOOL, once their workers are gone)."""
    latest: dict[str, str] = field(default_factory=dict)
    """Package name → the version its ``latest`` alias points at."""
    releases: dict[tuple[str, str], PackageVersion] = field(default_factory=dict)
    """(package, version) → its record, as mirrored from the packages bucket."""
    surfaces: SurfaceCatalogue | None = None
    """Resources, prompts and completion, kept like the tools (``registry.surfaces``)."""
    may_remove: bool = False
    """Off until every live worker has had time to announce: before that, "nobody serves it"
    only means "nobody has told this (new) registry yet"."""

    async def watch(self) -> None:
        """Mirror the tools bucket into memory until cancelled (other replicas write too)."""
        watcher = await self.tools_kv.watchall()
        try:
            async for entry in watcher:
                if entry is None:  # nats-py's marker: every existing key has been delivered
                    self.loaded.set()
                    continue
                if entry.operation in KV_GONE or entry.value is None:
                    self.tools.pop(entry.key, None)
                    self._encoded.pop(entry.key, None)
                    continue
                try:
                    self.tools[entry.key] = decode(entry.value, ToolDescriptor)
                    self._encoded[entry.key] = entry.value
                except DecodeError as exc:
                    log.warning("undecodable tool record ignored", key=entry.key, error=str(exc))
        finally:
            await watcher.stop()  # type: ignore[no-untyped-call]

    async def watch_packages(self) -> None:
        """Mirror the ``latest`` aliases and version records of published packages until cancelled."""
        watcher = await self.packages_kv.watchall()
        try:
            async for entry in watcher:
                if entry is None:
                    self.packages_loaded.set()
                    await self.sync()
                    continue
                parts = parse_key(entry.key)
                if parts is None:
                    continue
                gone = entry.operation in KV_GONE or entry.value is None
                try:
                    if parts.kind == "alias" and parts.rest == LATEST:
                        if gone:
                            self.latest.pop(parts.name, None)
                        else:
                            self.latest[parts.name] = decode(entry.value, Alias).version
                    elif parts.kind == "version":
                        if gone:
                            self.releases.pop((parts.name, parts.rest), None)
                        else:
                            self.releases[(parts.name, parts.rest)] = decode(entry.value, PackageVersion)
                except DecodeError as exc:
                    log.warning("undecodable package record ignored", key=entry.key, error=str(exc))
                    continue
                if self.packages_loaded.is_set():
                    await self.sync()
        finally:
            await watcher.stop()  # type: ignore[no-untyped-call]

    async def record(self, announcement: WorkerAnnouncement) -> None:
        """Take a worker's announcement: refresh its liveness and store tools that changed."""
        worker_id = announcement.worker_id
        if announcement.state == "stopped":
            self._drop(worker_id)
        else:
            now = time.monotonic()
            known = self.workers.get(worker_id)
            if known is None or known.announcement.tools != announcement.tools:
                self._drop(worker_id)
                for tool in announcement.tools:
                    self._serving.setdefault(tool.name, set()).add(worker_id)
            self.workers[worker_id] = WorkerEntry(announcement, now, known.first_seen if known else now)
        self.seen.update(tool.name for tool in announcement.tools)
        await self.sync()

    def _live(self) -> list[WorkerAnnouncement]:
        """The announcements of the workers heard from recently and ready."""
        horizon = time.monotonic() - self.liveness_window_s
        return [
            entry.announcement
            for entry in self.workers.values()
            if entry.last_seen >= horizon and entry.announcement.state == "ready"
        ]

    def offered(self) -> dict[str, ToolDescriptor]:
        """What the tools bucket should hold: each tool a live worker serves, as it should be listed."""
        offered: dict[str, ToolDescriptor] = {}
        for announcement in self._live():
            for tool in announcement.tools:
                listed = self._as_listed(tool)
                if listed is not None:
                    offered.setdefault(tool.name, listed)
        return offered

    def _as_listed(self, tool: ToolDescriptor) -> ToolDescriptor | None:
        """A tool as the catalogue lists it, or None when it must not be offered."""
        if not tool.version:
            return tool  # from a worker's own config: not a published package
        package = tool.component
        if self.latest.get(package) != tool.version:
            return None  # retired, or a worker still on a version `latest` no longer points at
        release = self.releases.get((package, tool.version))
        if release is not None and release.deprecated:
            return msgspec.structs.replace(
                tool, description=f"DEPRECATED: {release.deprecated}. {tool.description}".rstrip()
            )
        return tool

    def _surface_listed(self, surface: ComponentSurface) -> bool:
        """A surface is offered at its package's ``latest`` version, as its tools are."""
        return not surface.version or self.latest.get(surface.component) == surface.version

    async def sync(self) -> None:
        """Make the tools bucket hold exactly ``offered()``: put what changed, delete what left
        (and the surfaces bucket what live workers announce)."""
        if self.surfaces is not None:
            announced = [surface for a in self._live() for surface in a.surfaces]
            await self.surfaces.sync(announced, self._surface_listed, may_remove=self.may_remove)
        offered = self.offered()
        for name, tool in offered.items():
            encoded = encode(tool)
            if self._encoded.get(name) != encoded:
                await self.tools_kv.put(name, encoded)
                self._encoded[name] = encoded
                self.tools[name] = tool
                log.info("tool offered", tool=name, version=tool.version or None, digest=tool.digest)
        if not self.may_remove:
            return
        for name in [n for n in self.tools if n not in offered]:
            await self.tools_kv.delete(name)
            self.tools.pop(name, None)
            self._encoded.pop(name, None)
            log.info("tool withdrawn: no live worker serves it at its current version", tool=name)

    def forget(self, worker_id: str) -> list[str]:
        """Drop a worker found dead; return the tools it served."""
        entry = self._drop(worker_id)
        return [] if entry is None else [t.name for t in entry.announcement.tools]

    def _drop(self, worker_id: str) -> WorkerEntry | None:
        entry = self.workers.pop(worker_id, None)
        if entry is not None:
            for tool in entry.announcement.tools:
                serving = self._serving.get(tool.name)
                if serving is not None:
                    serving.discard(worker_id)
                    if not serving:
                        del self._serving[tool.name]
        return entry

    def configured_component(self, name: str) -> list[str]:
        """The tools a worker serves from its own config under component ``name`` (none: nobody does).

        Tools from a worker's config carry no version; a published package's always do.
        """
        return sorted(
            {
                tool.name
                for entry in self.workers.values()
                for tool in entry.announcement.tools
                if tool.component == name and not tool.version
            }
        )

    def knows(self, tool: str) -> bool:
        """Whether ``tool`` is listed or some worker has offered it since this registry started.

        A known tool with no live worker is only unavailable (its calls get NO_WORKER, its tasks
        wait for a worker); an unknown one is a mistake its caller should hear about at once.
        """
        return tool in self.tools or tool in self.seen

    def serving_since(self, tool: str) -> float | None:
        """Since when some live worker has served ``tool`` (None: no live worker does)."""
        firsts = [self.workers[w].first_seen for w in self.live_workers(tool)]
        return min(firsts) if firsts else None

    def live_workers(self, tool: str) -> list[str]:
        """Ids of workers that serve ``tool``, announced recently and not draining."""
        horizon = time.monotonic() - self.liveness_window_s
        return [
            worker_id
            for worker_id in self._serving.get(tool, ())
            if (entry := self.workers[worker_id]).last_seen >= horizon and entry.announcement.state == "ready"
        ]

    def page(self, cursor: str | None, limit: int) -> tuple[list[ToolDescriptor], str | None]:
        """One page of tools in name order; the cursor is the last name of the previous page."""
        names = sorted(self.tools)
        start = 0
        if cursor:
            start = next((i for i, name in enumerate(names) if name > cursor), len(names))
        chosen = names[start : start + limit]
        more = start + limit < len(names)
        return [self.tools[n] for n in chosen], (chosen[-1] if more and chosen else None)
