"""Raw HTTP to a gateway's MCP endpoint, in either era, for tests whose point is the exact bytes.

The mcp SDK's client turns every HTTP 4xx into one generic error and never sends an odd body;
an attacker does both. ``RawMcp`` posts any bytes with the headers of its era: 2026-07-28 with
``Mcp-Protocol-Version``/``Mcp-Method``/``Mcp-Name``, 2025-11-25 on a session it opens first.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Final

import httpx2

MODERN: Final = "2026-07-28"
LEGACY: Final = "2025-11-25"
ERAS: Final = (LEGACY, MODERN)
ACCEPT: Final = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}
MODERN_META: Final = {
    "io.modelcontextprotocol/protocolVersion": MODERN,
    "io.modelcontextprotocol/clientCapabilities": {},
}
"""What every 2026-07-28 request carries in ``params._meta``."""


def credential_headers(credential: str | None) -> dict[str, str]:
    return {} if credential is None else {"Authorization": f"Bearer {credential}"}


async def open_session(url: str, credential: str | None = None) -> httpx2.Response:
    """A 2025-era ``initialize`` (then ``notifications/initialized`` when it opened a session)."""
    headers = {**ACCEPT, **credential_headers(credential)}
    body = {
        "jsonrpc": "2.0",
        "id": 0,
        "method": "initialize",
        "params": {"protocolVersion": LEGACY, "capabilities": {}, "clientInfo": {"name": "raw", "version": "1"}},
    }
    async with httpx2.AsyncClient(timeout=30) as http:
        response = await http.post(url, json=body, headers=headers)
        session_id = response.headers.get("mcp-session-id")
        if response.status_code == 200 and session_id:
            initialized = {"jsonrpc": "2.0", "method": "notifications/initialized"}
            headers = {**headers, "Mcp-Session-Id": session_id, "Mcp-Protocol-Version": LEGACY}
            done = await http.post(url, json=initialized, headers=headers)
            assert done.status_code == 202, done.text
    return response


@dataclass
class RawMcp:
    """Posts raw bodies to ``url`` as ``credential`` in ``era`` (a 2025 session is opened on first use)."""

    url: str
    era: str
    credential: str | None = None
    session_id: str | None = None
    sent: list[httpx2.Response] = field(default_factory=list)

    @property
    def modern(self) -> bool:
        return self.era == MODERN

    async def headers(self, method: str = "tools/call", tool: str | None = None) -> dict[str, str]:
        headers = {**ACCEPT, **credential_headers(self.credential), "Mcp-Protocol-Version": self.era}
        if self.modern:
            headers["Mcp-Method"] = method
            if tool is not None:
                headers["Mcp-Name"] = tool
        else:
            if self.session_id is None:
                opened = await open_session(self.url, self.credential)
                assert opened.status_code == 200, opened.text
                self.session_id = opened.headers["mcp-session-id"]
            headers["Mcp-Session-Id"] = self.session_id
        return headers

    async def post(
        self, body: bytes, *, method: str = "tools/call", tool: str | None = None, **extra: str
    ) -> httpx2.Response:
        headers = {**await self.headers(method, tool), **extra}
        async with httpx2.AsyncClient(timeout=30) as http:
            response = await http.post(self.url, content=body, headers=headers)
        self.sent.append(response)
        return response

    def call_body(self, tool: str, arguments: dict[str, Any], **params: Any) -> bytes:
        """A ``tools/call`` as this era's client sends it (the 2026 ``_meta`` included)."""
        meta = {**(MODERN_META if self.modern else {}), **params.pop("_meta", {})}
        all_params = {"name": tool, "arguments": arguments, **params, **({"_meta": meta} if meta else {})}
        return json.dumps({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": all_params}).encode()

    async def call(self, tool: str, arguments: dict[str, Any], **params: Any) -> httpx2.Response:
        return await self.post(self.call_body(tool, arguments, **params), tool=tool)


def jsonrpc_error(response: httpx2.Response) -> int | None:
    """The JSON-RPC error code of a JSON or single-event SSE answer, or ``None`` when it has none."""
    text = response.text
    if response.headers.get("content-type", "").startswith("text/event-stream"):
        data = [line[5:] for line in text.splitlines() if line.startswith("data:")]
        text = data[-1] if data else "{}"
    try:
        message = json.loads(text)
    except ValueError:
        return None
    error = message.get("error") if isinstance(message, dict) else None
    return error.get("code") if isinstance(error, dict) else None
