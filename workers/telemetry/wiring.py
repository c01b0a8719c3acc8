"""What a worker process tells operators about its calls, wired from its settings.

- metrics (``workers.telemetry.metrics``) over HTTP when ``[worker] metrics_port`` is set;
- one log line per call (``workers.telemetry.call_log``) unless ``[telemetry] call_logs = false``;
- a span per call (``workers.telemetry.tracing``) when ``[telemetry] otlp_endpoint`` is set.
With none of them configured, a call pays for nothing but the ``if`` that finds no observer.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from bus.telemetry import Tracing, start_tracing
from schemas.config import Settings
from workers.service import WorkerService
from workers.telemetry.call_log import CallLog, call_logger

if TYPE_CHECKING:  # loaded when configured: prometheus-client and OpenTelemetry cost every start ~20-30 ms each
    from workers.telemetry.metrics import MetricsServer, WorkerMetrics


@dataclass
class WorkerTelemetry:
    """The observers attached to one worker service, and what must be stopped with it."""

    metrics: WorkerMetrics | None = None
    server: MetricsServer | None = None
    tracing: Tracing | None = None
    call_log: CallLog | None = None

    def stop(self) -> None:
        """Write the last call lines, free the metrics port and export the last spans (after the
        service has drained)."""
        if self.call_log is not None:
            self.call_log.flush()
        if self.server is not None:
            self.server.stop()
            self.server = None
        if self.tracing is not None:
            self.tracing.shutdown()
            self.tracing = None


def watch_calls(service: WorkerService, settings: Settings) -> WorkerTelemetry:
    """Attach the configured observers to ``service`` (before it starts) and start the metrics server."""
    telemetry = WorkerTelemetry()
    worker = settings.worker
    if worker.metrics_port is not None:
        from workers.telemetry.metrics import WorkerMetrics, serve_metrics

        telemetry.metrics = WorkerMetrics(service, worker.concurrency, worker.queue_depth)
        service.observers.append(telemetry.metrics.observe)
        telemetry.server = serve_metrics(telemetry.metrics, worker.metrics_host, worker.metrics_port)
    if settings.telemetry.call_logs:
        telemetry.call_log = call_logger(service.worker_id)
        service.observers.append(telemetry.call_log)
    telemetry.tracing = start_tracing(settings.telemetry, "worker")
    if telemetry.tracing is not None:
        from workers.telemetry.tracing import span_recorder

        service.observers.append(span_recorder(telemetry.tracing, service.worker_id))
    return telemetry
