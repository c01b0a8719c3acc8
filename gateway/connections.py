"""Connection hygiene: a client slow to send a request's headers, or sending too many, is dropped.

uvicorn (with httptools) arms its keep-alive timer only after an answer, and no timer at all while
a request's headers arrive, so a client that connects and says nothing, or trickles a header a
byte at a time, holds its connection (and a file descriptor) for as long as it likes; nor does it
bound the headers' size (10 MB of headers were accepted). This protocol gives every request
``header_timeout_s`` from the moment the connection opens (or its previous answer is complete)
to the end of its headers, and at most ``max_header_bytes`` of them; past either the connection
is closed (after a 431 for the size). The body has its own deadline, ``body_timeout_s``, and size
limit, kept by the front door (``gateway.front_door``).
"""

from __future__ import annotations

import asyncio
from typing import Any, Final

from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.server import ServerState


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with a deadline on each request's headers."""

    header_timeout_s: float = 10.0
    max_header_bytes: int = 64 * 1024
    """Both set per server by ``guarded_protocol``."""

    def __init__(self, config: Config, server_state: ServerState, app_state: dict[str, Any], **kwargs: Any) -> None:
        super().__init__(config, server_state, app_state, **kwargs)
        self._header_deadline: asyncio.TimerHandle | None = None
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
        self._arm_header_deadline()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._in_headers = True
        if self._header_deadline is None:
            self._arm_header_deadline()

    def on_headers_complete(self) -> None:
        self._in_headers = False
        self._header_bytes = 0
        self._disarm_header_deadline()
        super().on_headers_complete()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        # The next request on this connection gets its own deadline (uvicorn's keep-alive timer
        # covers the idle wait; this one also covers a request that starts and never finishes).
        if not self.transport.is_closing():
            self._arm_header_deadline()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm_header_deadline()
        super().connection_lost(exc)

    def _arm_header_deadline(self) -> None:
        self._disarm_header_deadline()
        self._header_deadline = self.loop.call_later(self.header_timeout_s, self._headers_too_slow)

    def _disarm_header_deadline(self) -> None:
        if self._header_deadline is not None:
            self._header_deadline.cancel()
            self._header_deadline = None

    def _headers_too_slow(self) -> None:
        self._header_deadline = None
        if not self.transport.is_closing():
            self.transport.close()


_TOO_LARGE: Final = b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"


def guarded_protocol(header_timeout_s: float, max_header_bytes: int) -> type[GuardedHttpToolsProtocol]:
    """The protocol class for one server, with its header deadline and size limit."""
    limits = {"header_timeout_s": header_timeout_s, "max_header_bytes": max_header_bytes}
    return type("GuardedHttpToolsProtocol", (GuardedHttpToolsProtocol,), limits)
