"""Clients that count the ``notifications/tools/list_changed`` they hear, for the list-change tests."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field

import mcp_types as types
from mcp import Client
from mcp.client.session import IncomingMessage
from nats.js.kv import KeyValue

from schemas.wire import ToolDescriptor
from tests.gateway.responders import put_tools

HEAR_TIMEOUT_S = 5.0
SETTLE_S = 0.8
"""Longer than a coalesced round can take (MAX_DELAY_S) plus delivery."""


def tool(name: str, description: str = "") -> ToolDescriptor:
    return ToolDescriptor(name=name, description=description or f"tool {name}", input_schema={"type": "object"})


@dataclass
class Inbox:
    """Counts the ``notifications/tools/list_changed`` a client receives."""

    heard: int = 0
    _changed: asyncio.Event = field(default_factory=asyncio.Event)

    async def handle(self, message: IncomingMessage) -> None:
        if isinstance(message, types.ToolListChangedNotification):
            self.heard += 1
            self._changed.set()

    async def more_than(self, count: int, timeout_s: float = HEAR_TIMEOUT_S) -> None:
        """Wait until more than ``count`` notifications have arrived."""
        async with asyncio.timeout(timeout_s):
            while self.heard <= count:
                self._changed.clear()
                await self._changed.wait()


@dataclass
class Listener:
    mode: str
    client: Client
    inbox: Inbox

    async def names(self) -> list[str]:
        return [t.name for t in (await self.client.list_tools()).tools]


@asynccontextmanager
async def listening(url: str, kv: KeyValue, mode: str) -> AsyncIterator[Listener]:
    """A client connected to the MCP endpoint ``url`` that is sure to hear the next change.

    A 2026 client listens once ``listen()`` is acknowledged. A 2025 client opens its GET stream
    on its own after ``initialize``, and a notice sent before that is lost, so it changes a probe
    tool until one is heard, removes it, and lets that settle.
    """
    inbox = Inbox()
    async with AsyncExitStack() as stack:
        client = await stack.enter_async_context(Client(url, mode=mode, message_handler=inbox.handle))
        if mode == "auto":
            await stack.enter_async_context(client.listen(tools_list_changed=True))
        else:
            for attempt in itertools.count():
                await put_tools(kv, tool("probe", f"probe {attempt}"))
                try:
                    await inbox.more_than(0, timeout_s=0.3)
                    break
                except TimeoutError:
                    assert attempt < 30, "the legacy client never heard a change"
            await kv.delete("probe")
            await asyncio.sleep(SETTLE_S)
        yield Listener(mode, client, inbox)
