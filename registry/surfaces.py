"""Resources, prompts and completion in the catalogue: one ``ComponentSurface`` per component.

Kept like tools (``registry.catalogue``): the surfaces bucket (``Subjects.surfaces_bucket``, key =
component name) holds exactly the surfaces some live, ready worker announces, at the version the
package's ``latest`` alias points at (a worker's configured components carry no version). A dead
worker's resources and prompts leave with its tools; a surface is written only when it changed.
Which component serves a URI when two claim it is the gateway's call (``gateway.surface_mirror``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import structlog
from nats.js.kv import KeyValue

from schemas.codec import DecodeError, decode, encode
from schemas.wire import ComponentSurface

log = structlog.get_logger(__name__)

KV_GONE = frozenset({"DEL", "PURGE"})


@dataclass
class SurfaceCatalogue:
    """The surfaces bucket, mirrored in memory, and made to hold what live workers offer."""

    kv: KeyValue
    surfaces: dict[str, ComponentSurface] = field(default_factory=dict)
    _encoded: dict[str, bytes] = field(default_factory=dict)
    loaded: asyncio.Event = field(default_factory=asyncio.Event)

    async def watch(self) -> None:
        """Mirror the bucket until cancelled (other registry replicas write too)."""
        watcher = await self.kv.watchall()
        try:
            async for entry in watcher:
                if entry is None:
                    self.loaded.set()
                    continue
                if entry.operation in KV_GONE or entry.value is None:
                    self.surfaces.pop(entry.key, None)
                    self._encoded.pop(entry.key, None)
                    continue
                try:
                    self.surfaces[entry.key] = decode(entry.value, ComponentSurface)
                    self._encoded[entry.key] = entry.value
                except DecodeError as exc:
                    log.warning("undecodable surface record ignored", key=entry.key, error=str(exc))
        finally:
            await watcher.stop()  # type: ignore[no-untyped-call]

    async def sync(
        self, announced: Iterable[ComponentSurface], listed: Callable[[ComponentSurface], bool], *, may_remove: bool
    ) -> None:
        """Make the bucket hold the first ``announced`` surface of each component that ``listed``
        accepts; delete the others once ``may_remove``."""
        offered: dict[str, ComponentSurface] = {}
        for surface in announced:
            if surface.component not in offered and listed(surface):
                offered[surface.component] = surface
        for name, surface in offered.items():
            encoded = encode(surface)
            if self._encoded.get(name) != encoded:
                await self.kv.put(name, encoded)
                self._encoded[name] = encoded
                self.surfaces[name] = surface
                log.info("resources and prompts offered", component=name, version=surface.version or None)
        if not may_remove:
            return
        for name in [n for n in self.surfaces if n not in offered]:
            await self.kv.delete(name)
            self.surfaces.pop(name, None)
            self._encoded.pop(name, None)
            log.info("resources and prompts withdrawn: no live worker serves them", component=name)
