"""Long-running calls through the real mcp SDK client, in both eras: progress and logs relayed
from the worker's events subject, cancellation (client, disconnect, deadline) turned into a
cancel message for the worker, and every kind of content block passed through intact.

The worker is scripted: a NATS responder that publishes ``CallEvent``s to the subject in the
call's ``Toolbus-Events`` header before it replies (or never replies, for cancellation).
"""

from __future__ import annotations

import asyncio
import base64
import json
import warnings
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any

import httpx2 as httpx
import mcp_types as types
import pytest
from mcp import Client
from mcp.shared.exceptions import MCPDeprecationWarning, MCPError
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.js.kv import KeyValue

from bus.subjects import Header, Subjects
from gateway.errors import DEADLINE_EXCEEDED
from schemas.codec import encode
from schemas.wire import (
    AudioContent,
    CallEvent,
    CallToolResult,
    Content,
    EmbeddedResource,
    ImageContent,
    LogEvent,
    ProgressEvent,
    ResourceContents,
    TextContent,
    ToolDescriptor,
)
from tests.gateway.responders import RunningGateway, ScriptedWorker, put_tools, result_reply

StartGateway = Callable[..., Awaitable[RunningGateway]]
StartWorker = Callable[..., Awaitable[ScriptedWorker]]

SLOW = ToolDescriptor(name="slow", description="Takes its time, says how far it got.", input_schema={"type": "object"})
DONE = CallToolResult(content=[TextContent("done")])
CANCEL_WITHIN_S = 2.0
"""How soon a cancellation must reach the worker as a cancel message."""


@pytest.fixture(params=["legacy", "auto"])
def mode(request: pytest.FixtureRequest) -> str:
    """How the client negotiates: ``legacy`` (2025-11-25 handshake) or ``auto`` (2026-07-28)."""
    return str(request.param)


class Cancels:
    """Every message on ``PREFIX.cancel.*``, as the workers hear them."""

    def __init__(self, subjects: Subjects) -> None:
        self._subjects = subjects
        self.received: list[Msg] = []
        self._arrived = asyncio.Event()

    async def on_msg(self, msg: Msg) -> None:
        self.received.append(msg)
        self._arrived.set()

    def of(self, request_id: str) -> list[Msg]:
        return [m for m in self.received if m.subject == self._subjects.cancel(request_id)]

    async def wait_for(self, request_id: str, timeout_s: float = CANCEL_WITHIN_S) -> Msg:
        async with asyncio.timeout(timeout_s):
            while not self.of(request_id):
                self._arrived.clear()
                await self._arrived.wait()
        return self.of(request_id)[0]


@pytest.fixture
async def cancels(nc: NatsClient, subjects: Subjects) -> AsyncIterator[Cancels]:
    recorder = Cancels(subjects)
    sub = await nc.subscribe(subjects.cancel_any, cb=recorder.on_msg)
    await nc.flush()
    yield recorder
    await sub.unsubscribe()


def emitting(nc: NatsClient, events: Sequence[CallEvent], result: CallToolResult = DONE) -> Callable[..., Any]:
    """A worker's reply: publish ``events`` to the call's events subject (if any), then ``result``."""

    async def reply(msg: Msg) -> tuple[bytes, None]:
        subject = (msg.headers or {}).get(Header.EVENTS)
        if subject:
            for event in events:
                await nc.publish(subject, encode(event))
        return encode(result), None

    return reply


class Started:
    """A worker that never replies, and says when a call has reached it."""

    def __init__(self) -> None:
        self.event = asyncio.Event()
        self.msg: Msg | None = None

    async def __call__(self, msg: Msg) -> None:
        self.msg = msg
        self.event.set()

    async def request_id(self) -> str:
        async with asyncio.timeout(5):
            await self.event.wait()
        assert self.msg is not None and self.msg.headers is not None
        return self.msg.headers[Header.REQUEST_ID]


def hot_served(gateway: RunningGateway) -> int:
    return gateway.hot.served


async def ignore(_progress: float, _total: float | None, _message: str | None) -> None:
    return None


# -- progress -------------------------------------------------------------------------------------------------


async def test_progress_reaches_the_client_in_order_and_only_increasing(
    start_gateway: StartGateway, kv: KeyValue, worker: StartWorker, nc: NatsClient, subjects: Subjects, mode: str
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
    assert msg.headers[Header.EVENTS].startswith(f"{subjects.prefix}.call_events.")
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
    start_gateway: StartGateway, kv: KeyValue, worker: StartWorker, nc: NatsClient, subjects: Subjects, mode: str
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
    assert msg.headers[Header.EVENTS].startswith(f"{subjects.prefix}.call_events.")


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


# -- cancellation ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["hot", "sdk"])
async def test_a_client_cancel_reaches_the_worker(
    start_gateway: StartGateway,
    kv: KeyValue,
    worker: StartWorker,
    cancels: Cancels,
    mode: str,
    path: str,
) -> None:
    """2025: ``notifications/cancelled``; 2026-07-28: the client closes the call's response stream.

    ``hot``: a plain call (the lean hot path serves it); ``sdk``: a call with a progress token.
    """
    await put_tools(kv, SLOW)
    started = Started()
    await worker("slow", started)
    gateway = await start_gateway(call_timeout_s=30)
    async with Client(gateway.url, mode=mode) as client:
        await client.list_tools()  # the client lists before its first call: not what is counted here
        served = hot_served(gateway)
        progress = ignore if path == "sdk" else None
        call = asyncio.create_task(client.call_tool("slow", {}, progress_callback=progress))
        request_id = await started.request_id()
        assert hot_served(gateway) == served + (1 if path == "hot" else 0)
        assert not cancels.of(request_id)
        call.cancel()
        with pytest.raises(asyncio.CancelledError):
            await call
        cancel = await cancels.wait_for(request_id)
    assert cancel.data == b""
    assert len(cancels.of(request_id)) == 1
    assert gateway.hot.interrupted == (1 if path == "hot" else 0)


async def test_the_deadline_passing_cancels_the_call(
    start_gateway: StartGateway, kv: KeyValue, worker: StartWorker, cancels: Cancels, mode: str
) -> None:
    await put_tools(kv, SLOW)
    started = Started()
    await worker("slow", started)
    gateway = await start_gateway(call_timeout_s=0.3)
    async with Client(gateway.url, mode=mode) as client:
        with pytest.raises(MCPError) as caught:
            await client.call_tool("slow", {}, progress_callback=ignore)
    assert caught.value.code == DEADLINE_EXCEEDED
    await cancels.wait_for(await started.request_id(), timeout_s=0.5)


async def test_a_finished_call_is_not_cancelled(
    start_gateway: StartGateway, kv: KeyValue, worker: StartWorker, nc: NatsClient, cancels: Cancels, mode: str
) -> None:
    await put_tools(kv, SLOW)
    slow = await worker("slow", emitting(nc, [ProgressEvent(1)]))
    gateway = await start_gateway()
    async with Client(gateway.url, mode=mode) as client:
        await client.call_tool("slow", {})
        await client.call_tool("slow", {}, progress_callback=ignore)
    await nc.flush()
    assert len(slow.messages) == 2
    assert cancels.received == []


async def test_the_hot_path_answers_a_2025_cancelled_call_as_the_sdk_does(
    start_gateway: StartGateway, kv: KeyValue, worker: StartWorker, cancels: Cancels
) -> None:
    """The raw exchange: the call's POST gets ``-32800 Request cancelled``; the notification a 202."""
    await put_tools(kv, SLOW)
    started = Started()
    await worker("slow", started)
    gateway = await start_gateway(call_timeout_s=30)
    headers = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}
    async with httpx.AsyncClient(timeout=10) as http:
        client_info = {"name": "t", "version": "1"}
        params = {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": client_info}
        initialize = {"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": params}
        opened = await http.post(gateway.url, headers=headers, json=initialize)
        headers |= {"Mcp-Session-Id": opened.headers["mcp-session-id"], "MCP-Protocol-Version": "2025-11-25"}
        await http.post(gateway.url, headers=headers, json={"jsonrpc": "2.0", "method": "notifications/initialized"})
        body = {"jsonrpc": "2.0", "id": "c-1", "method": "tools/call", "params": {"name": "slow", "arguments": {}}}
        call = asyncio.create_task(http.post(gateway.url, headers=headers, json=body))
        request_id = await started.request_id()
        # Another session cannot cancel it.
        cancel = {"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": "c-1"}}
        stranger = await http.post(gateway.url, headers=headers | {"Mcp-Session-Id": "0" * 32}, json=cancel)
        assert stranger.status_code == 404
        assert not call.done()
        acknowledged = await http.post(gateway.url, headers=headers, json=cancel)
        assert acknowledged.status_code == 202
        answered = await call
        await cancels.wait_for(request_id)
    assert answered.status_code == 200
    assert answered.json() == {"jsonrpc": "2.0", "id": "c-1", "error": {"code": -32800, "message": "Request cancelled"}}
    assert gateway.hot.interrupted == 1


# -- content blocks -------------------------------------------------------------------------------------------


PNG = base64.b64encode(b"\x89PNG\r\n\x1a\nnot really").decode()
WAV = base64.b64encode(b"RIFF....WAVEfmt ").decode()
BLOCKS: list[Content] = [
    TextContent("here is everything"),
    ImageContent(PNG, "image/png"),
    AudioContent(WAV, "audio/wav"),
    EmbeddedResource(ResourceContents(uri="test://notes.txt", mime_type="text/plain", text="some notes")),
    EmbeddedResource(ResourceContents(uri="test://blob.bin", mime_type="application/octet-stream", blob=PNG)),
    EmbeddedResource(ResourceContents(uri="test://bare", text="no mime type")),
]


@pytest.mark.parametrize("path", ["hot", "sdk"])
async def test_every_content_block_reaches_the_client_intact(
    start_gateway: StartGateway, kv: KeyValue, worker: StartWorker, mode: str, path: str
) -> None:
    await put_tools(kv, SLOW)
    await worker("slow", result_reply(CallToolResult(content=BLOCKS)))
    gateway = await start_gateway()
    async with Client(gateway.url, mode=mode) as client:
        await client.list_tools()  # the client lists before its first call: not what is counted here
        served = hot_served(gateway)
        result = await client.call_tool("slow", {}, progress_callback=ignore if path == "sdk" else None)
        assert hot_served(gateway) == served + (1 if path == "hot" else 0)
    sent = json.loads(encode(BLOCKS))
    received = [block.model_dump(by_alias=True, mode="json", exclude_none=True) for block in result.content]
    assert received == sent
