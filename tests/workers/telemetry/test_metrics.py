"""A worker's metrics port and per-call log line: a real worker (the testkit) called over real NATS."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
import structlog
from nats.aio.client import Client as NatsClient

from bus.subjects import Header, Subjects
from schemas.codec import encode
from tests.conftest import deadline_in, eventually, scrape
from tests.workers.conftest import start_worker
from workers.sandbox.component import LoadedComponent
from workers.service import WorkerService
from workers.telemetry.call_log import call_logger
from workers.telemetry.metrics import MetricsServer, WorkerMetrics, serve_metrics

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
TRACEPARENT = f"00-{TRACE}-00f067aa0ba902b7-01"


class Observed:
    """A started worker whose metrics are served on a free loopback port."""

    def __init__(self, service: WorkerService, server: MetricsServer) -> None:
        self.service = service
        self.server = server

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.port}/metrics"


async def observed_worker(nc: NatsClient, subjects: Subjects, kit: LoadedComponent, **settings: int) -> Observed:
    service = await start_worker(nc, subjects, kit, **settings)
    metrics = WorkerMetrics(service, settings.get("concurrency", 1), settings.get("queue_depth", 256))
    service.observers.append(metrics.observe)
    server = serve_metrics(metrics, "127.0.0.1", 0)
    assert server is not None
    return Observed(service, server)


@pytest.fixture
async def observed(nc: NatsClient, subjects: Subjects, kit: LoadedComponent) -> AsyncIterator[Observed]:
    worker = await observed_worker(nc, subjects, kit, concurrency=2)
    yield worker
    await worker.service.stop(grace_s=1)
    worker.server.stop()


async def call(nc: NatsClient, subjects: Subjects, tool: str, body: bytes, **headers: str) -> dict[str, str]:
    """Call ``tool`` with a raw body; the reply's headers (empty for a result)."""
    reply = await nc.request(subjects.call(tool), body, timeout=30, headers={**deadline_in(30), **headers})
    return reply.headers or {}


async def test_the_metrics_port_counts_calls_by_tool_and_outcome(
    nc: NatsClient, subjects: Subjects, observed: Observed
) -> None:
    for _ in range(3):
        assert Header.ERROR not in await call(nc, subjects, "kit_add", encode({"a": 1, "b": 2}))
    assert Header.ERROR not in await call(nc, subjects, "kit_divide", encode({"a": 1, "b": 0}))
    assert Header.ERROR not in await call(nc, subjects, "kit_add", encode({"a": "one", "b": 2}))
    assert Header.ERROR in await call(nc, subjects, "kit_add", b"{not json")
    assert Header.ERROR in await call(nc, subjects, "kit_add", b"{}", **{Header.DEADLINE_MS: "1"})

    metrics = await scrape(observed.url)
    calls = "toolbus_worker_calls_total"
    assert metrics.value(calls, tool="kit_add", outcome="ok") == 3
    assert metrics.value(calls, tool="kit_divide", outcome="tool_error") == 1
    assert metrics.value(calls, tool="kit_add", outcome="invalid_arguments") == 1
    assert metrics.value(calls, tool="kit_add", outcome="bad_request") == 1
    assert metrics.value(calls, tool="kit_add", outcome="deadline_exceeded") == 1
    assert metrics.value("toolbus_worker_call_duration_seconds_count", tool="kit_add") == 6
    # Only calls that reached a guest instantiated one: three adds (fresh Store per call) and a divide.
    assert metrics.value("toolbus_worker_instantiate_seconds_count", tool="kit_add") == 3
    assert metrics.value("toolbus_worker_instantiate_seconds_count", tool="kit_divide") == 1
    instantiate_s = metrics.value("toolbus_worker_instantiate_seconds_sum", tool="kit_add")
    assert instantiate_s is not None and 0 < instantiate_s < 1
    assert metrics.value("toolbus_worker_calls_in_flight") == 0
    assert metrics.value("toolbus_worker_queue_depth") == 0
    assert metrics.value("toolbus_worker_concurrency") == 2
    assert metrics.value("toolbus_worker_tools") == len(observed.service.tools)


async def test_in_flight_and_the_admission_queue_are_gauged_while_calls_wait(
    nc: NatsClient, subjects: Subjects, kit: LoadedComponent
) -> None:
    worker = await observed_worker(nc, subjects, kit, concurrency=1, queue_depth=4)
    try:
        # Endless guests, stopped by cancelling them once the gauges have been read.
        ids = [f"spin-{i}" for i in range(3)]
        calls = [
            asyncio.create_task(call(nc, subjects, "kit_danger_spin", b"{}", **{Header.REQUEST_ID: request_id}))
            for request_id in ids
        ]
        await eventually(lambda: worker.service.accepted == 3, what="the three calls were never accepted")
        metrics = await scrape(worker.url)
        assert metrics.value("toolbus_worker_calls_in_flight") == 3
        assert metrics.value("toolbus_worker_queue_depth") == 2  # one guest thread: two calls wait
        assert metrics.value("toolbus_worker_queue_capacity") == 4
        for request_id in ids:
            await nc.publish(subjects.cancel(request_id), b"")
        replies = await asyncio.gather(*calls)
        assert all(Header.ERROR in headers for headers in replies)
        metrics = await scrape(worker.url)
        assert metrics.value("toolbus_worker_calls_in_flight") == 0
        assert metrics.value("toolbus_worker_queue_depth") == 0
        assert metrics.value("toolbus_worker_calls_total", tool="kit_danger_spin", outcome="cancelled") == 3
    finally:
        await worker.service.stop(grace_s=5)
        worker.server.stop()


async def test_a_taken_port_leaves_the_worker_serving_without_metrics(
    nc: NatsClient, subjects: Subjects, observed: Observed
) -> None:
    metrics = WorkerMetrics(observed.service, 2, 256)
    with structlog.testing.capture_logs() as logs:
        assert serve_metrics(metrics, "127.0.0.1", observed.server.port) is None
    assert [entry["event"] for entry in logs] == ["metrics not served: cannot listen"]
    assert logs[0]["port"] == observed.server.port
    assert Header.ERROR not in await call(nc, subjects, "kit_add", encode({"a": 1, "b": 2}))


async def test_each_call_is_one_log_line_with_its_request_and_trace_ids(
    nc: NatsClient, subjects: Subjects, observed: Observed
) -> None:
    observed.service.observers.append(call_logger(observed.service.worker_id))
    with structlog.testing.capture_logs() as logs:
        await call(nc, subjects, "kit_add", encode({"a": 1, "b": 2}), **{Header.REQUEST_ID: "r-1"})
        await call(
            nc,
            subjects,
            "kit_divide",
            encode({"a": 1, "b": 0}),
            **{Header.REQUEST_ID: "r-2", Header.TRACEPARENT: TRACEPARENT},
        )
        await call(
            nc, subjects, "kit_add", encode({"a": 1, "b": 2}), **{Header.REQUEST_ID: "r-3", Header.TRACEPARENT: "junk"}
        )
        await eventually(lambda: len([e for e in logs if e["event"] == "call"]) == 3, what="three call lines")
    ok, failed, junk = [entry for entry in logs if entry["event"] == "call"]
    assert ok["log_level"] == "info"
    assert (ok["request_id"], ok["tool"], ok["outcome"]) == ("r-1", "kit_add", "ok")
    assert ok["duration_ms"] > 0 and ok["instantiate_ms"] > 0
    assert ok["worker_id"] == observed.service.worker_id
    assert "trace_id" not in ok and "error" not in ok
    assert (failed["request_id"], failed["outcome"], failed["trace_id"]) == ("r-2", "tool_error", TRACE)
    assert isinstance(failed["error"], str) and failed["error"]  # the guest's error text
    assert junk["request_id"] == "r-3" and "trace_id" not in junk  # a malformed traceparent names no trace
