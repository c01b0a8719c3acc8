"""Long-running calls through the real mcp SDK client, in both eras: progress and logs relayed
from the worker's events subject.

The worker is scripted: a NATS responder that publishes ``CallEvent``s to the subject in the
call's ``Toolbus-Events`` header before it replies.
"""

from __future__ import annotations

import asyncio
import warnings
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import mcp_types as types
import pytest
from mcp import Client
from mcp.shared.exceptions import MCPDeprecationWarning
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.js.kv import KeyValue

from bus.subjects import Header
from gateway.hotpath import HotPath
from schemas.codec import encode
from schemas.wire import (
    CallEvent,
    CallToolResult,
    LogEvent,
    ProgressEvent,
    TextContent,
    ToolDescriptor,
)
from tests.gateway.responders import RunningGateway, ScriptedWorker, put_tools

StartGateway = Callable[..., Awaitable[RunningGateway]]
StartWorker = Callable[..., Awaitable[ScriptedWorker]]

SLOW = ToolDescriptor(name="slow", description="Takes its time, says how far it got.", input_schema={"type": "object"})
DONE = CallToolResult(content=[TextContent("done")])


@pytest.fixture(params=["legacy", "auto"])
def mode(request: pytest.FixtureRequest) -> str:
    """How the client negotiates: ``legacy`` (2025-11-25 handshake) or ``auto`` (2026-07-28)."""
    return str(request.param)


def emitting(nc: NatsClient, events: Sequence[CallEvent], result: CallToolResult = DONE) -> Callable[..., Any]:
    """A worker's reply: publish ``events`` to the call's events subject (if any), then ``result``."""

    async def reply(msg: Msg) -> tuple[bytes, None]:
        subject = (msg.headers or {}).get(Header.EVENTS)
        if subject:
            for event in events:
                await nc.publish(subject, encode(event))
        return encode(result), None

    return reply


def hot_served(gateway: RunningGateway) -> int:
    assert isinstance(gateway.app, HotPath)
    return gateway.app.served


# -- progress -------------------------------------------------------------------------------------------------


async def test_progress_reaches_the_client_in_order_and_only_increasing(
    start_gateway: StartGateway, kv: KeyValue, worker: StartWorker, nc: NatsClient, mode: str
) -> None:
    await put_tools(kv, SLOW)
    events = [
        ProgressEvent(1, total=3, message="one"),
        ProgressEvent(2, total=3),
        ProgressEvent(2, total=3, message="two again"),
        ProgressEvent(1.5),
        ProgressEvent(3, total=3, message="three"),
    ]
    slow = await worker("slow", emitting(nc, events))
    gateway = await start_gateway()
    seen: list[tuple[float, float | None, str | None]] = []

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        seen.append((progress, total, message))

    async with Client(gateway.url, mode=mode) as client:
        result = await client.call_tool("slow", {}, progress_callback=on_progress)
    assert [c.text for c in result.content if c.type == "text"] == ["done"]
    assert seen == [(1, 3, "one"), (2, 3, None), (3, 3, "three")]
    (msg,) = slow.messages
    assert msg.headers is not None
    assert msg.headers[Header.EVENTS].startswith("_INBOX.")
    assert Header.LOG_LEVEL not in msg.headers  # progress only: no logs asked for


async def test_a_call_without_a_token_or_level_is_plain_and_hears_nothing(
    start_gateway: StartGateway, kv: KeyValue, worker: StartWorker, nc: NatsClient, mode: str
) -> None:
    await put_tools(kv, SLOW)
    slow = await worker("slow", emitting(nc, [ProgressEvent(1), LogEvent("error", "boom")]))
    gateway = await start_gateway()
    notifications: list[Any] = []

    async def on_message(message: Any) -> None:
        notifications.append(message)

    async with Client(gateway.url, mode=mode, message_handler=on_message) as client:
        await client.list_tools()  # the client lists before its first call: not what is counted here
        served = hot_served(gateway)
        result = await client.call_tool("slow", {})
        assert hot_served(gateway) == served + 1  # the lean hot path, as before
    assert not result.is_error
    heard = types.ProgressNotification | types.LoggingMessageNotification
    assert not [n for n in notifications if isinstance(n, heard)]
    (msg,) = slow.messages
    assert msg.headers is not None
    assert Header.EVENTS not in msg.headers
    assert Header.LOG_LEVEL not in msg.headers


async def test_progress_goes_only_to_the_call_that_asked(
    start_gateway: StartGateway, kv: KeyValue, worker: StartWorker, nc: NatsClient, mode: str
) -> None:
    await put_tools(kv, SLOW)
    await worker("slow", emitting(nc, [ProgressEvent(1), ProgressEvent(2)]))
    gateway = await start_gateway()
    seen: dict[int, list[float]] = {0: [], 1: [], 2: []}

    def collector(index: int) -> Callable[..., Awaitable[None]]:
        async def on_progress(progress: float, _total: float | None, _message: str | None) -> None:
            seen[index].append(progress)

        return on_progress

    async with Client(gateway.url, mode=mode) as client:
        await asyncio.gather(*(client.call_tool("slow", {}, progress_callback=collector(i)) for i in range(3)))
    assert seen == {0: [1, 2], 1: [1, 2], 2: [1, 2]}


# -- logs -----------------------------------------------------------------------------------------------------


LOGS = [
    LogEvent("debug", "noise"),
    LogEvent("info", {"step": 1}, logger="guest"),
    LogEvent("warning", "careful", logger="guest"),
    LogEvent("loud", "not a level"),
    LogEvent("error", {"step": 2, "failed": True}),
    LogEvent("emergency", "all is lost"),
]


async def test_logs_reach_the_client_at_the_level_it_asked_for(
    start_gateway: StartGateway, kv: KeyValue, worker: StartWorker, nc: NatsClient, mode: str
) -> None:
    await put_tools(kv, SLOW)
    slow = await worker("slow", emitting(nc, LOGS))
    gateway = await start_gateway()
    logs: list[types.LoggingMessageNotificationParams] = []

    async def on_log(params: types.LoggingMessageNotificationParams) -> None:
        logs.append(params)

    # 2025: logging/setLevel for the session; 2026-07-28: the level rides every request's _meta.
    async with Client(gateway.url, mode=mode, logging_callback=on_log, log_level="warning") as client:
        if mode == "legacy":
            assert client.server_capabilities.logging is not None
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", MCPDeprecationWarning)
                await client.set_logging_level("warning")
        result = await client.call_tool("slow", {})
    assert not result.is_error
    assert [(p.level, p.data, p.logger) for p in logs] == [
        ("warning", "careful", "guest"),
        ("error", {"step": 2, "failed": True}, None),
        ("emergency", "all is lost", None),
    ]
    (msg,) = slow.messages
    assert msg.headers is not None
    assert msg.headers[Header.LOG_LEVEL] == "warning"
    assert msg.headers[Header.EVENTS].startswith("_INBOX.")


async def test_a_2025_session_without_a_level_gets_no_logs(
    start_gateway: StartGateway, kv: KeyValue, worker: StartWorker, nc: NatsClient
) -> None:
    await put_tools(kv, SLOW)
    slow = await worker("slow", emitting(nc, LOGS))
    gateway = await start_gateway()
    logs: list[types.LoggingMessageNotificationParams] = []

    async def on_log(params: types.LoggingMessageNotificationParams) -> None:
        logs.append(params)

    async with Client(gateway.url, mode="legacy", logging_callback=on_log) as client:
        await client.call_tool("slow", {})
    assert logs == []
    (msg,) = slow.messages
    assert msg.headers is not None and Header.EVENTS not in msg.headers


async def test_progress_and_logs_together(
    start_gateway: StartGateway, kv: KeyValue, worker: StartWorker, nc: NatsClient, mode: str
) -> None:
    await put_tools(kv, SLOW)
    events: list[CallEvent] = [ProgressEvent(1), LogEvent("info", "halfway"), ProgressEvent(2), LogEvent("debug", "x")]
    await worker("slow", emitting(nc, events))
    gateway = await start_gateway()
    heard: list[Any] = []

    async def on_log(params: types.LoggingMessageNotificationParams) -> None:
        heard.append(params.data)

    async def on_progress(progress: float, _total: float | None, _message: str | None) -> None:
        heard.append(progress)

    async with Client(gateway.url, mode=mode, logging_callback=on_log, log_level="info") as client:
        if mode == "legacy":
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", MCPDeprecationWarning)
                await client.set_logging_level("info")
        await client.call_tool("slow", {}, progress_callback=on_progress)
    assert heard == [1, "halfway", 2]
