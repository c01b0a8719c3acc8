"""The relay behind ``toolbus stdio`` (``cli.stdio`` says why it relays to a gateway): JSON-RPC
messages pumped between this process's stdin/stdout and a gateway's Streamable HTTP endpoint,
with the HTTP headers each message's era needs."""

from __future__ import annotations

import sys
from collections.abc import Mapping
from typing import Any

import anyio
from mcp.client.streamable_http import streamable_http_client
from mcp.server.stdio import stdio_server
from mcp.shared._httpx_utils import create_mcp_http_client
from mcp.shared.inbound import (
    MCP_METHOD_HEADER,
    MCP_NAME_HEADER,
    MCP_PROTOCOL_VERSION_HEADER,
    NAME_BEARING_METHODS,
    encode_header_value,
    mcp_param_headers,
    x_mcp_header_map,
)
from mcp.shared.message import ClientMessageMetadata, SessionMessage
from mcp_types import PROTOCOL_VERSION_META_KEY
from mcp_types.version import MODERN_PROTOCOL_VERSIONS

DRAIN_S = 10.0
"""After stdin ends, answers still due are relayed for at most this long (``echo REQUEST | toolbus
stdio`` gets its answer; a desktop client that closed stdin has gone and is not kept waiting)."""


async def relay(url: str, token: str | None) -> None:
    """Pump messages between this process's stdio and the gateway at ``url`` until stdin ends."""
    headers = {"Authorization": f"Bearer {token}"} if token else None
    seen = Traffic()
    async with stdio_server() as (client_in, client_out):
        async with (
            create_mcp_http_client(headers=headers) as http,
            streamable_http_client(url, http_client=http) as (gateway_in, gateway_out),
            anyio.create_task_group() as tasks,
        ):
            tasks.start_soon(_to_client, gateway_in, client_out, seen)
            await _to_gateway(client_in, gateway_out, seen)
            with anyio.move_on_after(DRAIN_S):
                await seen.all_answered()
            tasks.cancel_scope.cancel()
        await client_out.aclose()  # ends the stdio server's writer


async def _to_gateway(client_in: Any, gateway_out: Any, seen: Traffic) -> None:
    async for item in client_in:
        if isinstance(item, Exception):  # a line that is not JSON-RPC: nothing to relay
            print(f"toolbus stdio: ignored a message that is not JSON-RPC: {item}", file=sys.stderr)
            continue
        extra = seen.request(item.message.model_dump(by_alias=True, mode="json", exclude_unset=True))
        metadata = ClientMessageMetadata(headers=extra) if extra else None
        await gateway_out.send(SessionMessage(item.message, metadata=metadata))


async def _to_client(gateway_in: Any, client_out: Any, seen: Traffic) -> None:
    async for item in gateway_in:
        if isinstance(item, Exception):  # the transport's own failure; the request it hit gets an error
            print(f"toolbus stdio: {item}", file=sys.stderr)
            continue
        await client_out.send(item)
        seen.response(item.message.model_dump(by_alias=True, mode="json", exclude_unset=True))


class Traffic:
    """What the relay has seen pass by: the HTTP headers each message needs follow from it, and
    which of the client's requests still await their answer."""

    def __init__(self) -> None:
        self.negotiated: str | None = None
        """The 2025-era version the gateway's ``initialize`` result named (sent on every later request)."""
        self._unanswered: dict[Any, str] = {}
        """The client's request ids not yet answered -> their method."""
        self._quiet = anyio.Event()
        self._param_headers: dict[str, dict[tuple[str, ...], str]] = {}
        """Tool name -> its ``x-mcp-header`` map, from relayed ``tools/list`` results."""

    async def all_answered(self) -> None:
        """Return once no request of the client's awaits an answer."""
        while self._unanswered:
            self._quiet = anyio.Event()
            await self._quiet.wait()

    def request(self, wire: Mapping[str, Any]) -> dict[str, str]:
        """Note a message from the client; the HTTP headers it needs."""
        method = wire.get("method")
        if not isinstance(method, str):  # a response to one of the gateway's requests
            return {MCP_PROTOCOL_VERSION_HEADER: self.negotiated} if self.negotiated else {}
        if "id" in wire:
            self._unanswered[wire["id"]] = method
        params = _object(wire.get("params"))
        meta = _object(params.get("_meta"))
        version = meta.get(PROTOCOL_VERSION_META_KEY)
        if version not in MODERN_PROTOCOL_VERSIONS:
            return {MCP_PROTOCOL_VERSION_HEADER: self.negotiated} if self.negotiated else {}
        headers = {MCP_PROTOCOL_VERSION_HEADER: version, MCP_METHOD_HEADER: method}
        name_key = NAME_BEARING_METHODS.get(method)
        if name_key is not None and isinstance(name := params.get(name_key), str):
            headers[MCP_NAME_HEADER] = encode_header_value(name)
        if method == "tools/call" and isinstance(name := params.get("name"), str):
            arguments = _object(params.get("arguments"))
            headers.update(mcp_param_headers(self._param_headers.get(name, {}), arguments))
        return headers

    def response(self, wire: Mapping[str, Any]) -> None:
        """Note a message from the gateway: an answer, or what the gateway sends on its own."""
        if "method" in wire or "id" not in wire:
            return  # a notification or a request of the gateway's
        method = self._unanswered.pop(wire["id"], None)
        if not self._unanswered:
            self._quiet.set()
        result = wire.get("result")
        if not isinstance(result, dict):
            return
        if method == "initialize" and isinstance(result.get("protocolVersion"), str):
            self.negotiated = result["protocolVersion"]
        elif method == "tools/list":
            for tool in result.get("tools", []):
                if isinstance(tool, dict) and isinstance(tool.get("name"), str):
                    self._param_headers[tool["name"]] = x_mcp_header_map(tool.get("inputSchema") or {})


def _object(value: Any) -> dict[str, Any]:
    """``value`` when it is a JSON object, else an empty one (a malformed message is the gateway's to refuse)."""
    return value if isinstance(value, dict) else {}
