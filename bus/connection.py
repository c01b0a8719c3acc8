"""The NATS connection of one process: connect with reconnect, drain on the way out."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import nats
import nats.errors
import structlog
from nats.aio.client import Client as NatsClient

from bus.errors import BusUnavailable

log = structlog.get_logger(__name__)

RECONNECT_WAIT_S = 0.5
"""Pause between reconnect attempts: short, since servers usually come back within seconds."""
MAX_RECONNECT_ATTEMPTS = -1
"""Reconnect forever: a long-running role should outlive a NATS restart, not exit."""
DRAIN_TIMEOUT_S = 10
"""How long a closing process waits for in-flight messages to finish being handled."""
PENDING_SIZE_BYTES = 64 * 1024 * 1024
"""Client-side buffer while disconnected; large enough for a burst of replies."""


async def connect(url: str, *, name: str, connect_timeout_s: float = 5.0, allow_reconnect: bool = True) -> NatsClient:
    """Connect to NATS (comma-separated URLs allowed) with reconnect on.

    Raises:
        BusUnavailable: no server answered within ``connect_timeout_s``.
    """

    servers = [u.strip() for u in url.split(",") if u.strip()]
    try:
        # nats-py retries the *first* connect forever when reconnect is on; cap it so a process
        # pointed at the wrong URL says so instead of hanging.
        return await asyncio.wait_for(_connect(servers, name, connect_timeout_s, allow_reconnect), connect_timeout_s)
    except (TimeoutError, nats.errors.NoServersError, OSError) as exc:
        raise BusUnavailable(f"cannot reach NATS at {url}: {str(exc) or 'timed out'}") from exc


async def _connect(servers: list[str], name: str, connect_timeout_s: float, allow_reconnect: bool) -> NatsClient:
    client: list[NatsClient] = []  # filled once connected, so callbacks can tell a close from a loss

    async def on_error(exc: Exception) -> None:
        log.warning("nats error", error=str(exc))

    async def on_disconnected() -> None:
        if client and (client[0].is_closed or client[0].is_draining):
            return  # our own drain/close: not news
        log.warning("nats disconnected", name=name)

    async def on_reconnected() -> None:
        log.info("nats reconnected", name=name)

    nc = await nats.connect(
        servers,
        name=name,
        connect_timeout=int(max(1, connect_timeout_s)),
        allow_reconnect=allow_reconnect,
        reconnect_time_wait=RECONNECT_WAIT_S,
        max_reconnect_attempts=MAX_RECONNECT_ATTEMPTS if allow_reconnect else 0,
        drain_timeout=DRAIN_TIMEOUT_S,
        pending_size=PENDING_SIZE_BYTES,
        error_cb=on_error,
        disconnected_cb=on_disconnected,
        reconnected_cb=on_reconnected,
    )
    client.append(nc)
    return nc


@asynccontextmanager
async def connected(url: str, *, name: str, connect_timeout_s: float = 5.0) -> AsyncIterator[NatsClient]:
    """``async with connected(url, name=…) as nc:`` — drains the connection on exit."""
    nc = await connect(url, name=name, connect_timeout_s=connect_timeout_s)
    try:
        yield nc
    finally:
        if not nc.is_closed:
            try:
                await nc.drain()
            except (TimeoutError, nats.errors.ConnectionClosedError, nats.errors.FlushTimeoutError):
                await nc.close()
