"""The worker's bus side against a real nats-server and real wasmtime (the testkit WAT component)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from structlog.testing import capture_logs

from bus.connection import connect
from bus.embedded import EmbeddedNatsServer
from bus.payloads import Payloads
from bus.subjects import Header, Subjects
from schemas.codec import decode, decode_json
from schemas.config import ComponentSettings, LimitsSettings
from schemas.errors import ErrorCode
from schemas.wire import CallToolResult, ErrorBody, ErrorReply, WorkerAnnouncement
from tests.conftest import TESTKIT_WAT, deadline_in, text
from tests.workers.conftest import start_worker
from workers.sandbox.component import LoadedComponent
from workers.sandbox.engine import EngineHost
from workers.service import WorkerService


def error_of(reply: Msg) -> ErrorBody:
    assert reply.headers is not None, "an error reply carries the Toolbus-Error header"
    error = decode(reply.data, ErrorReply).error
    assert reply.headers[Header.ERROR] == str(error.code)
    return error


async def test_a_plain_json_request_without_headers_gets_the_call_tool_result(
    nc: NatsClient, subjects: Subjects, worker: WorkerService
) -> None:
    # Exactly what `nats req toolbus.call.kit_add '{"a":2,"b":3}'` sends: the body and nothing else.
    reply = await nc.request(subjects.call("kit_add"), b'{"a":2,"b":3}', timeout=5)
    assert not reply.headers
    assert decode_json(reply.data) == {
        "content": [{"type": "text", "text": "5"}],
        "structuredContent": 5,
        "isError": False,
    }


async def test_an_err_result_is_a_tool_error(nc: NatsClient, subjects: Subjects, worker: WorkerService) -> None:
    reply = await nc.request(subjects.call("kit_divide"), b'{"a":1,"b":0}', timeout=5)
    result = decode(reply.data, CallToolResult)
    assert result.is_error and text(result) == "division by zero"


async def test_invalid_arguments_are_a_tool_error_naming_the_field(
    nc: NatsClient, subjects: Subjects, worker: WorkerService
) -> None:
    reply = await nc.request(subjects.call("kit_add"), b'{"a":2,"b":"three"}', timeout=5)
    result = decode(reply.data, CallToolResult)
    assert result.is_error
    assert text(result).startswith("invalid arguments: b:")
    assert "integer" in text(result)


@pytest.mark.parametrize("body", [b'{"a":2,', b"not json", b"\xff\xfe"])
async def test_malformed_json_is_a_bad_request(
    nc: NatsClient, subjects: Subjects, worker: WorkerService, body: bytes
) -> None:
    reply = await nc.request(subjects.call("kit_add"), body, timeout=5)
    assert error_of(reply).code == ErrorCode.BAD_REQUEST


async def test_a_json_value_that_is_not_an_object_is_a_tool_error(
    nc: NatsClient, subjects: Subjects, worker: WorkerService
) -> None:
    reply = await nc.request(subjects.call("kit_add"), b"[2, 3]", timeout=5)
    result = decode(reply.data, CallToolResult)
    assert result.is_error and "must be a JSON object" in text(result)


async def test_a_trap_is_a_tool_error_and_other_calls_are_unaffected(
    nc: NatsClient, subjects: Subjects, worker: WorkerService
) -> None:
    calls = [nc.request(subjects.call("kit_danger_boom"), b"{}", timeout=5)]
    calls += [nc.request(subjects.call("kit_add"), f'{{"a":{i},"b":1}}'.encode(), timeout=5) for i in range(20)]
    boom, *adds = await asyncio.gather(*calls)
    trapped = decode(boom.data, CallToolResult)
    assert trapped.is_error and "unreachable" in text(trapped)
    assert [decode(r.data, CallToolResult).structured_content for r in adds] == [i + 1 for i in range(20)]


async def test_an_endless_loop_is_interrupted_at_the_deadline_while_other_calls_flow(
    nc: NatsClient, subjects: Subjects, worker: WorkerService
) -> None:
    spin = asyncio.create_task(
        nc.request(subjects.call("kit_danger_spin"), b"{}", timeout=10, headers=deadline_in(0.5))
    )
    for i in range(10):
        reply = await nc.request(subjects.call("kit_add"), f'{{"a":{i},"b":0}}'.encode(), timeout=5)
        assert decode(reply.data, CallToolResult).structured_content == i
    result = decode((await spin).data, CallToolResult)
    assert result.is_error and "timed out" in text(result)
    # The worker's thread is free again: a fresh call still runs.
    reply = await nc.request(subjects.call("kit_add"), b'{"a":1,"b":1}', timeout=5)
    assert decode(reply.data, CallToolResult).structured_content == 2


async def test_a_deadline_already_past_is_refused_without_running(
    nc: NatsClient, subjects: Subjects, worker: WorkerService
) -> None:
    reply = await nc.request(subjects.call("kit_add"), b'{"a":1,"b":1}', timeout=5, headers=deadline_in(-1))
    assert error_of(reply).code == ErrorCode.DEADLINE_EXCEEDED


async def test_over_capacity_the_worker_answers_overloaded_at_once(
    nc: NatsClient, subjects: Subjects, kit: LoadedComponent
) -> None:
    service = await start_worker(nc, subjects, kit, concurrency=1, queue_depth=0)
    try:
        busy = asyncio.create_task(
            nc.request(subjects.call("kit_danger_spin"), b"{}", timeout=10, headers=deadline_in(1))
        )
        await asyncio.sleep(0.2)  # let the spin take the only slot
        reply = await nc.request(subjects.call("kit_add"), b'{"a":1,"b":1}', timeout=5)
        error = error_of(reply)
        assert (error.code, error.retryable) == (ErrorCode.OVERLOADED, True)
        assert decode((await busy).data, CallToolResult).is_error
    finally:
        await service.stop(grace_s=1)


async def test_a_result_larger_than_a_message_comes_back_as_a_claim_check(
    nc: NatsClient, subjects: Subjects, worker: WorkerService
) -> None:
    # greet echoes its argument, and the result carries it twice (text + structuredContent):
    # a request that fits the bus makes a result that does not.
    name = "x" * int(nc.max_payload * 0.6)
    reply = await nc.request(subjects.call("kit_greet"), f'{{"name":"{name}"}}'.encode(), timeout=10)
    assert reply.data == b"" and reply.headers is not None and Header.PAYLOAD_DIGEST in reply.headers
    body, _ = await Payloads(nc, subjects).claim(reply.headers, reply.data)
    assert decode(body, CallToolResult).structured_content == name
    reply = await nc.request(subjects.call("kit_add"), b'{"a":1,"b":1}', timeout=5)
    assert decode(reply.data, CallToolResult).structured_content == 2


async def test_the_worker_announces_its_tools_and_its_stop(
    nc: NatsClient, subjects: Subjects, kit: LoadedComponent
) -> None:
    heard: list[WorkerAnnouncement] = []

    async def on_announce(msg: Msg) -> None:
        heard.append(decode(msg.data, WorkerAnnouncement))

    await nc.subscribe(subjects.announce, cb=on_announce)
    service = await start_worker(nc, subjects, kit, concurrency=1)
    await service.stop(grace_s=1)
    await nc.flush()
    await asyncio.sleep(0.1)
    assert [a.state for a in heard] == ["ready", "draining", "stopped"]
    assert {t.name for t in heard[0].tools} >= {"kit_add", "kit_divide", "kit_danger_spin"}
    assert all(a.worker_id == service.worker_id for a in heard)


async def test_a_stopped_worker_finishes_what_it_accepted(
    nc: NatsClient, subjects: Subjects, kit: LoadedComponent
) -> None:
    service = await start_worker(nc, subjects, kit, concurrency=1)
    pending = asyncio.create_task(
        nc.request(subjects.call("kit_danger_spin"), b"{}", timeout=10, headers=deadline_in(0.3))
    )
    await asyncio.sleep(0.1)
    await service.stop(grace_s=5)
    result = decode((await pending).data, CallToolResult)
    assert result.is_error and "timed out" in text(result)


async def test_a_tool_at_its_concurrency_limit_answers_overloaded(
    nc: NatsClient, subjects: Subjects, engine_host: EngineHost, cache_dir: Path
) -> None:
    settings = ComponentSettings(name="kit", path=TESTKIT_WAT, limits=LimitsSettings(max_concurrency=1))
    limited = LoadedComponent.load(engine_host, settings, TESTKIT_WAT, cache_dir)
    service = await start_worker(nc, subjects, limited, concurrency=2)
    try:
        busy = asyncio.create_task(
            nc.request(subjects.call("kit_danger_spin"), b"{}", timeout=10, headers=deadline_in(0.5))
        )
        await asyncio.sleep(0.1)  # the spin holds the tool's only slot; the worker has a thread free
        error = error_of(await nc.request(subjects.call("kit_danger_spin"), b"{}", timeout=5))
        assert (error.code, error.retryable) == (ErrorCode.OVERLOADED, True)
        assert "limit of 1 concurrent calls" in error.message
        # Other tools are not held back by it.
        reply = await nc.request(subjects.call("kit_add"), b'{"a":1,"b":1}', timeout=5)
        assert decode(reply.data, CallToolResult).structured_content == 2
        assert decode((await busy).data, CallToolResult).is_error
    finally:
        await service.stop(grace_s=1)


async def test_tool_listeners_are_told_of_each_change_of_the_tool_set(
    worker: WorkerService, kit: LoadedComponent
) -> None:
    # The task runner follows the tool set this way: told at once, never polling.
    told: list[frozenset[str]] = []
    worker.tool_listeners.append(told.append)
    first = kit.tools[0]
    await worker.set_source(kit.name, kit, [first])
    await worker.remove_source(kit.name)
    assert told == [frozenset({first.name}), frozenset()]


async def test_a_worker_whose_connection_closed_stops_announcing(
    nats_server: EmbeddedNatsServer, subjects: Subjects, kit: LoadedComponent
) -> None:
    """A closed nats-py client never reconnects: the periodic announcer says so once and ends,
    instead of a warning every interval for as long as the process lives (a worker left running
    after its connection closed filled other tests' logs with them, a flake)."""
    own = await connect(nats_server.url, name="closing-worker")
    service = await start_worker(own, subjects, kit, announce_interval_s=0.02)
    [announcer] = [task for task in service._background if "announce_periodically" in repr(task.get_coro())]
    with capture_logs() as logs:
        await own.close()
        await asyncio.wait_for(announcer, 2)
    assert [entry["event"] for entry in logs].count("announce failed") == 1
    await service.stop(grace_s=0.1)
