"""Attacks on one-write responses (``gateway.response_write``): the head of a response of known
length is held until its body. A client tries to make a held head go missing, go to the wrong
request, or stall: ``Expect: 100-continue`` (an interim response before any body), pipelined
requests on one connection (a cycle made while another answers), a client that reads nothing.
Raw sockets against a real gateway (uvicorn, the SDK's session manager).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable

import pytest
from nats.js.kv import KeyValue

from tests.gateway.responders import ADD, RunningGateway, put_tools
from tests.gateway.test_gateway_http import MODERN_META, modern_headers

StartGateway = Callable[..., Awaitable[RunningGateway]]
WAIT_S = 10.0
"""Bound on every read: a head held forever fails the test instead of hanging it."""


@pytest.fixture
async def gateway(start_gateway: StartGateway, kv: KeyValue) -> RunningGateway:
    await put_tools(kv, ADD)
    return await start_gateway()


def request_bytes(gateway: RunningGateway, rpc_id: int, *extra: str, body: bytes | None = None) -> tuple[bytes, bytes]:
    """A modern ``tools/list`` POST: its head and its body."""
    if body is None:
        body = json.dumps({"jsonrpc": "2.0", "id": rpc_id, "method": "tools/list", "params": {"_meta": MODERN_META}})
        body = body.encode()
    lines = [f"POST {gateway.settings.gateway.path} HTTP/1.1", f"Host: 127.0.0.1:{gateway.port}"]
    lines += [f"{k}: {v}" for k, v in modern_headers("tools/list").items()]
    lines += ["Content-Type: application/json", f"Content-Length: {len(body)}", *extra]
    return ("\r\n".join(lines) + "\r\n\r\n").encode(), body


async def read_response(reader: asyncio.StreamReader) -> tuple[int, dict[str, str], bytes]:
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), WAIT_S)
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in header_lines if line)}
    length = int(headers.get("content-length", "0"))
    body = await asyncio.wait_for(reader.readexactly(length), WAIT_S) if length else b""
    return int(status_line.split()[1]), headers, body


async def test_expect_100_continue_gets_its_interim_answer_before_the_body(gateway: RunningGateway) -> None:
    head, body = request_bytes(gateway, 7, "Expect: 100-continue")
    reader, writer = await asyncio.open_connection("127.0.0.1", gateway.port)
    try:
        writer.write(head)
        await writer.drain()
        # The interim answer has no body: were it held for one, client and server would wait forever.
        interim = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), WAIT_S)
        assert interim.startswith(b"HTTP/1.1 100 "), interim
        writer.write(body)
        status, _, answer = await read_response(reader)
        assert status == 200, answer
        assert json.loads(answer)["id"] == 7
    finally:
        writer.close()


async def test_pipelined_requests_each_get_their_own_whole_answer_in_order(gateway: RunningGateway) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", gateway.port)
    try:
        burst = b""
        for rpc_id in range(1, 6):
            head, body = request_bytes(gateway, rpc_id)
            burst += head + body
        # A bad one in the middle: its (refused, known-length) answer must not swallow the next head.
        head, body = request_bytes(gateway, 0, body=b"{not json")
        burst += head + body
        head, body = request_bytes(gateway, 6)
        writer.write(burst + head + body)
        ids = []
        for _ in range(7):
            status, _, answer = await read_response(reader)
            message = json.loads(answer)
            if "error" in message and message.get("id") is None:
                ids.append(None)
                continue
            assert status == 200, answer
            ids.append(message["id"])
        assert ids == [1, 2, 3, 4, 5, None, 6]
    finally:
        writer.close()


async def test_a_client_that_reads_nothing_does_not_stall_another(gateway: RunningGateway) -> None:
    """Many answers written to a client that never reads: the gateway's buffers fill for that
    connection alone (uvicorn's flow control), and another client is answered meanwhile."""
    _, stalled = await asyncio.open_connection("127.0.0.1", gateway.port)
    try:
        for rpc_id in range(2000):
            head, body = request_bytes(gateway, rpc_id)
            stalled.write(head + body)
        reader, writer = await asyncio.open_connection("127.0.0.1", gateway.port)
        try:
            head, body = request_bytes(gateway, 99)
            writer.write(head + body)
            status, _, answer = await read_response(reader)
            assert status == 200 and json.loads(answer)["id"] == 99
        finally:
            writer.close()
    finally:
        stalled.close()
