"""The lean hot path answers exactly as the SDK path does, for the same requests, in both eras.

Two gateways share one NATS deployment and one real worker (the testkit component): one
with ``hot_path`` on, one with it off. Every request below goes to both, and the HTTP
status and the JSON-RPC message must match (a 2025 SDK answer framed as SSE is unwrapped).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import httpx2 as httpx
import pytest
from nats.aio.client import Client as NatsClient
from nats.js.kv import KeyValue

from bus.subjects import Subjects
from gateway.app import hot_path
from gateway.hotpath import HotPath
from schemas.config import WorkerSettings
from schemas.wire import ToolDescriptor
from tests.gateway.responders import RunningGateway, put_tools
from workers.sandbox.component import LoadedComponent
from workers.service import WorkerService

MODERN = "2026-07-28"
LEGACY = "2025-11-25"
ACCEPT = "application/json, text/event-stream"
META = {"io.modelcontextprotocol/protocolVersion": MODERN, "io.modelcontextprotocol/clientCapabilities": {}}
LOG_LEVEL = "io.modelcontextprotocol/logLevel"
GHOST = ToolDescriptor(name="ghost", input_schema={"type": "object"})
"""A tool in the catalogue that no worker serves."""


@dataclass
class Endpoint:
    """One gateway, with a 2025 session already established on it."""

    gateway: RunningGateway
    client: httpx.AsyncClient
    session_id: str

    @property
    def hot(self) -> HotPath | None:
        return hot_path(self.gateway.app)


async def open_endpoint(gateway: RunningGateway) -> Endpoint:
    client = httpx.AsyncClient(timeout=10)
    headers = {"Accept": ACCEPT, "Content-Type": "application/json"}
    initialize = {
        "jsonrpc": "2.0",
        "id": 0,
        "method": "initialize",
        "params": {"protocolVersion": LEGACY, "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}},
    }
    opened = await client.post(gateway.url, headers=headers, json=initialize)
    session_id = opened.headers["mcp-session-id"]
    headers |= {"Mcp-Session-Id": session_id, "MCP-Protocol-Version": LEGACY}
    await client.post(gateway.url, headers=headers, json={"jsonrpc": "2.0", "method": "notifications/initialized"})
    return Endpoint(gateway, client, session_id)


@pytest.fixture
async def endpoints(
    start_gateway: Callable[..., Awaitable[RunningGateway]],
    kv: KeyValue,
    nc: NatsClient,
    subjects: Subjects,
    kit: LoadedComponent,
) -> AsyncIterator[tuple[Endpoint, Endpoint]]:
    worker = WorkerService(nc, subjects, WorkerSettings(concurrency=2), [kit])
    await worker.start()
    await put_tools(kv, *kit.tools, GHOST)
    hot = await open_endpoint(await start_gateway(hot_path=True, page_size=3))
    sdk = await open_endpoint(await start_gateway(hot_path=False, page_size=3))
    assert hot.hot is not None and sdk.hot is None
    yield hot, sdk
    for endpoint in (hot, sdk):
        await endpoint.client.aclose()
    await worker.stop(grace_s=1)


def message_of(response: httpx.Response) -> Any:
    """The JSON-RPC message of a response, whether sent as JSON or as an SSE event."""
    content_type = response.headers.get("content-type", "")
    if content_type.startswith("text/event-stream"):
        events = [line[5:].strip() for line in response.text.splitlines() if line.startswith("data:")]
        messages = [json.loads(e) for e in events if e]
        return next(m for m in messages if "id" in m)
    if content_type.startswith("application/json") and response.content:
        return response.json()
    return response.text


async def post(
    endpoint: Endpoint, era: str, body: Any, headers: dict[str, str] | list[tuple[str, str]] | None = None
) -> httpx.Response:
    """POST ``body`` in ``era``; ``headers`` as a dict replace the defaults, as a list are sent as extra lines."""
    base = {"Accept": ACCEPT, "Content-Type": "application/json"}
    if era == MODERN and isinstance(body, dict):
        base |= {"MCP-Protocol-Version": MODERN, "Mcp-Method": str(body.get("method"))}
        if body.get("method") == "tools/call":
            base["Mcp-Name"] = str(body.get("params", {}).get("name"))
    elif era == MODERN:
        base |= {"MCP-Protocol-Version": MODERN, "Mcp-Method": "tools/call", "Mcp-Name": "kit_add"}
    else:
        base |= {"Mcp-Session-Id": endpoint.session_id, "MCP-Protocol-Version": LEGACY}
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    lines = [*base.items(), *headers] if isinstance(headers, list) else list((base | (headers or {})).items())
    return await endpoint.client.post(endpoint.gateway.url, headers=lines, content=content)


def request(era: str, method: str, params: dict[str, Any]) -> dict[str, Any]:
    if era == MODERN:
        params = {**params, "_meta": {**params.get("_meta", {}), **META}}
    return {"jsonrpc": "2.0", "id": 7, "method": method, "params": params}


def call(era: str, name: str, arguments: Any = None, **extra: Any) -> dict[str, Any]:
    params: dict[str, Any] = {"name": name, **extra}
    if arguments is not None:
        params["arguments"] = arguments
    return request(era, "tools/call", params)


ITEM = {"name": "x", "color": "green-blue", "count": 3, "tags": ["a"]}

# (label, body builder, served by the hot path?)
CASES: list[tuple[str, Callable[[str], Any], bool]] = [
    ("int result", lambda era: call(era, "kit_add", {"a": 2, "b": 3}), True),
    ("object result", lambda era: call(era, "kit_echo_item", {"item": ITEM}), True),
    ("string result", lambda era: call(era, "kit_greet", {"name": "ada"}), True),
    ("err result", lambda era: call(era, "kit_divide", {"a": 1, "b": 0}), True),
    ("trap", lambda era: call(era, "kit_danger_boom", {}), True),
    ("wrong argument type", lambda era: call(era, "kit_add", {"a": 2, "b": "x"}), True),
    ("missing arguments", lambda era: call(era, "kit_add"), True),
    ("unknown tool", lambda era: call(era, "kit_subtract", {"a": 1}), True),
    ("no worker", lambda era: call(era, "ghost", {}), True),
    ("first page", lambda era: request(era, "tools/list", {}), True),
    ("bad cursor", lambda era: request(era, "tools/list", {"cursor": "nope"}), True),
    ("arguments not an object", lambda era: call(era, "kit_add", [1, 2]), False),
    ("name not a string", lambda era: call(era, 42), False),
    ("progress token", lambda era: call(era, "kit_add", {"a": 1, "b": 1}, _meta={"progressToken": 1}), False),
    ("log level", lambda era: call(era, "kit_add", {"a": 1, "b": 1}, _meta={LOG_LEVEL: "info"}), False),
    ("list with log level", lambda era: request(era, "tools/list", {"_meta": {LOG_LEVEL: "info"}}), True),
    ("malformed JSON", lambda era: b'{"jsonrpc": "2.0", "id": 7, "method": ', False),
    ("unknown method", lambda era: request(era, "tools/frobnicate", {}), False),
    ("notification", lambda era: {"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {}}, False),
    ("batch", lambda era: [call(era, "kit_add", {"a": 1, "b": 1})], False),
]


@pytest.mark.parametrize("era", [LEGACY, MODERN])
@pytest.mark.parametrize(("label", "body", "hot"), CASES, ids=[c[0] for c in CASES])
async def test_the_hot_path_answers_as_the_sdk_does(
    endpoints: tuple[Endpoint, Endpoint], era: str, label: str, body: Callable[[str], Any], hot: bool
) -> None:
    hot_endpoint, sdk_endpoint = endpoints
    assert hot_endpoint.hot is not None
    served_before = hot_endpoint.hot.served
    from_hot = await post(hot_endpoint, era, body(era))
    from_sdk = await post(sdk_endpoint, era, body(era))
    assert (from_hot.status_code, message_of(from_hot)) == (from_sdk.status_code, message_of(from_sdk))
    assert hot_endpoint.hot.served == served_before + (1 if hot else 0), "answered by the wrong path"
    if hot:  # its answer says how long it is, so uvicorn does not frame it chunked
        assert from_hot.headers.get("content-length") == str(len(from_hot.content)), from_hot.headers
        assert "transfer-encoding" not in from_hot.headers, from_hot.headers


async def test_paging_through_the_catalogue_matches(endpoints: tuple[Endpoint, Endpoint]) -> None:
    for era in (LEGACY, MODERN):
        pages: dict[str, list[Any]] = {}
        for endpoint, name in zip(endpoints, ("hot", "sdk"), strict=True):
            cursor, pages[name] = None, []
            while True:
                params = {"cursor": cursor} if cursor else {}
                message = message_of(await post(endpoint, era, request(era, "tools/list", params)))
                pages[name].append(message)
                cursor = message["result"].get("nextCursor")
                if not cursor:
                    break
        assert pages["hot"] == pages["sdk"]
        assert len(pages["hot"]) >= 3  # page_size 3 over ten tools


@pytest.mark.parametrize(
    ("label", "headers", "modern_only"),
    [
        ("foreign host", {"Host": "evil.example"}, False),
        ("foreign origin", {"Origin": "http://evil.example"}, False),
        ("no SSE in Accept", {"Accept": "application/json"}, False),
        ("wrong content type", {"Content-Type": "text/plain"}, False),
        ("name header mismatch", {"Mcp-Name": "kit_greet"}, True),
        ("version header mismatch", {"MCP-Protocol-Version": "2099-01-01"}, True),
        ("duplicated method header", [("Mcp-Method", "tools/call")], True),
        ("unknown session", {"Mcp-Session-Id": "0" * 32}, False),
    ],
)
async def test_the_same_checks_refuse_the_same_requests(
    endpoints: tuple[Endpoint, Endpoint], label: str, headers: dict[str, str] | list[tuple[str, str]], modern_only: bool
) -> None:
    for era in (MODERN,) if modern_only else (LEGACY, MODERN):
        if label == "unknown session" and era == MODERN:
            continue
        body = call(era, "kit_add", {"a": 2, "b": 3})
        hot_endpoint, sdk_endpoint = endpoints
        from_hot = await post(hot_endpoint, era, body, headers)
        from_sdk = await post(sdk_endpoint, era, body, headers)
        assert from_hot.status_code >= 400, f"{label} ({era}) was accepted"
        assert (from_hot.status_code, message_of(from_hot)) == (from_sdk.status_code, message_of(from_sdk))
