"""The registry against a real nats-server: announcements, list/get, and answering calls nobody can."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import nats.errors
import pytest
from nats.aio.client import Client as NatsClient

from bus.connection import connect
from bus.embedded import EmbeddedNatsServer
from bus.provisioning import ensure_bucket
from bus.subjects import Header, Subjects
from registry.service import PROBE_INTERVAL_S, RegistryService
from schemas.codec import decode, encode
from schemas.config import RegistrySettings, WorkerSettings
from schemas.errors import ErrorCode
from schemas.wire import (
    CallToolResult,
    ErrorReply,
    ToolDescriptor,
    ToolGetRequest,
    ToolList,
    ToolListRequest,
    WorkerAnnouncement,
)
from tests.conftest import eventually
from workers.sandbox.component import LoadedComponent
from workers.service import WorkerService

ADD = ToolDescriptor(name="calc_add", input_schema={"type": "object"}, component="calc", export="add")
ANNOUNCE_INTERVAL_S = 0.2


@pytest.fixture
async def registry(nc: NatsClient, subjects: Subjects) -> AsyncIterator[RegistryService]:
    service = RegistryService(nc, subjects, RegistrySettings(), announce_interval_s=ANNOUNCE_INTERVAL_S)
    await service.start()
    yield service
    await service.stop()


async def announce(nc: NatsClient, subjects: Subjects, *tools: ToolDescriptor, state: str = "ready") -> None:
    await nc.publish(subjects.announce, encode(WorkerAnnouncement(worker_id="w1", tools=list(tools), state=state)))  # type: ignore[arg-type]
    await nc.flush()


async def test_announced_tools_land_in_kv_and_in_list(
    nc: NatsClient, subjects: Subjects, registry: RegistryService
) -> None:
    await announce(nc, subjects, ADD)
    kv = await ensure_bucket(nc, subjects.tools_bucket)
    await eventually(lambda: registry.catalogue is not None and "calc_add" in registry.catalogue.tools)
    assert decode((await kv.get("calc_add")).value or b"", ToolDescriptor) == ADD

    reply = await nc.request(subjects.registry_list, encode(ToolListRequest()), timeout=2)
    assert [t.name for t in decode(reply.data, ToolList).tools] == ["calc_add"]
    reply = await nc.request(subjects.registry_get, encode(ToolGetRequest(name="calc_add")), timeout=2)
    assert decode(reply.data, ToolDescriptor) == ADD


async def test_list_pages_with_a_cursor(nc: NatsClient, subjects: Subjects, registry: RegistryService) -> None:
    tools = [ToolDescriptor(name=f"t{i:02}", input_schema={"type": "object"}) for i in range(5)]
    await announce(nc, subjects, *tools)
    await eventually(lambda: registry.catalogue is not None and len(registry.catalogue.tools) == 5)
    names, cursor = [], None
    while True:
        reply = await nc.request(subjects.registry_list, encode(ToolListRequest(cursor=cursor, limit=2)), timeout=2)
        page = decode(reply.data, ToolList)
        names += [t.name for t in page.tools]
        if not page.next_cursor:
            break
        cursor = page.next_cursor
    assert names == [t.name for t in tools]


async def test_get_of_an_unknown_tool_is_a_typed_error(
    nc: NatsClient, subjects: Subjects, registry: RegistryService
) -> None:
    reply = await nc.request(subjects.registry_get, encode(ToolGetRequest(name="nope")), timeout=2)
    assert reply.headers and reply.headers[Header.ERROR] == str(int(ErrorCode.UNKNOWN_TOOL))
    assert "nope" in decode(reply.data, ErrorReply).error.message


async def test_a_call_to_an_unknown_tool_gets_no_responders_at_once(
    nc: NatsClient, subjects: Subjects, registry: RegistryService
) -> None:
    # The registry stays off call subjects of tools it does not know: NATS answers.
    with pytest.raises(nats.errors.NoRespondersError):
        await nc.request(subjects.call("no_such_tool"), b'{"a": 1}', timeout=5)


async def test_the_registry_hears_no_call_to_a_tool_a_live_worker_serves(
    nats_server: EmbeddedNatsServer, nc: NatsClient, subjects: Subjects, kit: LoadedComponent
) -> None:
    registry_nc = await connect(nats_server.url, name="registry")
    registry = RegistryService(registry_nc, subjects, RegistrySettings(), announce_interval_s=ANNOUNCE_INTERVAL_S)
    await registry.start()
    worker = WorkerService(nc, subjects, WorkerSettings(concurrency=1), [kit])
    await worker.start()
    try:
        await eventually(lambda: registry.catalogue is not None and registry.catalogue.live_workers("kit_add"))
        await asyncio.sleep(PROBE_INTERVAL_S * 2)  # a probe round has settled its subscriptions
        before = registry_nc.stats["in_msgs"]
        for _ in range(20):
            reply = await nc.request(subjects.call("kit_add"), b'{"a":1,"b":2}', timeout=5)
            assert decode(reply.data, CallToolResult).structured_content == 3
        # Announcements and probe replies still arrive, but not one message per call.
        assert registry_nc.stats["in_msgs"] - before < 20
    finally:
        await worker.stop(grace_s=1)
        await registry.stop()
        await registry_nc.close()


async def test_a_known_tool_whose_worker_stopped_gets_no_worker(
    nc: NatsClient, subjects: Subjects, registry: RegistryService
) -> None:
    await announce(nc, subjects, ADD)
    await eventually(lambda: registry.catalogue is not None and registry.catalogue.live_workers("calc_add"))
    await announce(nc, subjects, ADD, state="stopped")
    await eventually(lambda: "calc_add" in registry.standing_in)
    reply = await nc.request(subjects.call("calc_add"), b"{}", timeout=2)
    error = decode(reply.data, ErrorReply).error
    assert (error.code, error.retryable) == (ErrorCode.NO_WORKER, True)


async def test_a_silent_worker_drops_out_after_the_liveness_window(
    nc: NatsClient, subjects: Subjects, registry: RegistryService
) -> None:
    await announce(nc, subjects, ADD)
    await eventually(lambda: registry.catalogue is not None and registry.catalogue.live_workers("calc_add"))
    # No more announcements: after 3 missed intervals the worker no longer counts.
    await eventually(lambda: registry.catalogue is not None and not registry.catalogue.live_workers("calc_add"))


async def test_a_restarted_registry_serves_the_catalogue_from_kv(nc: NatsClient, subjects: Subjects) -> None:
    first = RegistryService(nc, subjects, RegistrySettings())
    await first.start()
    await announce(nc, subjects, ADD)
    await eventually(lambda: first.catalogue is not None and "calc_add" in first.catalogue.tools)
    await first.stop()
    second = RegistryService(nc, subjects, RegistrySettings())
    await second.start()
    try:
        assert second.catalogue is not None and set(second.catalogue.tools) == {"calc_add"}
    finally:
        await second.stop()


async def test_calls_to_a_worker_whose_connection_died_are_answered_at_once(
    nats_server: EmbeddedNatsServer, nc: NatsClient, subjects: Subjects, registry: RegistryService, kit: LoadedComponent
) -> None:
    worker_nc = await connect(nats_server.url, name="doomed-worker")
    worker = WorkerService(worker_nc, subjects, WorkerSettings(concurrency=1), [kit])
    await worker.start()
    try:
        await eventually(lambda: registry.catalogue is not None and registry.catalogue.live_workers("kit_add"))
        reply = await nc.request(subjects.call("kit_add"), b'{"a":1,"b":2}', timeout=5)
        assert decode(reply.data, CallToolResult).structured_content == 3

        # The worker's connection vanishes without a goodbye (as with kill -9): no "stopped" announcement.
        await worker_nc.close()
        # Its probe finds the worker gone once the server has dropped its subscriptions; from then
        # on a call is answered at once: by NATS (nobody subscribed) until the registry stands in.
        await eventually(lambda: registry.catalogue is not None and not registry.catalogue.live_workers("kit_add"))
        await no_worker_answer(nc, subjects.call("kit_add"))
        await eventually(lambda: "kit_add" in registry.standing_in)
        error = decode((await nc.request(subjects.call("kit_add"), b"{}", timeout=5)).data, ErrorReply).error
        assert (error.code, error.retryable) == (ErrorCode.NO_WORKER, True)
    finally:
        # Its tasks (the periodic announcer among them) would outlive the test in the session's
        # event loop and write into later tests' captured logs.
        await worker.stop(grace_s=0.1)


async def no_worker_answer(nc: NatsClient, subject: str) -> None:
    """A call nobody serves is answered well before its deadline: no responders, or NO_WORKER."""
    try:
        reply = await nc.request(subject, b'{"a":1,"b":2}', timeout=5)
    except nats.errors.NoRespondersError:
        return
    error = decode(reply.data, ErrorReply).error
    assert (error.code, error.retryable) == (ErrorCode.NO_WORKER, True)


async def test_a_call_sent_between_a_worker_dying_and_its_replacement_starting_is_answered(
    nats_server: EmbeddedNatsServer, nc: NatsClient, subjects: Subjects, registry: RegistryService, kit: LoadedComponent
) -> None:
    # The supervisor restarts a killed worker within a second. A call sent in between reached
    # nobody and must still get an answer rather than wait for its deadline.
    first_nc = await connect(nats_server.url, name="first-worker")
    first = WorkerService(
        first_nc, subjects, WorkerSettings(concurrency=1, announce_interval_s=ANNOUNCE_INTERVAL_S), [kit]
    )
    await first.start()
    await eventually(lambda: registry.catalogue is not None and registry.catalogue.live_workers("kit_add"))
    await first_nc.close()  # dies without a goodbye
    await eventually(lambda: registry.catalogue is not None and not registry.catalogue.live_workers("kit_add"))
    await no_worker_answer(nc, subjects.call("kit_add"))
    second_nc = await connect(nats_server.url, name="second-worker")
    second = WorkerService(
        second_nc, subjects, WorkerSettings(concurrency=1, announce_interval_s=ANNOUNCE_INTERVAL_S), [kit]
    )
    try:
        await second.start()
        # Once the registry knows the replacement, calls reach it, and only it.
        await eventually(lambda: registry.catalogue is not None and registry.catalogue.live_workers("kit_add"))
        await eventually(lambda: "kit_add" not in registry.standing_in)
        reply = await nc.request(subjects.call("kit_add"), b'{"a":1,"b":2}', timeout=5)
        assert decode(reply.data, CallToolResult).structured_content == 3
    finally:
        await second.stop(grace_s=1)
        await second_nc.close()


@pytest.mark.parametrize("char", ["a", "\x7f"], ids=["plain", "escaped-by-repr"])
async def test_an_error_naming_a_huge_input_still_answers(
    nc: NatsClient, subjects: Subjects, registry: RegistryService, char: str
) -> None:
    """An error message quotes what the caller sent; at the bus's maximum size (and grown fourfold by
    ``repr``) the reply would pass the maximum too, nats-py would refuse it, and the caller would
    wait out its timeout instead of hearing the error."""
    name = char * (nc.max_payload - 64)
    reply = await nc.request(subjects.registry_get, encode(ToolGetRequest(name=name)), timeout=2)
    assert reply.headers and reply.headers[Header.ERROR] == str(int(ErrorCode.UNKNOWN_TOOL))
    message = decode(reply.data, ErrorReply).error.message
    assert message.startswith("unknown tool '") and "characters cut" in message
    assert len(reply.data) < 4096
