"""The gateway's HTTP surface with a raw HTTP client: JSON-RPC errors, DNS rebinding, health."""

from __future__ import annotations

import gc
import json
from collections.abc import Awaitable, Callable
from typing import Any

import httpx2
import pytest
from nats.js.kv import KeyValue

from bus.embedded import EmbeddedNatsServer
from bus.subjects import Subjects
from gateway.app import YOUNG_COLLECTION_THRESHOLD
from schemas.config import load_settings
from tests.gateway.responders import ADD, RunningGateway, put_tools, running_gateway

StartGateway = Callable[..., Awaitable[RunningGateway]]

ACCEPT = "application/json, text/event-stream"
MODERN = "2026-07-28"
MODERN_META = {
    "io.modelcontextprotocol/protocolVersion": MODERN,
    "io.modelcontextprotocol/clientCapabilities": {},
}


def rpc_body(response: httpx2.Response) -> dict[str, Any]:
    """The JSON-RPC message of a response, whether sent as JSON or as one SSE event."""
    if response.headers.get("content-type", "").startswith("text/event-stream"):
        data = [line[5:].strip() for line in response.text.splitlines() if line.startswith("data:")]
        payloads = [json.loads(d) for d in data if d]
        return next(p for p in payloads if "id" in p)
    body: dict[str, Any] = response.json()
    return body


def modern_headers(method: str, **extra: str) -> dict[str, str]:
    return {"Accept": ACCEPT, "MCP-Protocol-Version": MODERN, "Mcp-Method": method, **extra}


async def initialize(http: httpx2.AsyncClient, url: str) -> str:
    """Open a 2025-11-25 session and return its id."""
    response = await http.post(
        url,
        headers={"Accept": ACCEPT},
        json={
            "jsonrpc": "2.0",
            "id": 0,
            "method": "initialize",
            "params": {
                "protocolVersion": "2025-11-25",
                "capabilities": {},
                "clientInfo": {"name": "raw", "version": "0"},
            },
        },
    )
    assert response.status_code == 200, response.text
    session_id = response.headers["mcp-session-id"]
    headers = {"Accept": ACCEPT, "Mcp-Session-Id": session_id, "MCP-Protocol-Version": "2025-11-25"}
    await http.post(url, headers=headers, json={"jsonrpc": "2.0", "method": "notifications/initialized"})
    return session_id


@pytest.fixture
async def gateway(start_gateway: StartGateway, kv: KeyValue) -> RunningGateway:
    await put_tools(kv, ADD)
    return await start_gateway()


@pytest.mark.parametrize("era_headers", [{}, {"MCP-Protocol-Version": MODERN, "Mcp-Method": "tools/list"}])
async def test_malformed_json_is_a_parse_error(gateway: RunningGateway, era_headers: dict[str, str]) -> None:
    async with httpx2.AsyncClient() as http:
        response = await http.post(
            gateway.url,
            headers={"Accept": ACCEPT, "Content-Type": "application/json", **era_headers},
            content=b'{"jsonrpc": "2.0", "id": 1, "method": ',
        )
    assert response.status_code == 400
    body = rpc_body(response)
    assert body["error"]["code"] == -32700
    assert body["id"] is None


async def test_unknown_method_is_method_not_found_in_a_2025_session(gateway: RunningGateway) -> None:
    async with httpx2.AsyncClient() as http:
        session_id = await initialize(http, gateway.url)
        response = await http.post(
            gateway.url,
            headers={"Accept": ACCEPT, "Mcp-Session-Id": session_id, "MCP-Protocol-Version": "2025-11-25"},
            json={"jsonrpc": "2.0", "id": 7, "method": "tools/frobnicate", "params": {}},
        )
    body = rpc_body(response)
    assert body["id"] == 7
    assert body["error"]["code"] == -32601


async def test_unknown_method_is_method_not_found_in_2026(gateway: RunningGateway) -> None:
    async with httpx2.AsyncClient() as http:
        response = await http.post(
            gateway.url,
            headers=modern_headers("tools/frobnicate"),
            json={"jsonrpc": "2.0", "id": 8, "method": "tools/frobnicate", "params": {"_meta": MODERN_META}},
        )
    assert response.status_code == 404
    body = rpc_body(response)
    assert body["id"] == 8
    assert body["error"]["code"] == -32601


async def test_2026_requests_are_stateless_on_the_same_url(gateway: RunningGateway) -> None:
    async with httpx2.AsyncClient() as http:
        response = await http.post(
            gateway.url,
            headers=modern_headers("tools/list"),
            json={"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {"_meta": MODERN_META}},
        )
    assert response.status_code == 200
    assert "mcp-session-id" not in response.headers
    body = rpc_body(response)
    assert [t["name"] for t in body["result"]["tools"]] == ["add"]
    assert body["result"]["resultType"] == "complete"


async def test_a_2025_tools_call_with_a_bad_argument_is_a_tool_error(gateway: RunningGateway) -> None:
    async with httpx2.AsyncClient() as http:
        session_id = await initialize(http, gateway.url)
        response = await http.post(
            gateway.url,
            headers={"Accept": ACCEPT, "Mcp-Session-Id": session_id, "MCP-Protocol-Version": "2025-11-25"},
            json={"jsonrpc": "2.0", "id": 3, "method": "tools/call", "params": {"name": "add", "arguments": {"a": 1}}},
        )
    result = rpc_body(response)["result"]
    assert result["isError"] is True
    assert "b: required argument is missing" in result["content"][0]["text"]


@pytest.mark.parametrize("era_headers", [{}, modern_headers("tools/list")])
async def test_a_foreign_host_header_is_refused(gateway: RunningGateway, era_headers: dict[str, str]) -> None:
    async with httpx2.AsyncClient() as http:
        response = await http.post(
            gateway.url,
            headers={"Accept": ACCEPT, **era_headers, "Host": "evil.example"},
            json={"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {"_meta": MODERN_META}},
        )
    assert response.status_code in (403, 421)


@pytest.mark.parametrize("era_headers", [{}, modern_headers("tools/list")])
async def test_a_foreign_origin_is_refused(gateway: RunningGateway, era_headers: dict[str, str]) -> None:
    async with httpx2.AsyncClient() as http:
        response = await http.post(
            gateway.url,
            headers={"Accept": ACCEPT, **era_headers, "Origin": "http://evil.example"},
            json={"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {"_meta": MODERN_META}},
        )
    assert response.status_code == 403


async def test_headers_that_passed_once_let_no_other_values_pass(gateway: RunningGateway) -> None:
    """The hot path remembers header values that passed the transport checks: any other value is
    checked afresh, and of a repeated header the first copy counts, as the SDK reads it."""
    body = {"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {"_meta": MODERN_META}}
    good = {**modern_headers("tools/list"), "Origin": "http://localhost:6274"}
    async with httpx2.AsyncClient() as http:
        for _ in range(2):
            assert (await http.post(gateway.url, headers=good, json=body)).status_code == 200
        foreign = {**good, "Origin": "http://evil.example"}
        assert (await http.post(gateway.url, headers=foreign, json=body)).status_code == 403
        repeated = [*((k, v) for k, v in good.items() if k != "Origin")]
        repeated += [("Origin", "http://evil.example"), ("Origin", "http://localhost:6274")]
        assert (await http.post(gateway.url, headers=repeated, json=body)).status_code == 403


async def test_a_loopback_origin_is_accepted(gateway: RunningGateway) -> None:
    async with httpx2.AsyncClient() as http:
        response = await http.post(
            gateway.url,
            headers={**modern_headers("tools/list"), "Origin": "http://localhost:6274"},
            json={"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {"_meta": MODERN_META}},
        )
    assert response.status_code == 200


async def test_configured_hosts_and_origins_are_accepted(start_gateway: StartGateway, kv: KeyValue) -> None:
    gateway = await start_gateway(allowed_hosts=["mcp.example.com"], allowed_origins=["https://app.example.com"])
    async with httpx2.AsyncClient() as http:
        response = await http.post(
            gateway.url,
            headers={
                **modern_headers("tools/list"),
                "Host": "mcp.example.com",
                "Origin": "https://app.example.com",
            },
            json={"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {"_meta": MODERN_META}},
        )
    assert response.status_code == 200


async def test_healthz_and_readyz_report_nats_and_the_catalogue(gateway: RunningGateway) -> None:
    async with httpx2.AsyncClient() as http:
        for probe in ("/healthz", "/readyz"):
            response = await http.get(gateway.base_url + probe)
            assert response.status_code == 200, probe
            assert response.json() == {"status": "ok", "nats": "connected", "catalogueLoaded": True, "tools": 1}


async def test_a_2025_session_gets_its_get_stream(gateway: RunningGateway) -> None:
    async with httpx2.AsyncClient() as http:
        session_id = await initialize(http, gateway.url)
        headers = {"Accept": "text/event-stream", "Mcp-Session-Id": session_id, "MCP-Protocol-Version": "2025-11-25"}
        async with http.stream("GET", gateway.url, headers=headers) as response:
            assert response.status_code == 200
            assert response.headers["content-type"].startswith("text/event-stream")
        closed = await http.delete(gateway.url, headers=headers)
        assert closed.status_code == 200


async def test_without_nats_the_gateway_is_alive_but_not_ready(gateway: RunningGateway) -> None:
    assert gateway.state.nc is not None
    await gateway.state.nc.close()
    async with httpx2.AsyncClient() as http:
        alive = await http.get(gateway.base_url + "/healthz")
        ready = await http.get(gateway.base_url + "/readyz")
    assert alive.status_code == 200
    assert ready.status_code == 503
    assert ready.json()["nats"] == "disconnected" and ready.json()["status"] == "unavailable"


async def test_a_gateway_process_freezes_its_heap_once_started(
    nats_server: EmbeddedNatsServer, subjects: Subjects
) -> None:
    """Full collections under load must not walk what start-up made (a 45-99 ms loop stall, a p99
    tail): ``gateway.app.serve`` freezes it. A server in a test process leaves the heap alone."""
    settings = load_settings(None, nats={"url": nats_server.url, "prefix": subjects.prefix})
    gc.unfreeze()
    thresholds = gc.get_threshold()
    try:
        async with running_gateway(settings):
            assert gc.get_freeze_count() == 0
            assert gc.get_threshold() == thresholds
        async with running_gateway(settings, freeze_heap=True):
            assert gc.get_freeze_count() > 0
            # A call makes no cyclic garbage: young collections can be rare (gateway.app).
            assert gc.get_threshold() == (YOUNG_COLLECTION_THRESHOLD, *thresholds[1:])
    finally:
        gc.unfreeze()
        gc.set_threshold(*thresholds)
