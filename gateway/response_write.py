"""A response of known length leaves in one socket write: its head waits for the first body bytes.

uvicorn writes a response's status line and headers at ``http.response.start`` and its body at
``http.response.body``: two ``write`` syscalls per answer. On loopback the kernel runs the
receiver's side of TCP inside the sender's ``write``, so each costs the gateway a segment of its
own (the head's write alone was ~10 % of the gateway's CPU per ``tools/call`` under load, py-spy,
16 connections), and the client wakes twice. Every hot-path answer has a ``Content-Length``
(``gateway.hotpath``), and nothing can use a head without its body, so the head of such a
response is held and written with the body's first bytes.

Only responses with a ``Content-Length``: a chunked response (an SSE stream) writes its head at
once, as before, since its first event may be long in coming. A ``HEAD`` request's response has
no body write, so its head is never held. What the client receives is byte for byte the same.
"""

from __future__ import annotations

import asyncio
from typing import Final

from uvicorn.protocols.http.httptools_impl import RequestResponseCycle

_BEFORE_HEAD: Final = 0
_HEAD_HELD: Final = 1
_PASSING: Final = 2


class HeadWithBody(asyncio.Transport):
    """The transport one request's response cycle writes to (its ``write``, ``close``, ``is_closing``).

    The cycle's first write once its response has started is the head: held when the response
    has a ``Content-Length`` (uvicorn has read it by then), and sent with the next write. Any
    other write goes straight through; closing first sends a held head (as uvicorn would have).
    """

    __slots__ = ("_cycle", "_head", "_state", "_transport")

    def __init__(self, transport: asyncio.Transport, cycle: RequestResponseCycle) -> None:
        super().__init__()
        self._transport = transport
        self._cycle: RequestResponseCycle | None = cycle
        """Until the head is written: the cycle refers to this transport, so keeping it after would
        make the pair a reference cycle, and the request's scope (headers, the parsed body) with it,
        garbage only the cyclic collector frees: one per call, ~12 objects, a young collection
        every ~20 calls under load."""
        self._state = _BEFORE_HEAD
        self._head = b""

    def write(self, data: bytes | bytearray | memoryview) -> None:
        state = self._state
        if state == _HEAD_HELD:
            self._state = _PASSING
            data = self._head + data
            self._head = b""
        elif state == _BEFORE_HEAD and self._cycle is not None and self._cycle.response_started:
            cycle, self._cycle = self._cycle, None  # decided: the cycle is not needed again
            self._state = _PASSING
            if cycle.chunked_encoding is False and cycle.scope["method"] != "HEAD":
                self._state = _HEAD_HELD
                self._head = bytes(data)
                return
        self._transport.write(data)

    def close(self) -> None:
        if self._state == _HEAD_HELD:
            self.write(b"")
        self._transport.close()

    def is_closing(self) -> bool:
        return self._transport.is_closing()


def write_heads_with_bodies(cycle: RequestResponseCycle) -> None:
    """Have ``cycle`` (not started yet) write the head of a response of known length with its body
    (once: a cycle already doing so is left as it is)."""
    if not isinstance(cycle.transport, HeadWithBody):
        cycle.transport = HeadWithBody(cycle.transport, cycle)
