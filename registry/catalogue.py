"""The tool catalogue as the registry keeps it: tools in JetStream KV, workers' liveness in memory.

KV is the source of truth for tools (every gateway watches it); the registry writes a tool
only when its descriptor changes, so periodic announcements cost no KV traffic.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

import structlog
from nats.js.kv import KeyValue

from schemas.codec import DecodeError, decode, encode
from schemas.wire import ToolDescriptor, WorkerAnnouncement

log = structlog.get_logger(__name__)

KV_PUT = None  # nats-py reports a plain put with operation None
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
    tools: dict[str, ToolDescriptor] = field(default_factory=dict)
    _encoded: dict[str, bytes] = field(default_factory=dict)
    workers: dict[str, WorkerEntry] = field(default_factory=dict)
    _serving: dict[str, set[str]] = field(default_factory=dict)
    """tool name → ids of the workers whose last announcement lists it (the per-call lookup)."""
    loaded: asyncio.Event = field(default_factory=asyncio.Event)

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
        for tool in announcement.tools:
            encoded = encode(tool)
            if self._encoded.get(tool.name) != encoded:
                await self.tools_kv.put(tool.name, encoded)
                self._encoded[tool.name] = encoded
                self.tools[tool.name] = tool
                log.info("tool recorded", tool=tool.name, digest=tool.digest, worker_id=announcement.worker_id)

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
