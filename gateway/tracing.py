"""Traces on the gateway: the client's ``traceparent``, and a span per ``tools/call`` when exporting.

Both front ends (``gateway.hotpath``, ``gateway.server``) take the client's trace context from
``params._meta.traceparent`` (where the mcp SDK's own client puts it) or else from the HTTP
``traceparent`` header, with ``client_traceparent``. Without ``[telemetry] otlp_endpoint`` that
value goes to the worker unchanged and no OpenTelemetry code runs per call. With it, the
gateway's ``ToolService`` is a ``TracedToolService``: each call is a span, child of the client's
context, and the worker receives the span's own ``traceparent``, so its span nests under it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

import structlog
from opentelemetry.trace import Span, SpanKind, StatusCode

from bus.telemetry import Tracing, parent_context, traceparent_of, valid_traceparent
from gateway.catalogue_mirror import CatalogueMirror
from gateway.errors import CallFailed
from gateway.tool_service import ToolService
from schemas.errors import failed_outcome
from schemas.wire import CallToolResult

log = structlog.get_logger(__name__)

TRACEPARENT_HTTP_HEADER: Final = "traceparent"
"""The W3C Trace Context header (lower-case, as ASGI and Starlette present header names)."""
TRACEPARENT_META_KEY: Final = "traceparent"
"""The ``params._meta`` key the mcp SDK's client injects its trace context under."""


def client_traceparent(header: str | None, meta: Mapping[str, Any] | None) -> str | None:
    """The client's trace context: ``_meta.traceparent`` first, else the header; a malformed one is ignored."""
    if meta:
        from_meta = valid_traceparent(meta.get(TRACEPARENT_META_KEY))
        if from_meta is not None:
            return from_meta
    return valid_traceparent(header) if header else None


class TracedToolService(ToolService):
    """A ``ToolService`` whose every call is an OpenTelemetry span (``SERVER``, ``tools/call NAME``).

    The span never decides a call's fate: if it cannot be made the call goes on without it.
    """

    def __init__(self, catalogue: CatalogueMirror, *, page_size: int, tracing: Tracing) -> None:
        super().__init__(catalogue, page_size=page_size)
        self.tracing = tracing

    async def call(
        self, name: str, arguments: Any, *, traceparent: str | None = None, **options: Any
    ) -> CallToolResult:
        span = self._start(name, traceparent)
        if span is None:
            return await super().call(name, arguments, traceparent=traceparent, **options)
        status, description = StatusCode.OK, None
        try:
            result = await super().call(name, arguments, traceparent=traceparent_of(span), **options)
            if result.is_error:
                status = StatusCode.ERROR
                span.set_attribute("error.type", "tool_error")
            return result
        except CallFailed as exc:
            status, description = StatusCode.ERROR, exc.message
            span.set_attribute("error.type", failed_outcome(exc.code))
            raise
        except BaseException as exc:  # cancelled, or a bug the front end turns into INTERNAL_ERROR
            status = StatusCode.ERROR
            span.set_attribute("error.type", type(exc).__name__)
            raise
        finally:
            try:
                span.set_status(status, description)
                span.end()
            except Exception:  # an exporter bug must not turn a finished call into a failure
                log.exception("span not ended", tool=name)

    def _start(self, name: str, traceparent: str | None) -> Span | None:
        try:
            return self.tracing.tracer.start_span(
                f"tools/call {name}",
                context=parent_context(traceparent),
                kind=SpanKind.SERVER,
                attributes={
                    "mcp.method.name": "tools/call",
                    "gen_ai.operation.name": "execute_tool",
                    "gen_ai.tool.name": name,
                },
            )
        except Exception:
            log.exception("span not started; calling without it", tool=name)
            return None
