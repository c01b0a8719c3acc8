"""A call's link to its caller, against a real worker and nats-server: progress and log events
(toolbus:mcp), rich content, and cancellation that stops the guest."""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from pathlib import Path

import pytest
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg

from bus.subjects import Header, Subjects
from schemas.codec import decode
from schemas.config import ComponentSettings
from schemas.errors import ErrorCode
from schemas.wire import CallEvent, CallToolResult, ErrorReply, LogEvent, ProgressEvent
from tests.conftest import deadline_in
from tests.workers.conftest import start_worker
from tests.workers.sandbox.test_wasi_command import LOOP_WAT, load_wat
from workers.sandbox.call_context import CallContext
from workers.sandbox.component import LoadedComponent
from workers.sandbox.engine import EngineHost
from workers.service import WorkerService


@pytest.fixture(scope="module")
def conformance(engine_host: EngineHost, cache_dir: Path, conformance_wasm: Path) -> LoadedComponent:
    return LoadedComponent.load(
        engine_host, ComponentSettings(name="test", path=conformance_wasm), conformance_wasm, cache_dir
    )


@pytest.fixture
def served(kit: LoadedComponent, conformance: LoadedComponent) -> list[LoadedComponent]:
    """The ``worker`` fixture serves the conformance tools next to the testkit."""
    return [kit, conformance]


async def call_with_events(
    nc: NatsClient, subjects: Subjects, tool: str, log_level: str | None = None, events_subject: str | None = None
) -> tuple[CallToolResult, list[CallEvent]]:
    inbox = events_subject or subjects.call_events(uuid.uuid4().hex)
    events: list[CallEvent] = []
    sub = await nc.subscribe(inbox)
    headers = {Header.REQUEST_ID: uuid.uuid4().hex, Header.EVENTS: inbox}
    if log_level:
        headers[Header.LOG_LEVEL] = log_level
    reply = await nc.request(subjects.call(tool), b"{}", timeout=10, headers=headers)
    # Events are published before the reply, on the same connection: they are all here.
    while True:
        try:
            msg = await sub.next_msg(timeout=0.2)
        except TimeoutError:
            break
        events.append(decode(msg.data, CallEvent))  # type: ignore[arg-type]
    await sub.unsubscribe()
    return decode(reply.data, CallToolResult), events


@pytest.mark.parametrize("where", ["inbox", "announce"])
async def test_a_worker_publishes_events_only_to_a_call_events_subject(
    nc: NatsClient, subjects: Subjects, worker: WorkerService, where: str
) -> None:
    """A caller naming another subject (an inbox, or the registry's announcements) gets no events
    there: the worker would otherwise publish, with its own permissions, wherever a caller said."""
    subject = nc.new_inbox() if where == "inbox" else subjects.announce
    result, events = await call_with_events(nc, subjects, "test_tool_with_progress", events_subject=subject)
    assert not result.is_error and events == []


async def test_progress_reaches_the_events_subject_in_order(
    nc: NatsClient, subjects: Subjects, worker: WorkerService
) -> None:
    result, events = await call_with_events(nc, subjects, "test_tool_with_progress")
    assert not result.is_error
    assert events == [
        ProgressEvent(progress=0.0, total=100.0, message="Completed step 0 of 100"),
        ProgressEvent(progress=50.0, total=100.0, message="Completed step 50 of 100"),
        ProgressEvent(progress=100.0, total=100.0, message="Completed step 100 of 100"),
    ]


@pytest.mark.parametrize(("level", "expected"), [("debug", 3), ("info", 3), ("warning", 0), (None, 0)])
async def test_logs_are_sent_only_at_the_level_asked_for(
    nc: NatsClient, subjects: Subjects, worker: WorkerService, level: str | None, expected: int
) -> None:
    _, events = await call_with_events(nc, subjects, "test_tool_with_logging", log_level=level)
    logs = [e for e in events if isinstance(e, LogEvent)]
    assert len(logs) == expected
    assert all(log.level == "info" for log in logs)


async def test_rich_content_arrives_as_mcp_blocks(nc: NatsClient, subjects: Subjects, worker: WorkerService) -> None:
    result, _ = await call_with_events(nc, subjects, "test_multiple_content_types")
    assert [type(block).__name__ for block in result.content] == ["TextContent", "ImageContent", "EmbeddedResource"]
    resource = result.content[2].resource  # type: ignore[union-attr]
    assert (resource.uri, resource.mime_type, resource.text) == (
        "test://embedded-resource",
        "text/plain",
        "This is an embedded resource content.",
    )


async def cancelled_call(nc: NatsClient, subjects: Subjects, tool: str, request_id: str) -> asyncio.Task[Msg]:
    headers = {Header.REQUEST_ID: request_id, **deadline_in(30)}
    return asyncio.create_task(nc.request(subjects.call(tool), b"{}", timeout=30, headers=headers))


async def test_a_cancelled_call_stops_its_guest_within_a_tick_and_others_go_on(
    nc: NatsClient, subjects: Subjects, worker: WorkerService
) -> None:
    request_id = uuid.uuid4().hex
    spinning = await cancelled_call(nc, subjects, "kit_danger_spin", request_id)
    await asyncio.sleep(0.2)  # the guest is burning CPU now
    sent = time.monotonic()
    await nc.publish(subjects.cancel(request_id))
    reply = await spinning
    stopped_after_s = time.monotonic() - sent
    assert decode(reply.data, ErrorReply).error.code == ErrorCode.CANCELLED
    assert stopped_after_s < 1.0, stopped_after_s  # ~10 ms by design; the bound only catches a hang
    add = await nc.request(subjects.call("kit_add"), b'{"a":2,"b":3}', timeout=5)
    assert decode(add.data, CallToolResult).structured_content == 5


async def test_a_call_cancelled_while_queued_is_answered_cancelled(
    nc: NatsClient, subjects: Subjects, kit: LoadedComponent
) -> None:
    service = await start_worker(nc, subjects, kit, concurrency=1)
    try:
        occupier = await cancelled_call(nc, subjects, "kit_danger_spin", "occupier")
        await asyncio.sleep(0.1)
        queued = await cancelled_call(nc, subjects, "kit_danger_spin", "queued")
        await asyncio.sleep(0.1)
        await nc.publish(subjects.cancel("queued"))
        await nc.publish(subjects.cancel("occupier"))
        for task in (occupier, queued):
            assert decode((await task).data, ErrorReply).error.code == ErrorCode.CANCELLED
    finally:
        await service.stop(grace_s=1)


async def test_a_cancel_for_an_unknown_request_is_ignored(
    nc: NatsClient, subjects: Subjects, worker: WorkerService
) -> None:
    await nc.publish(subjects.cancel("nobody"))
    reply = await nc.request(subjects.call("kit_add"), b'{"a":1,"b":1}', timeout=5)
    assert decode(reply.data, CallToolResult).structured_content == 2


def test_a_command_module_is_cancelled_too(engine_host: EngineHost, cache_dir: Path, tmp_path: Path) -> None:
    looper = load_wat(engine_host, cache_dir, tmp_path, LOOP_WAT, name="looper")
    context = CallContext()
    threading.Timer(0.1, context.cancelled.set).start()
    started = time.monotonic()
    result = looper.call("looper", {}, 30, context)
    assert result.is_error and result.content[0].text == "cancelled"  # type: ignore[union-attr]
    assert time.monotonic() - started < 1.0
