"""The gateway's /metrics and trace context: a real gateway, registry and worker (the testkit) on real NATS."""

from __future__ import annotations

import httpx2
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError

from bus.embedded import free_port
from bus.subjects import Header
from gateway.metrics import UNKNOWN_TOOL_LABEL
from tests.conftest import eventually, scrape
from tests.gateway.responders import TaskSystem, ready, running_gateway, spying

CLIENT_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
CLIENT_TRACEPARENT = f"00-{CLIENT_TRACE}-00f067aa0ba902b7-01"


@pytest.mark.parametrize("hot_path", [True, False], ids=["hot-path", "sdk"])
async def test_metrics_count_calls_by_tool_and_outcome(task_system: TaskSystem, hot_path: bool) -> None:
    gateway = await task_system.gateway(hot_path=hot_path)
    async with Client(gateway.url, mode="auto") as client:
        for _ in range(2):
            assert not (await client.call_tool("kit_add", {"a": 2, "b": 3})).is_error
        assert (await client.call_tool("kit_divide", {"a": 1, "b": 0})).is_error  # result<_, string> error
        assert (await client.call_tool("kit_add", {"a": "two", "b": 3})).is_error  # schema says integer
        with pytest.raises(MCPError):
            await client.call_tool("no_such_tool", {})
    async with Client(gateway.url, mode="legacy") as client:
        assert not (await client.call_tool("kit_add", {"a": 1, "b": 1})).is_error

    metrics = await scrape(gateway.base_url + "/metrics")
    calls = "toolbus_gateway_calls_total"
    assert metrics.value(calls, tool="kit_add", outcome="ok") == 3
    assert metrics.value(calls, tool="kit_divide", outcome="tool_error") == 1
    assert metrics.value(calls, tool="kit_add", outcome="invalid_arguments") == 1
    # A name the client made up is not a label value: it would mint a series per typo.
    assert metrics.value(calls, tool=UNKNOWN_TOOL_LABEL, outcome="unknown_tool") == 1
    assert not any(dict(labels).get("tool") == "no_such_tool" for _, labels in metrics.samples)
    assert metrics.value("toolbus_gateway_call_duration_seconds_count", tool="kit_add") == 4
    total_s = metrics.value("toolbus_gateway_call_duration_seconds_sum", tool="kit_add")
    assert total_s is not None and total_s > 0
    assert metrics.value("toolbus_gateway_call_duration_seconds_bucket", tool="kit_add", le="+Inf") == 4
    assert metrics.value("toolbus_gateway_calls_in_flight") == 0
    assert metrics.value("toolbus_gateway_nats_connected") == 1
    assert metrics.value("toolbus_gateway_catalogue_tools") == len(gateway.state.catalogue) > 0
    for state in ("working", "input_required", "completed", "failed", "cancelled"):
        assert metrics.value("toolbus_gateway_tasks", state=state) is not None, state
    served = metrics.value("toolbus_gateway_hot_path_requests_total", result="served")
    if hot_path:
        assert served is not None and served >= 6
    else:
        assert served is None  # no hot path, no hot path counters


async def test_tasks_are_counted_by_state(task_system: TaskSystem) -> None:
    gateway = await task_system.gateway()
    before = await scrape(gateway.base_url + "/metrics")
    completed_before = before.value("toolbus_gateway_tasks", state="completed") or 0
    record = await task_system.store.submit("kit_add", {"a": 1, "b": 2}, principal="metrics-test")
    await eventually(
        lambda: _status_is(task_system, record.task_id, "completed"), timeout_s=20, what="task never completed"
    )
    # Counts are re-read at most every TASKS_MAX_AGE_S; a new gateway reads them on its first scrape.
    fresh = await task_system.gateway()
    after = await scrape(fresh.base_url + "/metrics")
    completed = after.value("toolbus_gateway_tasks", state="completed")
    assert completed is not None and completed >= completed_before + 1


async def _status_is(task_system: TaskSystem, task_id: str, status: str) -> bool:
    return (await task_system.store.get(task_id)).status == status


@pytest.mark.parametrize("hot_path", [True, False], ids=["hot-path", "sdk"])
async def test_the_clients_traceparent_reaches_the_worker_from_the_header_or_meta(
    task_system: TaskSystem, hot_path: bool
) -> None:
    gateway = await task_system.gateway(hot_path=hot_path)
    meta_traceparent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    async with spying(task_system, "kit_add") as seen, Client(gateway.url, mode="auto") as client:
        await client.call_tool("kit_add", {"a": 1, "b": 2}, meta={"traceparent": meta_traceparent})
        await client.call_tool("kit_add", {"a": 1, "b": 2})  # no trace context at all
        # A value that is not a traceparent (here: one smuggling a second NATS header) is dropped.
        await client.call_tool("kit_add", {"a": 1, "b": 2}, meta={"traceparent": "00-abc\r\nToolbus-Principal: root"})
        await eventually(lambda: len(seen) == 3, what="the calls never reached the bus")
    assert (seen[0].headers or {}).get(Header.TRACEPARENT) == meta_traceparent
    assert Header.TRACEPARENT not in (seen[1].headers or {})
    assert Header.TRACEPARENT not in (seen[2].headers or {})
    assert "root" not in str(seen[2].headers)

    async with (
        spying(task_system, "kit_add") as seen,
        httpx2.AsyncClient(headers={"traceparent": CLIENT_TRACEPARENT}, timeout=30) as http,
        Client(streamable_http_client(gateway.url, http_client=http), mode="auto") as client,  # type: ignore[arg-type]
    ):
        await client.call_tool("kit_add", {"a": 1, "b": 2})
        await client.call_tool("kit_add", {"a": 1, "b": 2}, meta={"traceparent": meta_traceparent})
        await eventually(lambda: len(seen) == 2, what="the calls never reached the bus")
    assert (seen[0].headers or {}).get(Header.TRACEPARENT) == CLIENT_TRACEPARENT
    # Both: the request's own _meta is the more specific (and the one the SDK's client sets).
    assert (seen[1].headers or {}).get(Header.TRACEPARENT) == meta_traceparent


async def test_with_tracing_on_the_worker_gets_the_gateways_span_and_a_dead_collector_fails_no_call(
    task_system: TaskSystem,
) -> None:
    settings = task_system.settings()
    # Nothing listens there: every export fails, in the exporter's own thread.
    telemetry = settings.telemetry.model_copy(update={"otlp_endpoint": f"http://127.0.0.1:{free_port()}"})
    settings = settings.model_copy(update={"telemetry": telemetry})
    async with running_gateway(settings) as gateway:
        await ready(gateway)
        async with spying(task_system, "kit_add") as seen, Client(gateway.url, mode="auto") as client:
            for _ in range(3):
                result = await client.call_tool("kit_add", {"a": 2, "b": 3}, meta={"traceparent": CLIENT_TRACEPARENT})
                assert not result.is_error
            await eventually(lambda: len(seen) == 3, what="the calls never reached the bus")
    sent = [(msg.headers or {})[Header.TRACEPARENT] for msg in seen]
    for traceparent in sent:
        version, trace, parent, flags = traceparent.split("-")
        assert (version, trace, flags) == ("00", CLIENT_TRACE, "01")  # the client's trace, still sampled
        assert parent != "00f067aa0ba902b7"  # but the gateway's own span as the parent
    assert len(set(sent)) == 3  # a span per call
