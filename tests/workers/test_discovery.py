"""NATS micro discovery: raw ``$SRV.*`` requests against workers on a real nats-server."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import nats.errors
import pytest
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.micro.service import ServiceInfo, ServiceStats

from bus.connection import connect
from bus.embedded import EmbeddedNatsServer
from bus.subjects import Subjects, micro_control
from schemas.codec import decode
from schemas.config import WorkerSettings
from schemas.micro import MicroInfo, MicroPing, MicroStats
from schemas.wire import CallToolResult
from tests.conftest import deadline_in
from tests.workers.conftest import start_worker
from workers.discovery import SERVICE_NAME, SERVICE_VERSION
from workers.sandbox.component import LoadedComponent
from workers.service import WorkerService

QUIET_S = 0.3
"""How long to keep listening for more answers to a request that many may answer."""


async def gather_replies(nc: NatsClient, subject: str, body: bytes = b"") -> list[bytes]:
    """Every reply to one request (``nc.request`` returns only the first)."""
    inbox = nc.new_inbox()
    replies: list[bytes] = []

    async def on_reply(msg: Msg) -> None:
        replies.append(msg.data)

    sub = await nc.subscribe(inbox, cb=on_reply)
    await nc.publish(subject, body, reply=inbox)
    await nc.flush()
    await asyncio.sleep(QUIET_S)
    await sub.unsubscribe()
    return replies


@pytest.fixture
async def nc2(nats_server: EmbeddedNatsServer) -> AsyncIterator[NatsClient]:
    """A second connection, as a second worker process has."""
    client = await connect(nats_server.url, name="test-2")
    yield client
    await client.close()


async def call(nc: NatsClient, subjects: Subjects, tool: str, body: bytes, **kw: Any) -> Msg:
    return await nc.request(subjects.call(tool), body, timeout=5, **kw)


async def test_info_lists_every_tool_as_an_endpoint_on_its_call_subject(
    nc: NatsClient, subjects: Subjects, kit: LoadedComponent, worker: WorkerService
) -> None:
    reply = await nc.request(micro_control("INFO", SERVICE_NAME, worker.worker_id), b"", timeout=2)
    raw = json.loads(reply.data)
    assert raw["type"] == "io.nats.micro.v1.info_response"
    assert (raw["name"], raw["id"], raw["version"]) == (SERVICE_NAME, worker.worker_id, SERVICE_VERSION)
    assert raw["metadata"] == {
        "worker_id": worker.worker_id,
        "prefix": subjects.prefix,
        "concurrency": "2",
        "queue_depth": str(WorkerSettings().queue_depth),
    }
    endpoints = {e["name"]: e for e in raw["endpoints"]}
    assert set(endpoints) == {t.name for t in kit.tools}
    for name, endpoint in endpoints.items():
        assert endpoint["subject"] == subjects.call(name)
        assert endpoint["queue_group"] == subjects.worker_queue
    # nats-py's own micro reader accepts it, field for field.
    assert {e.name for e in ServiceInfo.from_dict(raw).endpoints} == set(endpoints)
    assert decode(reply.data, MicroInfo).id == worker.worker_id


async def test_the_service_answers_by_name_and_to_everyone(nc: NatsClient, worker: WorkerService) -> None:
    # The raw request `nats micro info toolbus-worker` makes: the first answer is enough here.
    by_name = await nc.request(micro_control("INFO", SERVICE_NAME), b"", timeout=2)
    assert decode(by_name.data, MicroInfo).name == SERVICE_NAME
    pings = [decode(r, MicroPing) for r in await gather_replies(nc, micro_control("PING"))]
    assert worker.worker_id in {p.id for p in pings}


async def test_two_workers_both_answer_ping(
    nc: NatsClient, nc2: NatsClient, subjects: Subjects, kit: LoadedComponent, worker: WorkerService
) -> None:
    other = await start_worker(nc2, subjects, kit, concurrency=1)
    try:
        raw = await gather_replies(nc, micro_control("PING", SERVICE_NAME))
        ours = [p for p in map(json.loads, raw) if p["metadata"]["prefix"] == subjects.prefix]
        assert all(p["type"] == "io.nats.micro.v1.ping_response" for p in ours)
        assert sorted(p["id"] for p in ours) == sorted([worker.worker_id, other.worker_id])
    finally:
        await other.stop(grace_s=1)


async def test_stats_count_requests_errors_and_the_guest_time_per_tool(
    nc: NatsClient, subjects: Subjects, worker: WorkerService
) -> None:
    for i in range(5):
        await call(nc, subjects, "kit_add", f'{{"a":{i},"b":1}}'.encode())
    await call(nc, subjects, "kit_add", b"not json")  # a typed error (BAD_REQUEST)
    await call(nc, subjects, "kit_divide", b'{"a":1,"b":0}')  # an isError result
    spin = await call(nc, subjects, "kit_danger_spin", b"{}", headers=deadline_in(0.3))
    assert decode(spin.data, CallToolResult).is_error

    reply = await nc.request(micro_control("STATS", SERVICE_NAME, worker.worker_id), b"", timeout=2)
    raw = json.loads(reply.data)
    assert raw["type"] == "io.nats.micro.v1.stats_response"
    ServiceStats.from_dict(raw)  # nats-py's reader accepts it
    stats = {e.name: e for e in decode(reply.data, MicroStats).endpoints}

    add = stats["kit_add"]
    assert (add.num_requests, add.num_errors) == (6, 1)
    assert (add.data.error_replies, add.data.tool_errors, add.data.in_flight) == (1, 0, 0)
    assert add.last_error.startswith("BAD_REQUEST: request body is not valid JSON")
    assert 0 < add.average_processing_time <= add.processing_time
    assert add.subject == subjects.call("kit_add") and add.queue_group == subjects.worker_queue

    divide = stats["kit_divide"]
    assert (divide.num_requests, divide.num_errors, divide.data.tool_errors) == (1, 1, 1)
    assert divide.last_error == "division by zero"

    # Processing time covers the guest's run, not just taking the message.
    spun = stats["kit_danger_spin"]
    assert spun.num_errors == 1 and "timed out" in spun.last_error
    assert spun.processing_time >= 0.25e9

    assert stats["kit_greet"].num_requests == 0


async def test_refusals_at_capacity_are_counted_as_overloaded(
    nc: NatsClient, subjects: Subjects, kit: LoadedComponent
) -> None:
    service = await start_worker(nc, subjects, kit, concurrency=1, queue_depth=0)
    try:
        busy = asyncio.create_task(call(nc, subjects, "kit_danger_spin", b"{}", headers=deadline_in(0.5)))
        await asyncio.sleep(0.2)
        await call(nc, subjects, "kit_add", b'{"a":1,"b":1}')
        stats = {e.name: e for e in service.discovery.stats().endpoints}
        assert stats["kit_danger_spin"].data.in_flight == 1
        assert (stats["kit_add"].data.overloaded, stats["kit_add"].num_errors) == (1, 1)
        assert stats["kit_add"].last_error.startswith("OVERLOADED")
        await busy
        stats = {e.name: e for e in service.discovery.stats().endpoints}
        assert stats["kit_danger_spin"].data.in_flight == 0
    finally:
        await service.stop(grace_s=1)


async def test_each_call_is_delivered_once(nc: NatsClient, subjects: Subjects, worker: WorkerService) -> None:
    # Registering as a micro service must not add a second subscription to the call subject.
    replies = await gather_replies(nc, subjects.call("kit_add"), b'{"a":1,"b":2}')
    assert len(replies) == 1


async def test_a_stopped_worker_is_no_longer_discoverable(
    nc: NatsClient, subjects: Subjects, kit: LoadedComponent
) -> None:
    service = await start_worker(nc, subjects, kit, concurrency=1)
    await service.stop(grace_s=1)
    with pytest.raises(nats.errors.NoRespondersError):
        await nc.request(micro_control("PING", SERVICE_NAME, service.worker_id), b"", timeout=2)


# How long the calls get before the stop begins: the shortest leave most calls unsent (refused
# by the server), the middle ones catch calls in the worker's subscription queue mid-drain.
@pytest.mark.parametrize("head_start_s", [0, 0.001, 0.002, 0.005])
async def test_calls_racing_a_stop_are_answered_or_refused_never_lost(
    nc: NatsClient, nc2: NatsClient, subjects: Subjects, kit: LoadedComponent, head_start_s: float
) -> None:
    # The worker's own connection is not the callers', as in production.
    service = await start_worker(nc2, subjects, kit, concurrency=1)
    slow = asyncio.create_task(call(nc, subjects, "kit_danger_spin", b"{}", headers=deadline_in(0.4)))
    await asyncio.sleep(0.1)  # the spin holds the only thread: the adds wait in the worker's queue
    calls = [asyncio.create_task(call(nc, subjects, "kit_add", f'{{"a":{i},"b":0}}'.encode())) for i in range(200)]
    await asyncio.sleep(head_start_s)
    await service.stop(grace_s=5)
    outcomes = await asyncio.gather(*calls, return_exceptions=True)
    answered = {i: o for i, o in enumerate(outcomes) if isinstance(o, Msg)}
    refused = [o for o in outcomes if isinstance(o, nats.errors.NoRespondersError)]
    # A worker that dropped its queued calls would lose dozens of these 200; one whose drain
    # let the unsubscribe race the server would lose the odd call (tests/workers/test_bus_races.py).
    lost = len(calls) - len(answered) - len(refused)
    assert lost == 0, [o for o in outcomes if isinstance(o, Exception)][:3]
    assert all(decode(m.data, CallToolResult).structured_content == i for i, m in answered.items())
    assert decode((await slow).data, CallToolResult).is_error
