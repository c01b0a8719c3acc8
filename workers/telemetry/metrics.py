"""The worker's Prometheus metrics, served over HTTP when ``[worker] metrics_port`` is set.

Per call the cost is one ``FinishedCall`` observer (``observe``): cached label children, one
increment, one or two histogram observations. Load (calls in flight, the admission queue) is
read from the service when Prometheus scrapes. docs/operations.md lists every metric.

The server is prometheus-client's own (a WSGI server in a daemon thread): scrapes never wait
for the event loop, and a busy loop does not hide its own metrics. Each worker process needs a
port of its own; a port already taken is logged as an error and the worker serves calls anyway
(metrics are not worth refusing work for).
"""

from __future__ import annotations

from typing import Final
from wsgiref.simple_server import WSGIServer

import structlog
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

from workers.answers import FinishedCall
from workers.service import WorkerService

log = structlog.get_logger(__name__)

LATENCY_BUCKETS_S: Final = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 30.0, 300.0)
"""Call latency on the worker: a small guest answers in well under a millisecond, the cap is 300 s."""
INSTANTIATE_BUCKETS_S: Final = (0.00001, 0.00005, 0.0001, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1)
"""Instantiation: ~5 µs for a small component, ~0.5 ms for a componentize-py one."""


class WorkerMetrics:
    """The metrics of one worker; ``observe`` is a ``WorkerService`` observer."""

    def __init__(self, service: WorkerService, concurrency: int, queue_depth: int) -> None:
        self.registry = CollectorRegistry()
        self._calls = Counter(
            "toolbus_worker_calls",
            "Calls answered by tool and outcome (ok, tool_error, invalid_arguments, or the error code: "
            "overloaded, cancelled, deadline_exceeded, bad_request, internal...)",
            ["tool", "outcome"],
            registry=self.registry,
        )
        self._latency = Histogram(
            "toolbus_worker_call_duration_seconds",
            "Time from a call reaching the worker to its reply being sent, whatever the outcome",
            ["tool"],
            buckets=LATENCY_BUCKETS_S,
            registry=self.registry,
        )
        self._instantiate = Histogram(
            "toolbus_worker_instantiate_seconds",
            "Time to instantiate a guest for a call (calls served by a warm instance are not counted)",
            ["tool"],
            buckets=INSTANTIATE_BUCKETS_S,
            registry=self.registry,
        )
        Gauge(
            "toolbus_worker_calls_in_flight",
            "Calls and tasks accepted and not yet finished (running or waiting for a guest thread)",
            registry=self.registry,
        ).set_function(lambda: service.accepted)
        Gauge(
            "toolbus_worker_queue_depth",
            "Accepted calls and tasks waiting for a free guest thread (the admission queue)",
            registry=self.registry,
        ).set_function(lambda: service.queued)
        Gauge("toolbus_worker_concurrency", "Guest threads ([worker] concurrency)", registry=self.registry).set(
            concurrency
        )
        Gauge(
            "toolbus_worker_queue_capacity",
            "Calls that may wait for a thread before the worker answers overloaded ([worker] queue_depth)",
            registry=self.registry,
        ).set(queue_depth)
        Gauge("toolbus_worker_tools", "Tools this worker serves", registry=self.registry).set_function(
            lambda: len(service.tools)
        )
        self._children: dict[tuple[str, str], tuple[Counter, Histogram, Histogram]] = {}

    def observe(self, record: FinishedCall) -> None:
        """Count one answered call (on the event loop)."""
        key = (record.tool, record.outcome)
        children = self._children.get(key)
        if children is None:
            # Tools are the worker's own (only their subjects are subscribed): the set is bounded.
            tool = record.tool
            children = self._children[key] = (
                self._calls.labels(tool, record.outcome),
                self._latency.labels(tool),
                self._instantiate.labels(tool),
            )
        children[0].inc()
        children[1].observe(record.duration_s)
        if record.instantiate_s is not None:
            children[2].observe(record.instantiate_s)


class MetricsServer:
    """The HTTP server that answers Prometheus scrapes for one registry, in its own thread."""

    def __init__(self, server: WSGIServer) -> None:
        self._server = server

    @property
    def port(self) -> int:
        """The port it listens on (the one picked, when configured as 0)."""
        return int(self._server.server_address[1])

    def stop(self) -> None:
        """Stop answering and free the port."""
        self._server.shutdown()
        self._server.server_close()


def serve_metrics(metrics: WorkerMetrics, host: str, port: int) -> MetricsServer | None:
    """Serve ``metrics`` on ``host:port`` (any path answers, ``/metrics`` included); ``None`` if the port is taken."""
    try:
        server, _thread = start_http_server(port, addr=host, registry=metrics.registry)
    except OSError as exc:
        log.error("metrics not served: cannot listen", host=host, port=port, error=str(exc))
        return None
    running = MetricsServer(server)
    log.info("metrics served", url=f"http://{host}:{running.port}/metrics")
    return running
