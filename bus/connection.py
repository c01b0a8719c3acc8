"""The NATS connection of one process: connect with reconnect, drain on the way out.

Also the two guarantees nats-py's ``flush`` and ``Subscription.drain`` promise but do not keep
(``caught_up``, ``drain_subscriptions``; see docs/bus-protocol.md "Ordering on one connection").
"""

from __future__ import annotations

import asyncio
import ssl
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager, suppress
from typing import Any

import structlog
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from bus.errors import BusError, BusUnavailable, ConnectionClosed, ConnectionDraining, SubscriptionGone, nats_boundary
from bus.subjects import subject_matches
from schemas.config import NatsSettings

log = structlog.get_logger(__name__)

RECONNECT_WAIT_S = 0.5
"""Pause between reconnect attempts: short, since servers usually come back within seconds."""
MAX_RECONNECT_ATTEMPTS = -1
"""Reconnect forever: a long-running role should outlive a NATS restart, not exit."""
DRAIN_TIMEOUT_S = 10
"""How long a closing process waits for in-flight messages to finish being handled."""
PENDING_SIZE_BYTES = 64 * 1024 * 1024
"""Client-side buffer while disconnected; large enough for a burst of replies."""
ROUND_TRIP_TIMEOUT_S = 5.0
"""How long ``caught_up`` waits for the server; a local round trip takes well under a millisecond."""


async def connect(
    target: str | NatsSettings,
    *,
    name: str,
    connect_timeout_s: float | None = None,
    allow_reconnect: bool = True,
) -> NatsClient:
    """Connect to NATS (comma-separated URLs allowed) with reconnect on.

    ``target`` is a URL, or the ``[nats]`` settings (URL, the role's user and password, TLS).

    Raises:
        BusUnavailable: no server answered within ``connect_timeout_s``, or it refused our
            credentials.
    """
    nats_settings = target if isinstance(target, NatsSettings) else NatsSettings(url=target, password=None)
    timeout_s = connect_timeout_s if connect_timeout_s is not None else nats_settings.connect_timeout_s
    url = nats_settings.url
    servers = [u.strip() for u in url.split(",") if u.strip()]
    attempts = _Attempts()
    try:
        # nats-py retries the *first* connect forever when reconnect is on; cap it so a process
        # pointed at the wrong URL says so instead of hanging.
        with nats_boundary:
            return await asyncio.wait_for(
                _connect(servers, name, timeout_s, allow_reconnect, _auth(nats_settings), attempts), timeout_s
            )
    except (TimeoutError, BusUnavailable, OSError) as exc:  # BusUnavailable: nats-py's "no servers"
        # A timeout after refused attempts is a refusal: say what the attempts met, not "timed out".
        reason = attempts.last_error or str(exc) or f"no answer within {timeout_s:g} s"
        raise BusUnavailable(f"cannot reach NATS at {url}: {reason}") from exc
    except BusError as exc:  # e.g. "Authorization Violation"
        raise BusUnavailable(f"NATS at {url} refused the connection: {exc}") from exc


class _Attempts:
    """What the attempts of a first connect met, so its failure names the cause once.

    Until the first connect succeeds, nats-py reports each failed attempt to the error
    callback (every ``RECONNECT_WAIT_S``); those are kept here, not logged one by one.
    """

    def __init__(self) -> None:
        self.last_error = ""

    def failed(self, exc: Exception) -> None:
        self.last_error = _describe(exc)


def _describe(exc: Exception) -> str:
    """A connect failure in a few words: ``connection refused`` rather than ``[Errno 111] Connect call failed ...``."""
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror.lower()
    return str(exc) or type(exc).__name__


_DISCONNECT_LISTENERS: weakref.WeakKeyDictionary[NatsClient, list[Callable[[], None]]] = weakref.WeakKeyDictionary()


def on_disconnect(nc: NatsClient, listener: Callable[[], None]) -> None:
    """Call ``listener`` (on the event loop) each time ``nc``, made by ``connect``, loses its
    server, before it starts reconnecting; not when it is closed or drained on purpose.

    A request sent before the loss waits for a reply that the dead server can no longer route:
    this is where its sender learns so at once instead of at its timeout (``gateway.calls``).
    """
    _DISCONNECT_LISTENERS.setdefault(nc, []).append(listener)


MessageHandler = Callable[[Msg], Awaitable[None]]
PlainHandler = Callable[[Msg], None]
"""A handler called as nats-py reads the message (``bus.direct_delivery``): quick, never blocking."""


def published_only(pattern: str, handler: MessageHandler) -> MessageHandler:
    """``handler`` for messages published to a subject ``pattern`` matches; any other is dropped.

    A JetStream push consumer delivers a stream's messages to whatever subject its creator
    names, and nats-server checks that subject against no permission: a role that may read and
    write one stream (a worker on the task records) could have its own messages delivered to
    ``toolbus.registry.retire`` or ``toolbus.tasks.cancel``. Such a delivery keeps the stream
    message's own subject (``$KV.…``), which no subscription of ours names: that is the tell.
    """
    published = _published_under(pattern)

    async def checked(msg: Msg) -> None:
        if published(msg):
            await handler(msg)

    return checked


def published_only_plain(pattern: str, handler: PlainHandler) -> PlainHandler:
    """``published_only`` for a plain handler (a ``bus.direct_delivery`` subscription)."""
    published = _published_under(pattern)

    def checked(msg: Msg) -> None:
        if published(msg):
            handler(msg)

    return checked


def _published_under(pattern: str) -> Callable[[Msg], bool]:
    """Whether a message was published to a subject ``pattern`` matches (logged when not)."""
    # A call subscription is a literal subject: compare it whole instead of splitting
    # both into tokens on every message (0.55 µs, timeit); wildcards need the token walk.
    literal = "*" not in pattern and ">" not in pattern

    def published(msg: Msg) -> bool:
        if msg.subject == pattern if literal else subject_matches(pattern, msg.subject):
            return True
        log.warning("dropped a message delivered under another subject", subscribed=pattern, subject=msg.subject)
        return False

    return published


def inbox_prefix(user: str) -> str:
    """Where a connection of ``user`` receives replies (``_INBOX`` for anonymous connections)."""
    return f"_INBOX_{user}"


def _auth(settings: NatsSettings) -> dict[str, Any]:
    """nats-py connect options for the role's credentials and TLS."""
    options: dict[str, Any] = {}
    if settings.user:
        options["user"] = settings.user
        options["password"] = settings.password or ""
        # Replies come back under a prefix of the role's own: its NATS permissions name it.
        options["inbox_prefix"] = inbox_prefix(settings.user)
    if settings.tls_ca_file is not None:
        options["tls"] = ssl.create_default_context(cafile=str(settings.tls_ca_file))
    return options


async def _connect(
    servers: list[str],
    name: str,
    connect_timeout_s: float,
    allow_reconnect: bool,
    auth: dict[str, Any],
    attempts: _Attempts,
) -> NatsClient:
    client: list[NatsClient] = []  # filled once connected, so callbacks can tell a close from a loss

    async def on_error(exc: Exception) -> None:
        if not client:  # still the first connect: ``connect`` reports the cause once, if it fails
            attempts.failed(exc)
            return
        log.warning("nats error", error=str(exc))

    async def on_disconnected() -> None:
        if not client or client[0].is_closed or client[0].is_draining:
            return  # a failed first attempt (``attempts`` has it), or our own drain/close: not news
        log.warning("nats disconnected", name=name)
        for listener in _DISCONNECT_LISTENERS.get(client[0], []):
            listener()

    async def on_reconnected() -> None:
        log.info("nats reconnected", name=name)

    nc = NatsClient()
    try:
        await nc.connect(
            servers,
            name=name,
            connect_timeout=int(max(1, connect_timeout_s)),
            allow_reconnect=allow_reconnect,
            reconnect_time_wait=RECONNECT_WAIT_S,  # type: ignore[arg-type]  # annotated int, used as seconds
            max_reconnect_attempts=MAX_RECONNECT_ATTEMPTS if allow_reconnect else 0,
            drain_timeout=DRAIN_TIMEOUT_S,
            pending_size=PENDING_SIZE_BYTES,
            error_cb=on_error,
            disconnected_cb=on_disconnected,
            reconnected_cb=on_reconnected,
            **auth,
        )
    except BaseException:
        # nats-py leaves the socket of a refused connection (e.g. bad credentials) open.
        with suppress(Exception):
            await nc.close()
        raise
    client.append(nc)
    return nc


@asynccontextmanager
async def connected(
    target: str | NatsSettings, *, name: str, connect_timeout_s: float | None = None
) -> AsyncIterator[NatsClient]:
    """``async with connected(settings.nats, name=…) as nc:`` — drains the connection on exit."""
    nc = await connect(target, name=name, connect_timeout_s=connect_timeout_s)
    try:
        yield nc
    finally:
        if not nc.is_closed:
            try:
                with nats_boundary:
                    await nc.drain()
            except (TimeoutError, ConnectionClosed):  # TimeoutError: a flush timeout (BusTimeout) too
                await nc.close()


async def send_request(
    nc: NatsClient, subject: str, payload: bytes, *, timeout_s: float, headers: dict[str, str] | None = None
) -> Msg:
    """``nc.request``, its failures as bus errors.

    Raises:
        NoResponders: nothing subscribes to ``subject``.
        BusTimeout: no reply within ``timeout_s``.
        ConnectionLost: the connection cannot carry the request now.
        MessageTooLarge: ``payload`` exceeds the server's maximum.
    """
    with nats_boundary:
        return await nc.request(subject, payload, timeout=timeout_s, headers=headers)


async def caught_up(nc: NatsClient, timeout_s: float = ROUND_TRIP_TIMEOUT_S) -> None:
    """Return once the server has processed every command ``nc`` was given before this call.

    ``await nc.flush()`` does not promise that in nats-py (2.16, and its main branch as of
    2026-06): it writes its PING straight to the socket, ahead of the SUB, UNSUB and PUB
    commands still waiting in the client's write buffer for its flusher task, so the PONG can
    come back before the server has seen them. Here a message to an inbox of this connection's
    own is published through that buffer, behind those commands; the server handles one
    connection's commands in order, so when the message comes back they have all taken effect.
    It needs echo, which nats-py has on unless ``no_echo`` is set (``connect`` never sets it).

    Raises:
        ValueError: the connection was opened with ``no_echo``.
        BusTimeout: the message did not come back within ``timeout_s``.
        ConnectionClosed: the connection closed.
    """
    if nc.options.get("no_echo"):
        raise ValueError("caught_up needs a connection with echo on")
    inbox = nc.new_inbox()
    with nats_boundary:
        sub = await nc.subscribe(inbox)
        try:
            await nc.publish(inbox, b"")
            await sub.next_msg(timeout=timeout_s)
        finally:
            await unsubscribe_quietly(sub)


async def unsubscribe_quietly(sub: Subscription) -> None:
    """Unsubscribe ``sub``; a closed connection or a subscription already gone needs nothing."""
    try:
        with nats_boundary:
            await sub.unsubscribe()
    except (ConnectionClosed, SubscriptionGone):
        pass


async def drain_subscriptions(
    nc: NatsClient, subscriptions: Sequence[Subscription], timeout_s: float = ROUND_TRIP_TIMEOUT_S
) -> None:
    """Stop the server delivering to ``subscriptions``, then handle every message it delivered.

    What nats-py's ``Subscription.drain`` promises, without its loss: it sends UNSUB and then
    a PING that overtakes the UNSUB (see ``caught_up``). The server may answer the PING and
    deliver more messages before it reads the UNSUB; once the PONG is in, nats-py handles what
    is queued and forgets the subscription, and a message arriving after that is dropped without
    a trace — for a request, no reply at all. Here the UNSUBs go first, ``caught_up`` waits
    until the server has processed them (by then every message it delivered is in the
    subscriptions' queues, read before the echo), and only then does nats-py's drain run: its
    own UNSUB is a no-op on the server, and it handles the queued messages before it forgets
    the subscription. The callbacks of the queued messages have all returned when this does.

    Raises:
        BusTimeout: the server did not catch up within ``timeout_s``.
        ConnectionClosed: the connection closed (nothing more is delivered).
    """
    for sub in subscriptions:
        # nats-py has no public "tell the server, keep handling what is queued"; this is the
        # call its own drain makes first.
        with nats_boundary:
            await nc._send_unsubscribe(sub._id)
    await caught_up(nc, timeout_s)
    await asyncio.gather(*(_drain_quietly(sub) for sub in subscriptions))


async def _drain_quietly(sub: Subscription) -> None:
    try:
        with nats_boundary:
            await sub.drain()  # type: ignore[no-untyped-call]  # nats-py leaves it unannotated
    except (ConnectionClosed, ConnectionDraining, SubscriptionGone):
        pass  # the connection is going away or the subscription is already gone: nothing more comes
