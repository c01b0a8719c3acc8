"""The gateway's Prometheus metrics, served at ``/metrics`` (docs/operations.md lists every one).

Per call the cost is one ``CallRecord`` observer (``observe``): a dict lookup for the
(tool, outcome) pair's counter and histogram children, made once per pair, then one increment
and one observation. Everything else is read when Prometheus scrapes: calls in flight
(``ToolService.in_flight``), tools in the catalogue, the NATS connection, the hot path's counters.

Tasks by state come from the task store (NATS KV), read at most every ``TASKS_MAX_AGE_S`` and
only when scraped: the gateway hears of the tasks it creates, not of every transition a worker
makes, so the bucket is the one place that knows. The counts are deployment-wide: every gateway
reports the same numbers (take ``max``, not ``sum``, across replicas).

Each app has its own ``CollectorRegistry``, never the process-global one (tests build many apps
in one process, and a registry holds each metric name once).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable
from typing import Final, Protocol, get_args

import structlog
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.registry import Collector

from bus.errors import BusError
from gateway.catalogue_mirror import CatalogueMirror
from gateway.tool_service import CallRecord, ToolService
from schemas.wire import TaskRecord, TaskStatus

log = structlog.get_logger(__name__)

CONTENT_TYPE: Final = "text/plain; version=0.0.4; charset=utf-8"
"""The Prometheus text exposition format that ``generate_latest`` writes."""
LATENCY_BUCKETS_S: Final = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
"""Call latency buckets: a warm call is ~1 ms end to end, the default deadline 30 s."""
UNKNOWN_TOOL_LABEL: Final = "_unknown"
"""The ``tool`` label of calls to tools not in the catalogue: client-chosen names must not mint series."""
TASKS_MAX_AGE_S: Final = 10.0
"""A scrape reuses task counts read less than this long ago."""
TASKS_READ_TIMEOUT_S: Final = 2.0
"""Upper bound on reading the task bucket during a scrape; on timeout the last counts stay."""
TASK_STATES: Final[tuple[str, ...]] = get_args(TaskStatus)


class TaskRecords(Protocol):
    """What the task counts are read from (``stores.TaskStore``)."""

    async def records(self) -> list[TaskRecord]: ...


class HotPathCounters(Protocol):
    """What ``HotPathCollector`` reads: requests served on the lean path or handed over to the SDK."""

    served: int
    handed_over: int
    interrupted: int


class HotPathCollector(Collector):
    """``toolbus_gateway_hot_path_requests_total`` from the hot path's own counters, read at scrape time."""

    def __init__(self, hot_path: HotPathCounters) -> None:
        self._hot_path = hot_path

    def collect(self) -> Iterable[Metric]:
        requests = CounterMetricFamily(
            "toolbus_gateway_hot_path_requests",
            "POSTs to the MCP endpoint for tools/call or tools/list by who answered them: the lean "
            "hot path (served) or the SDK (handed_over); interrupted: hot calls their client cancelled or left",
            labels=["result"],
        )
        requests.add_metric(["served"], self._hot_path.served)
        requests.add_metric(["handed_over"], self._hot_path.handed_over)
        requests.add_metric(["interrupted"], self._hot_path.interrupted)
        yield requests


class GatewayMetrics:
    """The metrics of one gateway app; ``observe`` is a ``CallRecord`` observer."""

    def __init__(
        self,
        service: ToolService,
        catalogue: CatalogueMirror,
        *,
        nats_connected: Callable[[], bool],
        task_store: Callable[[], TaskRecords | None],
    ) -> None:
        """``nats_connected`` and ``task_store`` (``None`` until the store is open) are asked at scrape time."""
        self.registry = CollectorRegistry()
        self._calls = Counter(
            "toolbus_gateway_calls",
            "Finished tools/call requests by tool and outcome (ok, tool_error, invalid_arguments, "
            "cancelled, input_required, or the error code: no_worker, overloaded, deadline_exceeded, unknown_tool...)",
            ["tool", "outcome"],
            registry=self.registry,
        )
        self._latency = Histogram(
            "toolbus_gateway_call_duration_seconds",
            "Time from a tools/call reaching the tool service to its answer, whatever the outcome",
            ["tool"],
            buckets=LATENCY_BUCKETS_S,
            registry=self.registry,
        )
        Gauge(
            "toolbus_gateway_calls_in_flight", "tools/call requests begun and not yet answered", registry=self.registry
        ).set_function(lambda: service.in_flight)
        Gauge(
            "toolbus_gateway_catalogue_tools", "Tools in this gateway's catalogue", registry=self.registry
        ).set_function(lambda: len(catalogue))
        Gauge(
            "toolbus_gateway_nats_connected", "1 while the gateway's NATS connection is up", registry=self.registry
        ).set_function(lambda: 1.0 if nats_connected() else 0.0)
        self._tasks = Gauge(
            "toolbus_gateway_tasks",
            "Tasks in the deployment's task store by state (finished ones stay until their TTL); "
            "the same on every gateway",
            ["state"],
            registry=self.registry,
        )
        for state in TASK_STATES:
            self._tasks.labels(state).set(0)
        self._task_store = task_store
        self._tasks_read_at = -float("inf")
        self._children: dict[tuple[str, str], tuple[Counter, Histogram]] = {}

    def observe(self, record: CallRecord) -> None:
        """Count one finished call (a ``ToolService`` observer; on the event loop, never blocks)."""
        key = (record.tool, record.outcome)
        children = self._children.get(key)
        if children is None:
            children = self._children_for(key)
        children[0].inc()
        children[1].observe(record.duration_s)

    def _children_for(self, key: tuple[str, str]) -> tuple[Counter, Histogram]:
        tool, outcome = key
        label = UNKNOWN_TOOL_LABEL if outcome == "unknown_tool" else tool
        children = self._calls.labels(label, outcome), self._latency.labels(label)
        if outcome != "unknown_tool":  # unknown names are not kept as keys either
            self._children[key] = children
        return children

    def watch_hot_path(self, hot_path: HotPathCounters) -> None:
        """Report the hot path's counters too (when the app has one)."""
        self.registry.register(HotPathCollector(hot_path))

    async def render(self) -> bytes:
        """The exposition text of every metric, task counts refreshed if stale."""
        store = self._task_store()
        if store is not None and time.monotonic() - self._tasks_read_at >= TASKS_MAX_AGE_S:
            await self._refresh_tasks(store)
        return generate_latest(self.registry)

    async def _refresh_tasks(self, store: TaskRecords) -> None:
        try:
            read = await asyncio.wait_for(store.records(), TASKS_READ_TIMEOUT_S)
        except (TimeoutError, BusError) as exc:
            log.debug("task counts not refreshed", error=type(exc).__name__)
            return
        counts = dict.fromkeys(TASK_STATES, 0)
        for record in read:
            counts[record.status] = counts.get(record.status, 0) + 1
        for state, count in counts.items():
            self._tasks.labels(state).set(count)
        self._tasks_read_at = time.monotonic()
