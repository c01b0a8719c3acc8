"""Tool-list changes reach connected clients in both eras, coalesced, through the real mcp SDK client.

2025-11-25 clients hear ``notifications/tools/list_changed`` on their session's GET stream;
2026-07-28 clients on the ``subscriptions/listen`` stream they opened. The catalogue changes
by writing the tools KV bucket, as the registry does.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack

import pytest
from mcp import Client
from nats.js.kv import KeyValue

from gateway.catalogue_mirror import CatalogueMirror
from gateway.changes import ListChanges
from tests.conftest import eventually
from tests.gateway.listeners import HEAR_TIMEOUT_S, SETTLE_S, listening, tool
from tests.gateway.responders import ADD, STATS, RunningGateway, put_tools

StartGateway = Callable[..., Awaitable[RunningGateway]]


@pytest.mark.parametrize("mode", ["legacy", "auto"])
async def test_initialize_and_discover_advertise_tool_list_changes(
    start_gateway: StartGateway, kv: KeyValue, mode: str
) -> None:
    gateway = await start_gateway()
    async with Client(gateway.url, mode=mode) as client:
        tools = client.server_capabilities.tools
    assert tools is not None
    assert tools.list_changed is True


@pytest.mark.parametrize("hot_path", [True, False], ids=["hot-path", "sdk-only"])
async def test_both_eras_hear_a_tool_come_and_go(start_gateway: StartGateway, kv: KeyValue, hot_path: bool) -> None:
    await put_tools(kv, ADD)
    gateway = await start_gateway(hot_path=hot_path)
    async with listening(gateway.url, kv, "legacy") as legacy, listening(gateway.url, kv, "auto") as modern:
        listeners = (legacy, modern)
        for listener in listeners:
            assert await listener.names() == ["add"]
        before = [listener.inbox.heard for listener in listeners]

        await put_tools(kv, STATS)
        for listener, count in zip(listeners, before, strict=True):
            await listener.inbox.more_than(count)
            assert await listener.names() == ["add", "stats"], listener.mode

        before = [listener.inbox.heard for listener in listeners]
        await kv.delete("add")
        for listener, count in zip(listeners, before, strict=True):
            await listener.inbox.more_than(count)
            assert await listener.names() == ["stats"], listener.mode


async def test_a_burst_of_changes_is_one_or_two_notifications(start_gateway: StartGateway, kv: KeyValue) -> None:
    burst = 20
    gateway = await start_gateway()
    changes = gateway.state.changes
    async with listening(gateway.url, kv, "legacy") as legacy, listening(gateway.url, kv, "auto") as modern:
        listeners = (legacy, modern)
        before = [listener.inbox.heard for listener in listeners]
        rounds = changes.rounds
        await put_tools(kv, *(tool(f"t{i:02}") for i in range(burst)))
        for listener, count in zip(listeners, before, strict=True):
            await listener.inbox.more_than(count)
        await asyncio.sleep(SETTLE_S)  # anything still to come arrives
        for listener, count in zip(listeners, before, strict=True):
            assert 1 <= listener.inbox.heard - count <= 2, listener.mode
            assert len(await listener.names()) == burst
        assert 1 <= changes.rounds - rounds <= 2


async def test_an_ended_session_is_forgotten(start_gateway: StartGateway, kv: KeyValue) -> None:
    gateway = await start_gateway()
    changes = gateway.state.changes
    async with Client(gateway.url, mode="legacy"):
        await eventually(lambda: len(changes) == 1)
    # The client's DELETE ends the session; its exit stack forgets it.
    await eventually(lambda: len(changes) == 0)
    await put_tools(kv, ADD)  # nobody to tell: no error


class FakeSession:
    """A 2025-era session whose sends can be held up, like a client that stopped reading."""

    def __init__(self, *, stalled: bool = False) -> None:
        self.exit_stack = AsyncExitStack()
        self.sends = 0
        self.release = asyncio.Event()
        if not stalled:
            self.release.set()

    async def send_tool_list_changed(self) -> None:
        self.sends += 1
        await self.release.wait()


async def test_a_stalled_session_holds_up_nobody_and_gets_one_notice_for_what_it_missed() -> None:
    catalogue = CatalogueMirror()
    changes = ListChanges(catalogue, debounce_s=0.01, max_delay_s=0.05)
    stalled, quick = FakeSession(stalled=True), FakeSession()
    changes.add_session(stalled)
    changes.add_session(quick)
    changes.start()
    try:
        catalogue.put(tool("a"))
        await eventually(lambda: quick.sends == 1 and stalled.sends == 1)
        for round_ in range(2, 5):  # three more rounds while the stalled send is stuck
            catalogue.put(tool(f"b{round_}"))
            await eventually(lambda round_=round_: quick.sends == round_)
        assert stalled.sends == 1
        stalled.release.set()
        await eventually(lambda: stalled.sends == 2)  # the three missed rounds fold into one
        await asyncio.sleep(0.1)
        assert stalled.sends == 2
        assert changes.rounds == 4
        await stalled.exit_stack.aclose()  # the session ends
        assert len(changes) == 1
    finally:
        await changes.stop()


async def test_catalogue_listener_never_waits() -> None:
    catalogue = CatalogueMirror()
    changes = ListChanges(catalogue, debounce_s=0.01, max_delay_s=0.05)
    changes.start()
    try:
        for i in range(100):
            catalogue.put(tool(f"t{i}"))  # synchronous: returns without awaiting any client
        await eventually(lambda: changes.rounds == 1)
        await asyncio.sleep(0.1)
        assert changes.rounds == 1
    finally:
        await changes.stop()


async def test_shutdown_ends_open_listen_streams_at_once(start_gateway: StartGateway, kv: KeyValue) -> None:
    gateway = await start_gateway()
    async with Client(gateway.url, mode="auto") as client, client.listen(tools_list_changed=True) as subscription:
        started = asyncio.get_running_loop().time()
        gateway.server.should_exit = True
        async with asyncio.timeout(HEAR_TIMEOUT_S):
            events = [event async for event in subscription]  # a graceful close ends the iteration
        assert events == []
        # Not the GRACEFUL_SHUTDOWN_S uvicorn would otherwise wait before cancelling the stream.
        assert asyncio.get_running_loop().time() - started < 2
