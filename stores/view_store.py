"""Views set at run time: KV ``PREFIX_views``, key = view name → ``ViewSpec`` (docs/views.md).

The registry creates the bucket (only it may create streams); operators write it (``toolbus views
set|delete``); every gateway watches it and serves ``/mcp/<name>`` from what it holds, over the
``[views.<name>]`` of its own config.
"""

from __future__ import annotations

import re
import time

from nats.aio.client import Client as NatsClient
from nats.js.kv import KeyValue

from bus.errors import BucketNotFound, KeyDeleted, KeyNotFound, nats_boundary
from bus.kv import snapshot
from bus.subjects import Subjects
from schemas.codec import decode, encode
from schemas.config import VIEW_NAME_PATTERN
from schemas.wire import ViewSpec
from stores.errors import InvalidName, StoreError

_VIEW_NAME = re.compile(VIEW_NAME_PATTERN)
MAX_VIEW_TOOLS = 1000
"""Globs a view may hold: a view is a curated list, and every tools/list on it matches them."""


def check_view(name: str, tools: list[str]) -> None:
    """Refuse a view name that is not a path segment, or a tool list that is too long or has empty globs.

    Raises:
        InvalidName: it is not.
    """
    if not _VIEW_NAME.match(name):
        raise InvalidName(f"view name {name!r} must be 1-64 lowercase letters, digits, '_' or '-'")
    if len(tools) > MAX_VIEW_TOOLS:
        raise InvalidName(f"view {name!r} lists {len(tools)} tools, more than {MAX_VIEW_TOOLS}")
    for glob in tools:
        if not glob or len(glob) > 128:
            raise InvalidName(f"view {name!r}: {glob!r} is not a tool name or glob (1-128 characters)")


class ViewStore:
    """The views bucket of one deployment (see the module docstring for who does what)."""

    def __init__(self, kv: KeyValue) -> None:
        self.kv = kv

    @classmethod
    async def open(cls, nc: NatsClient, subjects: Subjects) -> ViewStore:
        """The bucket, which the registry created.

        Raises:
            StoreError: no registry has created it yet.
        """
        try:
            with nats_boundary:
                return cls(await nc.jetstream().key_value(subjects.views_bucket))
        except BucketNotFound:
            raise StoreError(f"no views bucket {subjects.views_bucket}: start a registry first") from None

    async def set(self, name: str, tools: list[str]) -> ViewSpec:
        """Create or replace view ``name``."""
        check_view(name, tools)
        spec = ViewSpec(tools=list(tools), updated_at=time.time())
        with nats_boundary:
            await self.kv.put(name, encode(spec))
        return spec

    async def delete(self, name: str) -> bool:
        """Remove a view set at run time; False when there was none."""
        check_view(name, [])
        try:
            with nats_boundary:
                await self.kv.get(name)
        except (KeyNotFound, KeyDeleted):
            return False
        with nats_boundary:
            await self.kv.delete(name)
        return True

    async def all(self) -> dict[str, ViewSpec]:
        """Every view set at run time, by name."""
        return {key: decode(value, ViewSpec) for key, value in await snapshot(self.kv, ">")}
