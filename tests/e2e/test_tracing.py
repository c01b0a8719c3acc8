"""Traces, per-call log lines and metrics of the real system (``toolbus up``: gateway, registry, worker).

A client's trace id, sent as the HTTP ``traceparent`` header or in ``params._meta``, must show
up in the worker's log line for the call, and in the spans both processes export over OTLP/HTTP.
The collector is outside the machine, so a tiny local HTTP server stands in for it and keeps
every export request it is sent.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx2
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

from bus.embedded import free_port
from tests.conftest import eventually, scrape
from tests.e2e.conftest import start_up, stop_up, write_config

HEADER_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
HEADER_PARENT = "00f067aa0ba902b7"
META_TRACE = "0af7651916cd43dd8448eb211c80319c"
META_PARENT = "b7ad6b7169203331"


@dataclass(frozen=True)
class ExportedSpan:
    service: str
    name: str
    trace_id: str
    span_id: str
    parent_span_id: str
    attributes: dict[str, Any]


class FakeCollector:
    """An OTLP/HTTP traces endpoint on loopback that records the spans POSTed to ``/v1/traces``."""

    def __init__(self) -> None:
        self.spans: list[ExportedSpan] = []
        self.paths: list[str] = []
        collector = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                collector.record(self.path, body)
                answer = ExportTraceServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, format: str, *args: Any) -> None:
                pass  # the test's output is not the place for an access log

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def record(self, path: str, body: bytes) -> None:
        request = ExportTraceServiceRequest.FromString(body)
        self.paths.append(path)
        for resource_spans in request.resource_spans:
            resource = {a.key: a.value.string_value for a in resource_spans.resource.attributes}
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    attributes = {a.key: _value(a.value) for a in span.attributes}
                    self.spans.append(
                        ExportedSpan(
                            resource.get("service.name", ""),
                            span.name,
                            span.trace_id.hex(),
                            span.span_id.hex(),
                            span.parent_span_id.hex(),
                            attributes,
                        )
                    )

    def of_trace(self, trace_id: str) -> dict[str, ExportedSpan]:
        """The spans of one trace by service name."""
        return {span.service: span for span in self.spans if span.trace_id == trace_id}

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def _value(value: Any) -> Any:
    kind = value.WhichOneof("value")
    return getattr(value, kind) if kind else None


@dataclass
class TracedSystem:
    mcp_url: str
    base_url: str
    worker_metrics_url: str
    log: Path
    collector: FakeCollector


@pytest.fixture(scope="module")
def traced_system(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TracedSystem]:
    """``toolbus up`` serving the testkit, exporting spans to a fake collector, worker metrics on."""
    directory = tmp_path_factory.mktemp("traced")
    collector = FakeCollector()
    nats_port, mcp_port, worker_metrics_port = free_port(), free_port(), free_port()
    config = write_config(directory, nats_url=f"nats://127.0.0.1:{nats_port}", mcp_port=mcp_port, components=("kit",))
    # One worker process: its metrics (one port) then count every call.
    worker = f"[worker]\nprocesses = 1\nmetrics_port = {worker_metrics_port}\n"
    text = config.read_text(encoding="utf-8").replace("[worker]\n", worker)
    config.write_text(f'{text}\n[telemetry]\notlp_endpoint = "{collector.url}"\n', encoding="utf-8")
    log = directory / "up.log"
    process, _banner = start_up(config, log_path=log)
    try:
        yield TracedSystem(
            f"http://127.0.0.1:{mcp_port}/mcp",
            f"http://127.0.0.1:{mcp_port}",
            f"http://127.0.0.1:{worker_metrics_port}/metrics",
            log,
            collector,
        )
    finally:
        assert stop_up(process) == 0, log.read_text()[-3000:]
        collector.stop()


def call_lines(log: Path) -> list[dict[str, Any]]:
    """Every per-call log line of every process (JSON: ``toolbus up`` writes to a file, not a terminal)."""
    lines = []
    for line in log.read_text(encoding="utf-8").splitlines():
        if line.startswith("{"):
            entry = json.loads(line)
            if entry.get("event") == "call":
                lines.append(entry)
    return lines


async def test_a_client_trace_id_reaches_the_workers_log_line_and_both_processes_spans(
    traced_system: TracedSystem,
) -> None:
    header_traceparent = f"00-{HEADER_TRACE}-{HEADER_PARENT}-01"
    async with (
        httpx2.AsyncClient(headers={"traceparent": header_traceparent}, timeout=30) as http,
        Client(streamable_http_client(traced_system.mcp_url, http_client=http), mode="auto") as client,  # type: ignore[arg-type]
    ):
        assert not (await client.call_tool("kit_add", {"a": 1, "b": 2})).is_error
    async with Client(traced_system.mcp_url, mode="legacy") as client:
        meta = {"traceparent": f"00-{META_TRACE}-{META_PARENT}-01"}
        assert (await client.call_tool("kit_divide", {"a": 1, "b": 0}, meta=meta)).is_error

    def worker_line(trace: str) -> dict[str, Any] | None:
        found = [e for e in call_lines(traced_system.log) if "worker_id" in e and e.get("trace_id") == trace]
        return found[0] if found else None

    for trace, tool, outcome in ((HEADER_TRACE, "kit_add", "ok"), (META_TRACE, "kit_divide", "tool_error")):
        line = await eventually(lambda t=trace: worker_line(t), timeout_s=10, what=f"no worker line for {trace}")
        assert (line["tool"], line["outcome"], line["level"]) == (tool, outcome, "info")
        assert line["duration_ms"] > 0 and line["request_id"]
        # The gateway's line for the same call: same request id, same trace, and the principal.
        [gateway_line] = [
            e for e in call_lines(traced_system.log) if "worker_id" not in e and e["request_id"] == line["request_id"]
        ]
        assert (gateway_line["trace_id"], gateway_line["tool"], gateway_line["outcome"]) == (trace, tool, outcome)
        assert gateway_line["principal"] == "anonymous"
        # The worker believes the principal: toolbus up's gateway signed it with the run's key.
        assert line["principal"] == "anonymous"

    collector = traced_system.collector
    for trace, client_span in ((HEADER_TRACE, HEADER_PARENT), (META_TRACE, META_PARENT)):
        spans = await eventually(
            lambda t=trace: len(collector.of_trace(t)) == 2 and collector.of_trace(t),
            timeout_s=20,
            what=lambda t=trace: f"spans of {t}: {collector.of_trace(t)}",
        )
        gateway, worker = spans["toolbus-gateway"], spans["toolbus-worker"]
        assert gateway.parent_span_id == client_span  # a child of the client's span
        assert worker.parent_span_id == gateway.span_id  # the worker got the gateway's own traceparent
        assert gateway.name == worker.name == f"tools/call {gateway.attributes['gen_ai.tool.name']}"
        assert worker.attributes["toolbus.request_id"]
    assert set(collector.paths) == {"/v1/traces"}


async def test_gateway_and_worker_metrics_of_the_running_system(traced_system: TracedSystem) -> None:
    async with Client(traced_system.mcp_url, mode="auto") as client:
        for _ in range(2):
            assert not (await client.call_tool("kit_greet", {"name": "metrics"})).is_error
    gateway = await scrape(traced_system.base_url + "/metrics")
    assert gateway.value("toolbus_gateway_calls_total", tool="kit_greet", outcome="ok") == 2
    worker = await scrape(traced_system.worker_metrics_url)
    assert worker.value("toolbus_worker_calls_total", tool="kit_greet", outcome="ok") == 2
    count = worker.value("toolbus_worker_instantiate_seconds_count", tool="kit_greet")
    assert count is not None and count >= 2
