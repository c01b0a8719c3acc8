"""Payloads of any size (issue 18, point 6): bodies larger than a NATS message travel through the
Object Store (``bus.payloads``) and arrive whole; over ``max_payload_bytes`` a call is an ``isError``
result naming it.

Real parts throughout: nats-server with JetStream, the registry, a worker serving the testkit
component (whose ``greet`` echoes a string, so arguments and result are both large), the
gateway, the mcp SDK's client in both eras, and plain nats-py requests as a CLI user makes them.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import mcp_types as types
import nats.js.errors
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg

from bus.connection import connect
from bus.payloads import Payloads, new_object_name
from bus.subjects import Header, Subjects
from gateway.errors import PAYLOAD_TOO_LARGE
from schemas.codec import decode, encode
from schemas.config import ComponentSettings, LimitsSettings, WorkerSettings, load_settings
from schemas.errors import ErrorCode
from schemas.wire import CallToolResult, ErrorReply, TaskRecord, TaskSubmit, TextContent
from tests.conftest import TEST_ANNOUNCE_INTERVAL_S, TESTKIT_WAT, task_reaches
from tests.gateway.mcp_tasks import TasksExtension, create_legacy, legacy_result
from tests.gateway.responders import TaskSystem, ready, running_gateway
from workers.sandbox.component import LoadedComponent
from workers.sandbox.engine import EngineHost
from workers.service import WorkerService

MIB = 1024 * 1024
BIG = "x" * (10 * MIB)
"""Ten times the NATS message limit (1 MiB): arguments of this size, and a result twice it."""
REQUEST_TIMEOUT_S = 30.0


def text_of(result: types.CallToolResult | CallToolResult) -> str:
    return " ".join(block.text for block in result.content if isinstance(block, (types.TextContent, TextContent)))


async def live_objects(nc: NatsClient, subjects: Subjects) -> list[str]:
    """Names of the objects in the payloads bucket that are not deleted."""
    store = await nc.jetstream().object_store(subjects.payloads_store)
    try:
        return [info.name for info in await store.list() if not info.deleted and info.name]
    except nats.js.errors.NotFoundError:  # nats-py's answer for a bucket with nothing in it
        return []


async def put_object(nc: NatsClient, subjects: Subjects, body: bytes, name: str | None = None) -> str:
    """What a plain NATS user does first: ``nats object put PREFIX_payloads FILE --name NAME``."""
    name = name or new_object_name()
    store = await nc.jetstream().object_store(subjects.payloads_store)
    await store.put(name, body)
    return name


async def claimed_body(nc: NatsClient, subjects: Subjects, reply: Msg) -> bytes:
    """What a plain NATS user does with a reply carrying a claim check: ``nats object get``."""
    assert reply.data == b"", "a claim check comes with an empty body"
    assert reply.headers is not None and Header.PAYLOAD in reply.headers
    store = await nc.jetstream().object_store(subjects.payloads_store)
    return bytes((await store.get(reply.headers[Header.PAYLOAD])).data or b"")


@pytest.mark.parametrize("hot_path", [True, False], ids=["hot-path", "sdk-path"])
async def test_ten_mib_arguments_and_result_round_trip_over_mcp_in_both_eras(
    task_system: TaskSystem, hot_path: bool
) -> None:
    gateway = await task_system.gateway(hot_path=hot_path)
    for mode in ("legacy", "auto"):
        # The SDK path answers on an SSE stream, and the SDK's client refuses SSE events over 1 MiB
        # unless told otherwise; the hot path answers plain JSON, which a default client takes whole.
        server = gateway.url if hot_path else streamable_http_client(gateway.url, max_sse_event_size=None)
        async with Client(server, mode=mode) as client:
            result = await client.call_tool("kit_greet", {"name": BIG})
        assert not result.is_error, text_of(result)[:200]
        assert text_of(result) == BIG, f"{mode}: {len(text_of(result))} characters came back"
    # Each side deleted what it consumed: the worker the arguments, the gateway the result.
    assert await live_objects(task_system.nc, task_system.subjects) == []


async def test_a_plain_nats_request_puts_its_arguments_first_and_reads_the_result_after(
    task_system: TaskSystem,
) -> None:
    nc, subjects = task_system.nc, task_system.subjects
    await task_system.gateway()  # the worker's tools are announced
    name = await put_object(nc, subjects, json.dumps({"name": BIG}).encode())
    reply = await nc.request(subjects.call("kit_greet"), b"", headers={Header.PAYLOAD: name}, timeout=REQUEST_TIMEOUT_S)
    result = decode(await claimed_body(nc, subjects, reply), CallToolResult)
    assert not result.is_error and text_of(result) == BIG
    assert name not in await live_objects(nc, subjects), "the worker deletes the arguments it consumed"
    # A small reply still travels inline, even for a call whose arguments were checked in.
    small = await put_object(nc, subjects, b'{"a": 2, "b": 3}')
    reply = await nc.request(subjects.call("kit_add"), b"", headers={Header.PAYLOAD: small}, timeout=REQUEST_TIMEOUT_S)
    assert reply.headers is None or Header.PAYLOAD not in reply.headers
    assert decode(reply.data, CallToolResult).structured_content == 5


@pytest.mark.parametrize(
    ("body", "name", "says"),
    [
        (b'{"name": "x"}', None, "must have an empty body"),  # both a body and a claim check
        (b"", "args.json", "unguessable"),  # a plain file name could be guessed (and replaced)
        (b"", "a" * 40, "does not exist"),  # never stored, expired or already claimed
    ],
    ids=["body-and-header", "guessable-name", "unknown-object"],
)
async def test_a_claim_check_that_cannot_be_honoured_is_refused_and_the_worker_survives(
    task_system: TaskSystem, body: bytes, name: str | None, says: str
) -> None:
    nc, subjects = task_system.nc, task_system.subjects
    await task_system.gateway()
    if name == "args.json":
        await nc.jetstream().object_store(subjects.payloads_store)  # the bucket exists; the name is the fault
    claim = name or await put_object(nc, subjects, b'{"name": "y"}')
    reply = await nc.request(subjects.call("kit_greet"), body, headers={Header.PAYLOAD: claim}, timeout=10)
    assert reply.headers is not None and reply.headers.get(Header.ERROR) == str(int(ErrorCode.BAD_REQUEST))
    assert says in decode(reply.data, ErrorReply).error.message
    after = await nc.request(subjects.call("kit_add"), b'{"a": 1, "b": 1}', timeout=10)
    assert decode(after.data, CallToolResult).structured_content == 2


@pytest.mark.parametrize(
    ("stored", "says"),
    [(b'{"name": "x"', "not valid JSON"), (b'["x"]', "invalid arguments"), (b"", "invalid arguments")],
    ids=["truncated-json", "not-an-object", "empty-object"],
)
async def test_odd_json_behind_a_claim_check_is_judged_like_a_body(
    task_system: TaskSystem, stored: bytes, says: str
) -> None:
    nc, subjects = task_system.nc, task_system.subjects
    await task_system.gateway()
    name = await put_object(nc, subjects, stored)
    reply = await nc.request(subjects.call("kit_greet"), b"", headers={Header.PAYLOAD: name}, timeout=10)
    if reply.headers and Header.ERROR in reply.headers:
        said = decode(reply.data, ErrorReply).error.message
    else:
        result = decode(reply.data, CallToolResult)
        assert result.is_error
        said = text_of(result)
    assert says in said, said


async def test_a_claim_check_with_a_digest_of_other_content_is_refused(task_system: TaskSystem) -> None:
    nc, subjects = task_system.nc, task_system.subjects
    await task_system.gateway()
    name = await put_object(nc, subjects, b'{"name": "real"}')
    forged = {Header.PAYLOAD: name, Header.PAYLOAD_DIGEST: "SHA-256=" + "A" * 43 + "="}
    reply = await nc.request(subjects.call("kit_greet"), b"", headers=forged, timeout=10)
    assert reply.headers is not None and reply.headers.get(Header.ERROR) == str(int(ErrorCode.BAD_REQUEST))
    assert "digest" in decode(reply.data, ErrorReply).error.message


@pytest.mark.parametrize("era", ["2025-11-25", "2026-07-28"])
async def test_a_task_with_ten_mib_arguments_returns_its_ten_mib_result_whole(
    task_system: TaskSystem, era: str
) -> None:
    gateway = await task_system.gateway()
    # tasks/result and tasks/get are served by the SDK, on SSE: the client must take events over 1 MiB.
    transport = streamable_http_client(gateway.url, max_sse_event_size=None)
    if era == "2025-11-25":
        async with Client(transport, mode="legacy") as client:
            task = await create_legacy(client, "kit_greet", {"name": BIG})
            result = await legacy_result(client, task.task_id)
    else:
        extension = TasksExtension()  # the call becomes a task, polled with tasks/get to its result
        async with Client(transport, mode="auto", extensions=[extension]) as client:
            result = await client.call_tool("kit_greet", {"name": BIG})
        assert extension.resolved, "the call ran as a task"
    assert not result.is_error and text_of(result) == BIG


async def test_plain_nats_tasks_take_and_give_claim_checks(task_system: TaskSystem) -> None:
    nc, subjects = task_system.nc, task_system.subjects
    await task_system.gateway()
    name = await put_object(nc, subjects, encode(TaskSubmit(tool="kit_greet", arguments={"name": BIG})))
    submitted = await nc.request(subjects.task_request("submit"), b"", headers={Header.PAYLOAD: name}, timeout=10)
    record = decode(submitted.data, TaskRecord)
    await task_reaches(task_system.store, record.task_id, "completed")
    reply = await nc.request(
        subjects.task_request("result"), json.dumps({"taskId": record.task_id}).encode(), timeout=REQUEST_TIMEOUT_S
    )
    assert text_of(decode(await claimed_body(nc, subjects, reply), CallToolResult)) == BIG


# -- the cap, and the guest's own memory limit --------------------------------------------------------


@pytest.fixture
async def tiny(task_system: TaskSystem, engine_host: EngineHost, cache_dir: Path) -> AsyncIterator[WorkerService]:
    """A worker with a 6 MiB cap serving the testkit as ``tiny`` with a 4 MiB memory limit."""
    component = LoadedComponent.load(
        engine_host,
        ComponentSettings(name="tiny", path=TESTKIT_WAT, limits=LimitsSettings(memory_mib=4)),
        TESTKIT_WAT,
        cache_dir,
    )
    worker_nc = await connect(task_system.nats_url, name="tiny-worker")
    service = WorkerService(
        worker_nc,
        task_system.subjects,
        WorkerSettings(concurrency=1, announce_interval_s=TEST_ANNOUNCE_INTERVAL_S),
        [component],
        payloads=Payloads(worker_nc, task_system.subjects, max_bytes=6 * MIB),
    )
    await service.start()
    yield service
    await service.stop(grace_s=0.5)
    await worker_nc.close()


async def test_arguments_over_the_cap_are_an_is_error_result_from_the_gateway(task_system: TaskSystem) -> None:
    settings = load_settings(
        None, nats={"url": task_system.nats_url, "prefix": task_system.subjects.prefix, "max_payload_bytes": 2 * MIB}
    )
    arguments = {"name": "x" * (3 * MIB)}
    async with running_gateway(settings) as gateway:
        await ready(gateway)
        async with Client(gateway.url, mode="auto") as client:
            result = await client.call_tool("kit_greet", arguments)
        # A 2026 client declaring tasks: the server runs it as a call, so the model still reads why.
        extension = TasksExtension()
        async with Client(gateway.url, mode="auto", extensions=[extension]) as client:
            as_task = await client.call_tool("kit_greet", arguments)
        assert not extension.resolved
        # A 2025 client asking for a task explicitly: no task can carry them, a JSON-RPC error says why.
        async with Client(gateway.url, mode="legacy") as client:
            with pytest.raises(MCPError) as refused:
                await create_legacy(client, "kit_greet", arguments)
    for answer in (result, as_task):
        assert answer.is_error
        said = text_of(answer)
        assert "max_payload_bytes" in said and str(2 * MIB) in said and str(len(encode(arguments))) in said, said
    assert refused.value.code == PAYLOAD_TOO_LARGE and "max_payload_bytes" in refused.value.message


async def test_a_result_over_the_workers_cap_is_an_is_error_result_naming_it(
    task_system: TaskSystem, tiny: WorkerService
) -> None:
    gateway = await ready(await task_system.gateway(), "tiny_greet")
    async with Client(gateway.url, mode="legacy") as client:
        # 3.5 MiB fits the guest's memory; the result holds it twice (text and structuredContent).
        result = await client.call_tool("tiny_greet", {"name": "x" * (7 * MIB // 2)})
    assert result.is_error
    said = text_of(result)
    assert "the result of tool 'tiny_greet'" in said and "max_payload_bytes" in said and str(6 * MIB) in said, said


async def test_arguments_over_the_guests_memory_limit_are_an_is_error_naming_it(
    task_system: TaskSystem, tiny: WorkerService
) -> None:
    gateway = await ready(await task_system.gateway(), "tiny_greet")
    async with Client(gateway.url, mode="auto") as client:
        result = await client.call_tool("tiny_greet", {"name": "x" * (5 * MIB)})
        after = await client.call_tool("tiny_add", {"a": 2, "b": 2})
    assert result.is_error and "memory limit of 4 MiB" in text_of(result), text_of(result)
    assert text_of(after) == "4", "the worker survives"


async def test_a_plain_nats_object_over_the_workers_cap_is_refused_unread(
    task_system: TaskSystem, tiny: WorkerService
) -> None:
    nc, subjects = task_system.nc, task_system.subjects
    name = await put_object(nc, subjects, json.dumps({"name": "x" * (7 * MIB)}).encode())
    reply = await nc.request(subjects.call("tiny_greet"), b"", headers={Header.PAYLOAD: name}, timeout=10)
    result = decode(reply.data, CallToolResult)
    assert result.is_error and "max_payload_bytes" in text_of(result) and str(6 * MIB) in text_of(result)


# -- attacks kept as tests (lane F) ----------------------------------------------------------------


async def test_arguments_a_worker_refuses_unread_are_not_left_in_the_bucket(
    task_system: TaskSystem, tiny: WorkerService
) -> None:
    # A client repeating calls whose arguments the worker will not read (over its own cap, or the
    # worker busy reading others) must not fill the bucket for the TTL: the gateway checked them
    # in, and once it stops waiting for the call nobody may still need them.
    gateway = await ready(await task_system.gateway(), "tiny_greet")
    async with Client(gateway.url, mode="legacy") as client:
        result = await client.call_tool("tiny_greet", {"name": "x" * (7 * MIB)})
    assert result.is_error and str(6 * MIB) in text_of(result), text_of(result)
    assert await live_objects(task_system.nc, task_system.subjects) == []


async def test_a_claim_check_replayed_after_its_call_is_refused_as_gone(task_system: TaskSystem) -> None:
    # Whoever saw a call's headers (a log, a tap on a subject) cannot run it again: the object was
    # consumed by the first call, and the same name cannot be read twice.
    nc, subjects = task_system.nc, task_system.subjects
    await task_system.gateway()
    headers = {Header.PAYLOAD: await put_object(nc, subjects, b'{"a": 20, "b": 22}')}
    first = await nc.request(subjects.call("kit_add"), b"", headers=headers, timeout=10)
    assert decode(first.data, CallToolResult).structured_content == 42
    again = await nc.request(subjects.call("kit_add"), b"", headers=headers, timeout=10)
    assert again.headers is not None and again.headers.get(Header.ERROR) == str(int(ErrorCode.BAD_REQUEST))
    assert "does not exist" in decode(again.data, ErrorReply).error.message
