"""The one error boundary (``gateway.boundary``): an exception becomes a JSON-RPC error, never a traceback."""

from __future__ import annotations

import json

import pytest
from starlette.types import Message, Receive, Scope, Send

from gateway.boundary import INTERNAL_ERROR_MESSAGE, ErrorBoundary


async def failing(scope: Scope, receive: Receive, send: Send) -> None:
    raise RuntimeError("secret detail: /etc/toolbus/key")


async def failing_midway(scope: Scope, receive: Receive, send: Send) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    raise RuntimeError("secret detail")


async def serve(app: ErrorBoundary) -> list[Message]:
    sent: list[Message] = []

    async def receive() -> Message:
        return {"type": "http.request", "body": b"{}", "more_body": False}

    async def send(message: Message) -> None:
        # As uvicorn (and every ASGI server) does: a second response start is a protocol error.
        if message["type"] == "http.response.start" and any(m["type"] == message["type"] for m in sent):
            raise RuntimeError("Unexpected ASGI message 'http.response.start' sent, after response already started.")
        sent.append(message)

    await app({"type": "http", "method": "POST", "path": "/mcp", "headers": []}, receive, send)
    return sent


async def test_an_exception_becomes_a_json_rpc_internal_error() -> None:
    start, body = await serve(ErrorBoundary(failing))
    assert start["status"] == 500
    answer = json.loads(body["body"])
    assert answer == {"jsonrpc": "2.0", "id": None, "error": {"code": -32603, "message": INTERNAL_ERROR_MESSAGE}}
    assert b"secret" not in body["body"] and b"Traceback" not in body["body"]


async def test_after_the_answer_started_the_connection_is_ended_instead() -> None:
    with pytest.raises(RuntimeError, match="secret detail"):  # the app's own error, for the server to end on
        await serve(ErrorBoundary(failing_midway))
