"""Helpers for gateway tests: tool descriptors, a scripted worker (a real NATS responder), a gateway served by uvicorn.

The "worker" here is a plain nats-py responder in the workers' queue group that replies with
CallToolResult JSON (the real worker is another package); tool descriptors go into the KV
bucket exactly as the registry writes them. Task tests instead run against ``TaskSystem``:
the real registry and a real worker with its ``TaskRunner`` (the ``task_system`` fixture).
"""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import uvicorn
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.js.kv import KeyValue
from starlette.types import ASGIApp

from bus.connection import caught_up
from bus.subjects import Header, Subjects
from gateway.app import GatewayState, HttpServer, build_app, gateway_state, hot_path
from gateway.hotpath import HotPath
from registry.audit_stream import recent
from schemas.codec import encode
from schemas.config import Settings, load_settings
from schemas.errors import ErrorCode
from schemas.wire import CallToolResult, ErrorBody, ErrorReply, ToolDescriptor
from stores import TaskStore
from tests.conftest import eventually

START_TIMEOUT_S = 10.0

ADD = ToolDescriptor(
    name="add",
    description="Add two integers.",
    input_schema={
        "type": "object",
        "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}},
        "required": ["a", "b"],
        "additionalProperties": False,
    },
    output_schema={"type": "integer"},
)
STATS = ToolDescriptor(
    name="stats",
    description="Mean of some numbers.",
    input_schema={
        "type": "object",
        "properties": {"values": {"type": "array", "items": {"type": "number"}}},
        "required": ["values"],
    },
    output_schema={"type": "object", "properties": {"mean": {"type": "number"}}, "required": ["mean"]},
)


@dataclass
class RunningGateway:
    """A gateway listening on a random loopback port."""

    settings: Settings
    port: int
    server: uvicorn.Server
    app: ASGIApp

    @property
    def state(self) -> GatewayState:
        """The running gateway's NATS connection, catalogue and change notices."""
        return gateway_state(self.app)

    @property
    def hot(self) -> HotPath:
        """The running gateway's hot path (the test fails when it has none)."""
        hot = hot_path(self.app)
        assert hot is not None, "this gateway runs without the hot path"
        return hot

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return self.base_url + self.settings.gateway.path


@dataclass
class ScriptedWorker:
    """A NATS responder for one tool that records every request it gets."""

    reply: Callable[[Msg], Awaitable[tuple[bytes, dict[str, str] | None] | None]]
    messages: list[Msg] = field(default_factory=list)

    async def handle(self, nc: NatsClient, msg: Msg) -> None:
        self.messages.append(msg)
        answer = await self.reply(msg)
        if answer is None:
            return  # never replies: the caller must time out
        body, headers = answer
        await nc.publish(msg.reply, body, headers=headers)


def result_reply(result: CallToolResult) -> Callable[[Msg], Awaitable[tuple[bytes, None]]]:
    async def reply(_msg: Msg) -> tuple[bytes, None]:
        return encode(result), None

    return reply


def error_reply(code: ErrorCode, message: str) -> Callable[[Msg], Awaitable[tuple[bytes, dict[str, str]]]]:
    async def reply(_msg: Msg) -> tuple[bytes, dict[str, str]]:
        body = ErrorReply(ErrorBody(code=int(code), message=message, retryable=code.retryable))
        return encode(body), {Header.ERROR: str(int(code))}

    return reply


async def silent(_msg: Msg) -> None:
    return None


async def put_tools(kv: KeyValue, *descriptors: ToolDescriptor) -> None:
    for descriptor in descriptors:
        await kv.put(descriptor.name, encode(descriptor))


@asynccontextmanager
async def running_gateway(settings: Settings, *, freeze_heap: bool = False) -> AsyncIterator[RunningGateway]:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = int(sock.getsockname()[1])
    app = build_app(settings)
    server = HttpServer(app, settings, freeze_heap=freeze_heap)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        async with asyncio.timeout(START_TIMEOUT_S):
            while not server.started:
                if task.done():
                    task.result()
                    raise RuntimeError("gateway exited during start-up")
                await asyncio.sleep(0.02)
        yield RunningGateway(settings, port, server, app)
    finally:
        server.should_exit = True
        await task
        sock.close()


@dataclass
class TaskSystem:
    """A real registry and real workers (each with a ``TaskRunner``) serving the testkit component."""

    nats_url: str
    nc: NatsClient
    subjects: Subjects
    store: TaskStore
    start_gateway: Callable[..., Awaitable[RunningGateway]]

    def settings(self, **gateway: Any) -> Settings:
        """Settings for a gateway of this deployment (for ``running_gateway``)."""
        return load_settings(None, nats={"url": self.nats_url, "prefix": self.subjects.prefix}, gateway=gateway)

    async def gateway(self, **settings: Any) -> RunningGateway:
        """A gateway (stopped with the test) whose catalogue already lists the testkit's tools."""
        return await ready(await self.start_gateway(**settings))


async def ready(gateway: RunningGateway, tool: str = "kit_add", timeout_s: float = 10.0) -> RunningGateway:
    """``gateway`` once its catalogue has ``tool`` (workers announce it through the registry)."""
    catalogue = gateway.state.catalogue
    changed = asyncio.Event()
    unsubscribe = catalogue.subscribe(lambda _change: changed.set())
    try:
        async with asyncio.timeout(timeout_s):
            while True:
                changed.clear()
                if catalogue.get(tool) is not None:
                    return gateway
                await changed.wait()
    finally:
        unsubscribe()


@asynccontextmanager
async def spying(task_system: TaskSystem, tool: str) -> AsyncIterator[list[Msg]]:
    """Every call of ``tool`` published on the bus meanwhile (a plain subscription beside the
    workers' queue group sees each one, headers included)."""
    seen: list[Msg] = []

    async def spy(msg: Msg) -> None:
        seen.append(msg)

    subscription = await task_system.nc.subscribe(task_system.subjects.call(tool), cb=spy)
    # The server has the SUB before the test's first call (another connection) is published.
    await caught_up(task_system.nc)
    try:
        yield seen
    finally:
        await task_system.nc.flush()
        await subscription.unsubscribe()


AuditEvent = tuple[datetime, str, dict[str, Any]]
"""An event of the audit stream as ``registry.audit_stream.recent`` reads it: (time, subject, body)."""


async def audit_events(nc: NatsClient, subjects: Subjects, kind: str, count: int) -> list[AuditEvent]:
    """The first ``count`` events of ``PREFIX.audit.<kind>.>`` on the stream, once there are that many."""
    prefix = f"{subjects.prefix}.audit.{kind}."

    async def found() -> list[AuditEvent] | None:
        events = [e for e in await recent(nc, subjects, 200) if e[1].startswith(prefix)]
        return events if len(events) >= count else None

    return await eventually(found, timeout_s=10, what=f"fewer than {count} {kind} events on the audit stream")


async def refusals_told(nc: NatsClient, subjects: Subjects, reason: str, principal: str, count: int) -> None:
    """Wait until the audit stream tells ``count`` refusals of ``principal`` for ``reason``.

    Refusals alike are one event and then one with their count (``gateway.audit_trail.Refusals``): a
    first event stands for itself, a summary for the ``repeated`` alike ones after it. Fails when
    more than ``count`` are told.
    """

    async def told() -> int:
        return sum(
            body.get("repeated", 1)
            for _, subject, body in await recent(nc, subjects, 200)
            if subject == subjects.audit_auth(reason) and body.get("subject") == principal
        )

    async def all_told() -> bool:
        return await told() >= count

    await eventually(all_told, timeout_s=10, what=f"fewer than {count} {reason} refusals of {principal} told")
    assert await told() == count


def message_of(response: Any) -> dict[str, Any]:
    """The JSON-RPC message of an HTTP response, sent as JSON or as the last SSE event."""
    text = response.text
    if response.headers.get("content-type", "").startswith("text/event-stream"):
        text = [line[5:] for line in text.splitlines() if line.startswith("data:")][-1]
    message: dict[str, Any] = json.loads(text)
    return message
