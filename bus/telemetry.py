"""Traces: W3C ``traceparent`` handling, and the OpenTelemetry tracer of a gateway or worker process.

A ``traceparent`` comes from a client (HTTP header or ``params._meta``), rides the call's NATS
request as a header (``bus.subjects.Header.TRACEPARENT``) and names the trace in the per-call log
lines. Only well-formed values are forwarded: the bus headers must never carry what a client
smuggled into a JSON string (a CR/LF would start a header of its own).

``Tracing`` exists only when ``[telemetry] otlp_endpoint`` is set. Each process keeps its own
``TracerProvider`` (never the global one): spans are ours alone, tests can run several in one
process, and the mcp SDK's own instrumentation stays the no-op it is without a global provider.
The OpenTelemetry SDK is imported only then, and its API only by a traced call, so a process
without telemetry never loads either.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Final

from schemas.config import TelemetrySettings

if TYPE_CHECKING:
    from opentelemetry.context import Context
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.trace import Span, Tracer

_TRACEPARENT: Final = re.compile(r"([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-[0-9a-f]{2}(-[\x21-\x7e]*)?")
"""W3C Trace Context ``traceparent``: version-traceid-parentid-flags; later versions may append fields."""
_ZERO_TRACE: Final = "0" * 32
_ZERO_SPAN: Final = "0" * 16
TRACES_PATH: Final = "/v1/traces"
"""Where an OTLP/HTTP collector takes spans, under its base URL."""
EXPORT_TIMEOUT_S: Final = 3.0
"""Per export request, retries included. Bounds how long a stopping process waits on a dead
collector (the exporter's own default, 10 s, would outlast the supervisor's patience)."""


def valid_traceparent(value: object) -> str | None:
    """``value`` when it is a ``traceparent`` we may forward, else ``None`` (W3C: ignore a bad one).

    Version ``00`` is exactly four fields; ``ff`` is invalid; all-zero trace or parent ids are invalid.
    """
    if not isinstance(value, str):
        return None
    match = _TRACEPARENT.fullmatch(value)
    if match is None:
        return None
    version, trace, parent, rest = match.groups()
    if version == "ff" or (version == "00" and rest) or trace == _ZERO_TRACE or parent == _ZERO_SPAN:
        return None
    return value


def trace_id(traceparent: str | None) -> str | None:
    """The trace id (32 hex digits) of a ``traceparent`` (``valid_traceparent`` checked it), or ``None``."""
    return traceparent[3:35] if traceparent else None


def traceparent_of(span: Span) -> str:
    """The ``traceparent`` that makes the receiver's spans children of ``span``."""
    context = span.get_span_context()
    return f"00-{context.trace_id:032x}-{context.span_id:016x}-{int(context.trace_flags):02x}"


def parent_context(traceparent: str | None) -> Context:
    """The OpenTelemetry context of a remote parent (a valid ``traceparent``); empty: a new trace."""
    # Here, not at the top: a process without tracing never loads OpenTelemetry (~5 ms of every
    # worker start, issue 17). Only a traced call gets here, and the tracer has loaded it already.
    from opentelemetry.context import Context
    from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags, set_span_in_context

    if traceparent is None:
        return Context()  # not the ambient context: a span without a client parent starts a trace
    remote = SpanContext(
        trace_id=int(traceparent[3:35], 16),
        span_id=int(traceparent[36:52], 16),
        is_remote=True,
        trace_flags=TraceFlags(int(traceparent[53:55], 16)),
    )
    return set_span_in_context(NonRecordingSpan(remote))


def traces_url(endpoint: str) -> str:
    """The OTLP/HTTP traces URL of a configured endpoint (a base URL, or already the traces URL)."""
    trimmed = endpoint.rstrip("/")
    return trimmed if trimmed.endswith(TRACES_PATH) else trimmed + TRACES_PATH


class Tracing:
    """One process's tracer: spans are batched and exported over OTLP/HTTP in a background thread.

    Export failures are the exporter's to log; they never reach a call.
    """

    def __init__(self, provider: TracerProvider) -> None:
        self._provider = provider
        self.tracer: Tracer = provider.get_tracer("toolbus")

    def shutdown(self) -> None:
        """Export what is left and stop the exporter (at process or app shutdown)."""
        self._provider.shutdown()


def start_tracing(settings: TelemetrySettings, role: str) -> Tracing | None:
    """The tracer of a ``role`` process (``gateway``, ``worker``), or ``None`` when export is not configured."""
    if settings.otlp_endpoint is None:
        return None
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor
    from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased

    provider = TracerProvider(
        resource=Resource.create({"service.name": settings.service_name or f"toolbus-{role}"}),
        # A client's sampled flag decides for its trace; traces that start here are sampled at the ratio.
        sampler=ParentBased(TraceIdRatioBased(settings.sample_ratio)),
    )
    exporter = OTLPSpanExporter(endpoint=traces_url(settings.otlp_endpoint), timeout=EXPORT_TIMEOUT_S)
    provider.add_span_processor(BatchSpanProcessor(exporter))
    return Tracing(provider)
