"""Connection hygiene: a client slow to send a request's headers, or sending too many, is dropped.

uvicorn (with httptools) arms its keep-alive timer only after an answer, and no timer at all while
a request's headers arrive, so a client that connects and says nothing, or trickles a header a
byte at a time, holds its connection (and a file descriptor) for as long as it likes; nor does it
bound the headers' size (10 MB of headers were accepted), nor wait for a body for a bounded time.
This protocol gives every request:
- ``header_timeout_s`` from the moment the connection opens (or its previous answer is complete)
  to the end of its headers, and at most ``max_header_bytes`` of them: past either the
  connection is closed (after a 431 for the size);
- ``body_timeout_s`` from the end of its headers to the end of its body: a body that is late,
  trickled, or shorter than its ``Content-Length`` is answered 400 (JSON-RPC -32600) and the
  connection closed; the app's pending ``receive`` hears the disconnect.
The deadlines are not a timer each: a request sets a number (``loop.time()`` plus its timeout)
and one sweep per server, every ``SWEEP_FRACTION`` of the shortest timeout, closes the
connections past theirs. Arming and cancelling two timer handles per request cost ~1.7 % of the
gateway's CPU under load (py-spy, 16 connections); a float per request costs next to nothing, and
a deadline is kept within a quarter of its timeout. The body's size limit is the front door's
(``gateway.front_door``).
"""

from __future__ import annotations

import asyncio
from typing import Any, Final

from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.server import ServerState

from gateway.inbound import INVALID_REQUEST
from gateway.response_write import write_heads_with_bodies
from schemas.codec import encode

SWEEP_FRACTION: Final = 0.25
"""The sweep runs every quarter of the shortest timeout: a deadline is enforced within 25 % of it."""
MAX_SWEEP_S: Final = 1.0
"""...and at least once a second (the default 10 s and 30 s deadlines are kept within a second)."""


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with deadlines on each request's headers and body."""

    header_timeout_s: float = 10.0
    max_header_bytes: int = 64 * 1024
    body_timeout_s: float = 30.0
    """All three set per server by ``guarded_protocol``."""
    _sweep: _Sweep
    """This server's open connections and its sweep (set per server by ``guarded_protocol``)."""

    def __init__(self, config: Config, server_state: ServerState, app_state: dict[str, Any], **kwargs: Any) -> None:
        super().__init__(config, server_state, app_state, **kwargs)
        self._deadline: float | None = None
        """When this connection's current wait (for headers, or for a body) is over; None: not waiting."""
        self._waiting_for_body = False
        self._in_headers = True
        self._header_bytes = 0

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        # Counted after parsing: a chunk in which the headers end may carry body bytes too, and
        # those are the front door's to limit. So at most one read beyond the limit is held.
        if self._in_headers and not self.transport.is_closing():
            self._header_bytes += len(data)
            if self._header_bytes > self.max_header_bytes:
                self.transport.write(_TOO_LARGE)
                self.transport.close()

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._wait_for_headers()
        self._sweep.add(self)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._in_headers = True
        if self._deadline is None:
            self._wait_for_headers()

    def on_headers_complete(self) -> None:
        self._in_headers = False
        self._header_bytes = 0
        self._deadline = self.loop.time() + self.body_timeout_s
        self._waiting_for_body = True
        super().on_headers_complete()
        if self.cycle is not None:
            # The request's cycle is made, its task not yet run (or queued behind a pipelined
            # request): it writes each answer of known length in one write.
            write_heads_with_bodies(self.cycle)

    def on_message_complete(self) -> None:
        self._deadline = None
        super().on_message_complete()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        # The next request on this connection gets its own deadline (uvicorn's keep-alive timer
        # covers the idle wait; this one also covers a request that starts and never finishes).
        if not self.transport.is_closing():
            self._wait_for_headers()

    def connection_lost(self, exc: Exception | None) -> None:
        self._deadline = None
        self._sweep.connections.discard(self)
        super().connection_lost(exc)

    def _wait_for_headers(self) -> None:
        self._deadline = self.loop.time() + self.header_timeout_s
        self._waiting_for_body = False

    def overdue(self, now: float) -> bool:
        """Past its deadline: the sweep ends it (and it stops waiting)."""
        if self._deadline is None or self._deadline > now:
            return False
        self._deadline = None
        return True

    def end_overdue(self) -> None:
        """End this connection for the wait it is past: its headers, or its body."""
        if self._waiting_for_body:
            self._body_too_slow()
        else:
            self._headers_too_slow()

    def _headers_too_slow(self) -> None:
        if not self.transport.is_closing():
            self.transport.close()

    def _body_too_slow(self) -> None:
        if self.transport.is_closing():
            return
        if self.cycle is not None and not self.cycle.response_started:
            body = _incomplete(self.body_timeout_s)
            self.transport.write(_INCOMPLETE_HEAD % len(body) + body)
        self.transport.close()


class _Sweep:
    """One server's open connections, checked every ``interval_s`` while any is open."""

    def __init__(self, interval_s: float) -> None:
        self.interval_s = interval_s
        self.connections: set[GuardedHttpToolsProtocol] = set()
        self._handle: asyncio.TimerHandle | None = None

    def add(self, connection: GuardedHttpToolsProtocol) -> None:
        self.connections.add(connection)
        if self._handle is None:
            self._handle = connection.loop.call_later(self.interval_s, self._run, connection.loop)

    def _run(self, loop: asyncio.AbstractEventLoop) -> None:
        self._handle = None
        now = loop.time()
        for connection in [c for c in self.connections if c.overdue(now)]:
            connection.end_overdue()
        if self.connections:
            self._handle = loop.call_later(self.interval_s, self._run, loop)


_TOO_LARGE: Final = b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"


_INCOMPLETE_HEAD: Final = (
    b"HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\ncontent-length: %d\r\nconnection: close\r\n\r\n"
)


def _incomplete(timeout_s: float) -> bytes:
    """The JSON-RPC error answering a body that did not arrive in time."""
    message = f"Request body incomplete after {timeout_s:g} s"
    return encode({"jsonrpc": "2.0", "id": None, "error": {"code": INVALID_REQUEST, "message": message}})


def guarded_protocol(
    header_timeout_s: float, max_header_bytes: int, body_timeout_s: float
) -> type[GuardedHttpToolsProtocol]:
    """The protocol class for one server, with its deadlines and header size limit."""
    limits = {
        "header_timeout_s": header_timeout_s,
        "max_header_bytes": max_header_bytes,
        "body_timeout_s": body_timeout_s,
        "_sweep": _Sweep(min(header_timeout_s, body_timeout_s, MAX_SWEEP_S / SWEEP_FRACTION) * SWEEP_FRACTION),
    }
    return type("GuardedHttpToolsProtocol", (GuardedHttpToolsProtocol,), limits)
