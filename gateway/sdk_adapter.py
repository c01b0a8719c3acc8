"""Every reach into the mcp SDK's private names, in one place.

The SDK (pinned in pyproject.toml, ``mcp>=2.3,<3``) offers no public path to a few things the
gateway needs: handing a request straight to the session manager (the body limit has been applied
already), finding a 2025 session's transport, keeping its idle countdown suspended while the hot
path serves it, and a handler's ``Connection``. Each is a function here; nothing else in
``gateway/`` touches an SDK name that starts with an underscore. tests/gateway/test_sdk_adapter.py
checks every name below against the installed SDK, so an upgrade that renames one fails there,
loudly, instead of somewhere behind a request.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Final

import anyio
from mcp.server.context import ServerRequestContext
from mcp.server.streamable_http import StreamableHTTPServerTransport
from mcp.server.streamable_http_manager import StreamableHTTPSessionManager
from starlette.types import Receive, Scope, Send

PRIVATE_NAMES: Final = {
    StreamableHTTPSessionManager: ("_handle_request", "_server_instances"),
    StreamableHTTPServerTransport: ("_idle_timeout", "_requests_in_flight"),
}
"""The private attributes used here, by the SDK class that has them (checked by the pinning test;
instance attributes are checked on a live instance there)."""


async def hand_to_session_manager(
    manager: StreamableHTTPSessionManager, scope: Scope, receive: Receive, send: Send
) -> None:
    """Serve a request with the SDK's session manager, skipping its body-limit wrapper (applied already)."""
    await manager._handle_request(scope, receive, send)


def session_transport(manager: StreamableHTTPSessionManager, session_id: str) -> StreamableHTTPServerTransport | None:
    """The live transport of a 2025 session, or ``None`` (unknown, terminated or idle-expired)."""
    transport = manager._server_instances.get(session_id)
    if transport is None or transport.is_terminated:
        return None
    idle_scope = transport.idle_scope
    return None if idle_scope is not None and idle_scope.cancel_called else transport


def session_alive(manager: StreamableHTTPSessionManager, session_id: str) -> bool:
    """Whether the session manager still has the session (for ``gateway.sessions``)."""
    return session_id in manager._server_instances


@contextmanager
def holding_session(transport: StreamableHTTPServerTransport) -> Iterator[None]:
    """Keep a 2025 session alive while the hot path serves one of its requests.

    Mirrors ``StreamableHTTPServerTransport.handle_request``'s idle bookkeeping (its private
    counters): a request in flight suspends the idle countdown, and the last one to finish
    restarts it.
    """
    idle_scope = transport.idle_scope
    idle_timeout = transport._idle_timeout
    if idle_scope is None or idle_timeout is None:
        yield
        return
    transport._requests_in_flight += 1
    idle_scope.deadline = math.inf
    try:
        yield
    finally:
        transport._requests_in_flight -= 1
        if not transport._requests_in_flight:
            idle_scope.deadline = anyio.current_time() + idle_timeout


def connection_of(ctx: ServerRequestContext[Any, Any]) -> Any:
    """The SDK ``Connection`` behind a handler's session (2025 era: its id, exit stack, ``notify``)."""
    return ctx.session._connection
