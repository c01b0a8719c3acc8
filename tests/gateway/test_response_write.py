"""A response of known length leaves in one write; a streamed one writes its head at once."""

from __future__ import annotations

import asyncio
import gc
import logging
import weakref
from typing import Any

from uvicorn.protocols.http.flow_control import FlowControl
from uvicorn.protocols.http.httptools_impl import RequestResponseCycle

from gateway.response_write import write_heads_with_bodies

BODY = b'{"jsonrpc":"2.0","id":1,"result":{}}'
KNOWN_LENGTH = [(b"content-type", b"application/json"), (b"content-length", str(len(BODY)).encode())]


class Recording(asyncio.Transport):
    """The socket side of a connection: what was written, and whether it was closed."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: list[bytes] = []
        self.closed = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.writes.append(bytes(data))

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed


def cycle_on(transport: Recording, method: str = "POST") -> RequestResponseCycle:
    scope: Any = {"type": "http", "method": method, "path": "/mcp", "headers": []}
    cycle = RequestResponseCycle(
        scope=scope,
        transport=transport,
        flow=FlowControl(transport),
        logger=logging.getLogger("test"),
        access_logger=logging.getLogger("test.access"),
        access_log=False,
        default_headers=[],
        message_event=asyncio.Event(),
        expect_100_continue=False,
        keep_alive=True,
        on_response=lambda: None,
    )
    write_heads_with_bodies(cycle)
    return cycle


async def test_a_response_of_known_length_is_one_write() -> None:
    transport = Recording()
    cycle = cycle_on(transport)
    await cycle.send({"type": "http.response.start", "status": 200, "headers": KNOWN_LENGTH})
    assert transport.writes == []
    await cycle.send({"type": "http.response.body", "body": BODY})
    [written] = transport.writes
    head, _, body = written.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 OK\r\n") and b"content-length: %d" % len(BODY) in head
    assert body == BODY
    assert cycle.response_complete


async def test_a_streamed_response_writes_its_head_at_once() -> None:
    transport = Recording()
    cycle = cycle_on(transport)
    await cycle.send(
        {"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/event-stream")]}
    )
    [head] = transport.writes
    assert b"transfer-encoding: chunked" in head
    await cycle.send({"type": "http.response.body", "body": b"data: 1\n\n", "more_body": True})
    assert len(transport.writes) == 2


async def test_the_head_of_a_head_request_is_not_held() -> None:
    transport = Recording()
    cycle = cycle_on(transport, method="HEAD")
    await cycle.send({"type": "http.response.start", "status": 200, "headers": KNOWN_LENGTH})
    assert len(transport.writes) == 1
    await cycle.send({"type": "http.response.body", "body": b""})
    assert len(transport.writes) == 1 and cycle.response_complete


async def test_only_the_first_body_write_carries_the_head() -> None:
    transport = Recording()
    cycle = cycle_on(transport)
    await cycle.send({"type": "http.response.start", "status": 200, "headers": KNOWN_LENGTH})
    await cycle.send({"type": "http.response.body", "body": BODY[:5], "more_body": True})
    await cycle.send({"type": "http.response.body", "body": BODY[5:]})
    assert len(transport.writes) == 2
    assert transport.writes[0].endswith(b"\r\n\r\n" + BODY[:5]) and transport.writes[1] == BODY[5:]


async def test_closing_with_a_held_head_sends_it_first() -> None:
    transport = Recording()
    cycle = cycle_on(transport)
    await cycle.send({"type": "http.response.start", "status": 200, "headers": KNOWN_LENGTH})
    cycle.transport.close()  # what uvicorn does when the app fails after starting its response
    [head] = transport.writes
    assert head.startswith(b"HTTP/1.1 200 OK\r\n") and head.endswith(b"\r\n\r\n")
    assert transport.closed


async def test_an_answered_cycle_is_freed_without_the_cyclic_collector() -> None:
    # The held-head transport and the cycle refer to each other until the head is written; after,
    # a request's cycle and scope must go with their last reference, not wait for a collection.
    transport = Recording()
    cycle = cycle_on(transport)
    await cycle.send({"type": "http.response.start", "status": 200, "headers": KNOWN_LENGTH})
    await cycle.send({"type": "http.response.body", "body": BODY})
    gone = weakref.ref(cycle)
    gc.disable()
    try:
        del cycle
        assert gone() is None
    finally:
        gc.enable()
