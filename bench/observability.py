"""Per-call cost of metrics, the per-call log line and spans, against a call without them (same run).

Gateway: ``ToolService.call`` of a valid call whose bus round trip is a stub that answers at once
(so only the gateway's own per-call work is timed), run without suspending an event loop:
- baseline: no observers (what a call costs when nothing watches it);
- metrics: the ``GatewayMetrics`` observer (what every gateway pays);
- metrics + log line: plus ``gateway.call_log`` rendering JSON into /dev/null (the default);
- spans: ``TracedToolService`` with metrics and the log line (only with ``[telemetry] otlp_endpoint``;
  spans are queued for an exporter aimed at a closed port, as when a collector is down).
Worker: the ``FinishedCall`` observers timed alone (``WorkerMetrics.observe``, the log line, the span).
Also the front ends' trace-context lookup (``client_traceparent``) with and without a value.

Run: ``.venv/bin/python -m bench.observability``
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

from bench.stats import per_call_us, run_unsuspended
from bench.tools_list import descriptor
from bus.embedded import free_port
from bus.telemetry import start_tracing
from cli.logs import configure_logging
from gateway.call_log import log_call
from gateway.catalogue_mirror import CatalogueMirror
from gateway.metrics import GatewayMetrics
from gateway.tool_service import ToolService
from gateway.tracing import TracedToolService, client_traceparent
from schemas.codec import encode
from schemas.config import TelemetrySettings
from schemas.wire import CallToolResult, TextContent
from workers.answers import FinishedCall
from workers.telemetry.call_log import call_logger
from workers.telemetry.metrics import WorkerMetrics
from workers.telemetry.tracing import span_recorder

NUMBER = 2000
REPEAT = 15
TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
REPLY = encode(CallToolResult(content=[TextContent("5")], structured_content=5))


class _AnswersAtOnce:
    """Stands in for ``gateway.calls.ToolCaller``: the worker's reply without a bus."""

    async def call(self, *_args: Any, **_kwargs: Any) -> bytes:
        return REPLY


def _per_call_us(call: Callable[[], object]) -> float:
    return per_call_us(call, number=NUMBER, repeat=REPEAT)


def _service(catalogue: CatalogueMirror, *, observers: str, traced: bool = False) -> ToolService:
    if traced:
        tracing = start_tracing(TelemetrySettings(otlp_endpoint=f"http://127.0.0.1:{free_port()}"), "gateway")
        assert tracing is not None
        service: ToolService = TracedToolService(catalogue, page_size=100, tracing=tracing)
    else:
        service = ToolService(catalogue, page_size=100)
    service.caller = _AnswersAtOnce()  # type: ignore[assignment]
    if "metrics" in observers:
        metrics = GatewayMetrics(service, catalogue, nats_connected=lambda: True, task_store=lambda: None)
        service.observers.append(metrics.observe)
    if "log" in observers:
        service.observers.append(log_call)
    return service


def main() -> None:
    # The log lines go where a production gateway's go (JSON on stderr), here into /dev/null.
    sys.stderr = open(os.devnull, "w")  # for the whole run
    configure_logging("json")
    catalogue = CatalogueMirror()
    catalogue.replace([descriptor(0)])
    [name] = catalogue.names()
    arguments = {"a": 1, "b": 2}

    def timing(service: ToolService, traceparent: str | None = None) -> float:
        return _per_call_us(
            lambda: run_unsuspended(service.call(name, arguments, era="2026-07-28", traceparent=traceparent))
        )

    rows = [
        ("baseline: no observers", timing(_service(catalogue, observers=""))),
        ("metrics", timing(_service(catalogue, observers="metrics"))),
        ("metrics + log line", timing(_service(catalogue, observers="metrics log"))),
        ("metrics + log line + span", timing(_service(catalogue, observers="metrics log", traced=True), TRACEPARENT)),
    ]
    out = sys.__stdout__
    assert out is not None
    print(f"gateway ToolService.call, stub bus, median of {REPEAT} x {NUMBER} calls:", file=out)
    baseline = rows[0][1]
    for label, us in rows:
        print(f"  {label:28s} {us:6.2f} us   +{us - baseline:5.2f} us   x{us / baseline:4.2f}", file=out)

    meta_without, meta_with = {"io.modelcontextprotocol/protocolVersion": "2026-07-28"}, {"traceparent": TRACEPARENT}
    print("client_traceparent (front ends, per call):", file=out)
    print(f"  none sent        {_per_call_us(lambda: client_traceparent(None, meta_without)) * 1000:6.0f} ns", file=out)
    print(f"  in _meta         {_per_call_us(lambda: client_traceparent(None, meta_with)) * 1000:6.0f} ns", file=out)

    service = SimpleNamespace(accepted=0, queued=0, tools=[])
    worker_metrics = WorkerMetrics(service, 2, 256)  # type: ignore[arg-type]
    record = FinishedCall("kit_add", "r1", TRACEPARENT, "ok", None, 0.0004, 0.00002)
    log_line = call_logger("worker-1")
    print("worker observers, per call:", file=out)
    print(f"  metrics          {_per_call_us(lambda: worker_metrics.observe(record)):6.2f} us", file=out)
    print(f"  log line         {_per_call_us(lambda: log_line(record)):6.2f} us", file=out)
    tracing = start_tracing(TelemetrySettings(otlp_endpoint=f"http://127.0.0.1:{free_port()}"), "worker")
    assert tracing is not None
    span = span_recorder(tracing, "worker-1")
    print(f"  span             {_per_call_us(lambda: span(record)):6.2f} us", file=out)


if __name__ == "__main__":
    main()
