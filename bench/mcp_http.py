"""The MCP requests of the bench, spelled out byte for byte, and a small blocking client for them.

wrk sends exactly what ``call_request`` builds; the client here does what wrk cannot: the
2025-11-25 handshake before a run, probes, and ``tools/list`` with pagination. It speaks plain
HTTP/1.1 with keep-alive (``http.client``), so it adds little of its own to a latency.
"""

from __future__ import annotations

import http.client
import json
from dataclasses import dataclass, field
from typing import Any, Final
from urllib.parse import urlsplit

ERA_2025: Final = "2025-11-25"
ERA_2026: Final = "2026-07-28"
ERAS: Final = (ERA_2025, ERA_2026)

ACCEPT: Final = "application/json, text/event-stream"
CLIENT_INFO: Final = {"name": "toolbus-bench", "version": "1"}
ID_MARK: Final = "{id}"
"""Stands for the JSON-RPC id in a request template; wrk gives every request its own id."""
TIMEOUT_S: Final = 30.0


class McpHttpError(RuntimeError):
    """Raised when a server answers something other than a JSON-RPC result."""


def envelope(era: str) -> dict[str, Any]:
    """The 2026-07-28 per-request ``_meta`` envelope (empty for the handshake era)."""
    if era != ERA_2026:
        return {}
    return {
        "io.modelcontextprotocol/protocolVersion": ERA_2026,
        "io.modelcontextprotocol/clientInfo": CLIENT_INFO,
        "io.modelcontextprotocol/clientCapabilities": {},
    }


def request_headers(era: str, method: str, name: str | None = None, session_id: str | None = None) -> dict[str, str]:
    """HTTP headers of one MCP POST as ``mcp.Client`` sends them in that era."""
    headers = {"Accept": ACCEPT, "Content-Type": "application/json", "MCP-Protocol-Version": era}
    if era == ERA_2026:
        headers["Mcp-Method"] = method
        if name is not None:
            headers["Mcp-Name"] = name
    if session_id:
        headers["Mcp-Session-Id"] = session_id
    return headers


def request_body(era: str, method: str, params: dict[str, Any] | None = None, request_id: int | str = 1) -> str:
    """A JSON-RPC request; in the 2026 era ``params._meta`` carries the envelope."""
    params = dict(params or {})
    meta = envelope(era)
    if meta:
        params["_meta"] = meta
    message: dict[str, Any] = {"jsonrpc": "2.0", "id": request_id, "method": method}
    if params:
        message["params"] = params
    return json.dumps(message, separators=(",", ":"))


def call_template(era: str, tool: str, arguments: dict[str, Any]) -> str:
    """The body of a ``tools/call`` with ``ID_MARK`` where the request id goes."""
    body = request_body(era, "tools/call", {"name": tool, "arguments": arguments}, request_id=0)
    return body.replace('"id":0', '"id":' + ID_MARK, 1)


def parse_response(content_type: str, body: bytes) -> dict[str, Any]:
    """The JSON-RPC message of a response that is JSON or an SSE stream (its last ``data:`` event)."""
    if content_type.startswith("text/event-stream"):
        events = [line[5:].strip() for line in body.decode().splitlines() if line.startswith("data:")]
        messages = [json.loads(e) for e in events if e]
        replies = [m for m in messages if "result" in m or "error" in m]
        if not replies:
            raise McpHttpError(f"SSE response without a result: {body[:300]!r}")
        return dict(replies[-1])
    return dict(json.loads(body))


@dataclass
class McpClient:
    """A keep-alive MCP client for one URL and one protocol era."""

    url: str
    era: str
    session_id: str | None = None
    _next_id: int = 0
    _conn: http.client.HTTPConnection | None = field(default=None, repr=False)

    def _connection(self) -> http.client.HTTPConnection:
        if self._conn is None:
            parts = urlsplit(self.url)
            self._conn = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=TIMEOUT_S)
        return self._conn

    def post(self, body: str, headers: dict[str, str]) -> tuple[int, dict[str, str], bytes]:
        """POST one body; return status, headers (lower-case names) and the whole body."""
        conn = self._connection()
        try:
            conn.request("POST", urlsplit(self.url).path, body=body.encode(), headers=headers)
            response = conn.getresponse()
            data = response.read()
        except (OSError, http.client.HTTPException):
            self.close()
            raise
        return response.status, {k.lower(): v for k, v in response.getheaders()}, data

    def rpc(self, method: str, params: dict[str, Any] | None = None, *, name: str | None = None) -> dict[str, Any]:
        """One request; return its ``result``.

        Raises:
            McpHttpError: the status is not 200 or the reply is a JSON-RPC error.
        """
        self._next_id += 1
        body = request_body(self.era, method, params, self._next_id)
        status, headers, data = self.post(body, request_headers(self.era, method, name, self.session_id))
        if status != 200:
            raise McpHttpError(f"{method}: HTTP {status}: {data[:300]!r}")
        message = parse_response(headers.get("content-type", ""), data)
        if "error" in message:
            raise McpHttpError(f"{method}: {message['error']}")
        return dict(message["result"])

    def handshake(self) -> str | None:
        """2025-11-25: ``initialize`` then ``notifications/initialized``; return the session id, if any.

        A stateless server (the SDK baseline) answers without a session id; requests then carry
        only ``MCP-Protocol-Version``.
        """
        if self.era != ERA_2025:
            return None
        self._next_id += 1
        params = {"protocolVersion": ERA_2025, "capabilities": {}, "clientInfo": CLIENT_INFO}
        body = request_body(ERA_2025, "initialize", params, self._next_id)
        headers = {"Accept": ACCEPT, "Content-Type": "application/json"}
        status, reply_headers, data = self.post(body, headers)
        if status != 200:
            raise McpHttpError(f"initialize: HTTP {status}: {data[:300]!r}")
        parse_response(reply_headers.get("content-type", ""), data)
        self.session_id = reply_headers.get("mcp-session-id")
        note = json.dumps({"jsonrpc": "2.0", "method": "notifications/initialized"})
        status, _, data = self.post(note, request_headers(ERA_2025, "notifications/initialized", None, self.session_id))
        if status not in (200, 202):
            raise McpHttpError(f"notifications/initialized: HTTP {status}: {data[:300]!r}")
        return self.session_id

    def end_session(self) -> None:
        """DELETE the session (if the server gave one) so it does not linger in the server."""
        if self.session_id:
            conn = self._connection()
            headers = {"Mcp-Session-Id": self.session_id, "MCP-Protocol-Version": self.era}
            try:
                conn.request("DELETE", urlsplit(self.url).path, headers=headers)
                conn.getresponse().read()
            except (OSError, http.client.HTTPException):
                self.close()
            self.session_id = None

    def call_tool(self, tool: str, arguments: dict[str, Any]) -> dict[str, Any]:
        """``tools/call``; return the ``CallToolResult``."""
        return self.rpc("tools/call", {"name": tool, "arguments": arguments}, name=tool)

    def list_tools(self, cursor: str | None = None) -> dict[str, Any]:
        """One page of ``tools/list``."""
        return self.rpc("tools/list", {"cursor": cursor} if cursor else None)

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
