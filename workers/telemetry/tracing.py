"""Worker spans: each answered call becomes a span, child of the request's ``traceparent``.

Made after the call from its ``FinishedCall`` (with its real start and end times), so the
guest's thread and the call's hot path never touch OpenTelemetry: the worker calls nothing
downstream that would need the span's context. A call without a ``traceparent`` (the nats CLI)
starts a trace of its own, sampled at ``[telemetry] sample_ratio``.
"""

from __future__ import annotations

import time

import structlog
from opentelemetry.trace import SpanKind, StatusCode

from bus.telemetry import Tracing, parent_context
from schemas.errors import OK
from workers.answers import CallObserver, FinishedCall

log = structlog.get_logger(__name__)


def span_recorder(tracing: Tracing, worker_id: str) -> CallObserver:
    """An observer that records each answered call of worker ``worker_id`` as a span."""
    tracer = tracing.tracer

    def record_span(record: FinishedCall) -> None:
        try:
            end_ns = time.time_ns()
            span = tracer.start_span(
                f"tools/call {record.tool}",
                context=parent_context(record.traceparent),
                kind=SpanKind.SERVER,
                attributes={
                    "gen_ai.operation.name": "execute_tool",
                    "gen_ai.tool.name": record.tool,
                    "toolbus.request_id": record.request_id,
                    "toolbus.worker_id": worker_id,
                    "toolbus.outcome": record.outcome,
                },
                start_time=end_ns - int(record.duration_s * 1e9),
            )
            if record.instantiate_s is not None:
                span.set_attribute("toolbus.instantiate_s", record.instantiate_s)
            if record.outcome != OK:
                span.set_attribute("error.type", record.outcome)
                span.set_status(StatusCode.ERROR, record.error)
            span.end(end_time=end_ns)
        except Exception:  # a span must never cost a call anything more than its absence
            log.exception("span not recorded", tool=record.tool)

    return record_span
