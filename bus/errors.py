"""Exceptions of the bus package, and the one boundary where nats-py's errors become them.

Code above the bus never catches ``nats.errors.*``: it runs a nats-py call inside
``with nats_boundary:`` (or calls a ``bus`` helper that does) and catches the classes below.
The whole mapping is ``_TABLE``; the model is httpx's ``map_httpcore_exceptions``. A library
error is re-raised as ours ``from`` it, with the same message, so logs still read the same.
"""

from __future__ import annotations

from types import MappingProxyType, TracebackType
from typing import Final

import nats.errors
import nats.js.errors


class BusError(Exception):
    """Base of the exceptions raised by the bus package; raised itself when NATS reports an error
    no narrower class below names (a protocol error, a stale connection, …)."""


class BusUnavailable(BusError):
    """Raised when no NATS server can be reached within the connect timeout."""


class EmbeddedServerError(BusError):
    """Raised when the embedded nats-server cannot be found, started, or does not become ready."""


class CredentialsError(BusError):
    """Raised when the credentials directory or a file in it could be someone else's: a symlink,
    owned by another user, or readable or writable by others."""


class GiveUp(BusError):
    """Raised inside an acknowledgement scope (``bus.acks``) when its message can never be handled,
    such as one that cannot be decoded: the scope terminates it instead of having it delivered again."""


class NoResponders(BusError):
    """Raised when a request reaches no subscriber at all: nobody is listening on its subject."""


class BusTimeout(BusError, TimeoutError):
    """Raised when a reply, a message, a flush or a JetStream answer does not arrive in time.

    A ``TimeoutError`` too, as nats-py's is: code that waits with ``asyncio.wait_for`` around a
    bus call catches both kinds of timeout with one clause.
    """


class ConnectionLost(BusError):
    """Raised when the connection cannot carry a message now; the subclasses say why."""


class ConnectionClosed(ConnectionLost):
    """Raised when the connection is closed: nothing more is sent or delivered on it."""


class ConnectionDraining(ConnectionLost):
    """Raised when the connection is draining: it takes nothing new on the way out."""


class ConnectionReconnecting(ConnectionLost):
    """Raised when the connection is reconnecting and cannot take the request meanwhile."""


class OutboundBufferFull(ConnectionLost):
    """Raised when the connection is reconnecting and its buffer of unsent messages is full."""


class MessageTooLarge(BusError):
    """Raised when a message is larger than the server's ``max_payload``."""


class PayloadRefused(BusError):
    """Raised when a claim check (``bus.payloads``) cannot be honoured as sent: a body beside the
    header, an object name that is not an unguessable token, a digest that does not match."""


class PayloadGone(BusError):
    """Raised when the object a claim check names does not exist (expired, deleted, never put)."""


class PayloadTooLarge(BusError):
    """Raised when a body is larger than the deployment's ``max_payload_bytes``."""

    def __init__(self, message: str, *, size: int, limit: int) -> None:
        super().__init__(message)
        self.size = size
        self.limit = limit


class SubscriptionGone(BusError):
    """Raised when a subscription is used after it was unsubscribed, drained or closed."""


class JetStreamError(BusError):
    """Raised when the JetStream API (streams, consumers, KV, Object Store) refuses a request;
    raised itself for a refusal no narrower class below names."""


class NotFound(JetStreamError):
    """Raised when a stream, consumer, message or object asked for does not exist."""


class BucketNotFound(NotFound):
    """Raised when a KV bucket asked for does not exist."""


class KeyNotFound(NotFound):
    """Raised when a KV key has never been written (or its value has expired)."""


class KeyDeleted(NotFound):
    """Raised when a KV key read was deleted or purged."""


class RequestRejected(JetStreamError):
    """Raised when JetStream refuses a request as bad (400): a stream that already exists differently, …"""


class WrongLastSequence(RequestRejected):
    """Raised when a KV compare-and-set finds another revision than the one it expected."""


class JetStreamUnavailable(JetStreamError):
    """Raised when JetStream answers that it cannot serve the request now (503: no leader yet, …)."""


class InvalidKey(JetStreamError):
    """Raised when a KV key has a form the bucket cannot hold (an empty token, a space, …)."""


_TABLE: Final = MappingProxyType(
    {
        # Most specific nats-py class first: the lookup walks an error's MRO and takes the first hit.
        nats.errors.NoRespondersError: NoResponders,
        nats.errors.TimeoutError: BusTimeout,  # FlushTimeoutError, DrainTimeoutError, FetchTimeoutError too
        nats.errors.ConnectionClosedError: ConnectionClosed,
        nats.errors.ConnectionDrainingError: ConnectionDraining,
        nats.errors.ConnectionReconnectingError: ConnectionReconnecting,
        nats.errors.OutboundBufferLimitError: OutboundBufferFull,
        nats.errors.MaxPayloadError: MessageTooLarge,
        nats.errors.BadSubscriptionError: SubscriptionGone,
        nats.js.errors.KeyWrongLastSequenceError: WrongLastSequence,
        nats.js.errors.KeyNotFoundError: KeyNotFound,
        nats.js.errors.KeyDeletedError: KeyDeleted,
        nats.js.errors.BucketNotFoundError: BucketNotFound,
        nats.js.errors.NotFoundError: NotFound,
        nats.js.errors.BadRequestError: RequestRejected,
        nats.js.errors.ServiceUnavailableError: JetStreamUnavailable,
        nats.js.errors.InvalidKeyError: InvalidKey,
        nats.js.errors.Error: JetStreamError,
        nats.errors.Error: BusError,
    }
)
"""nats-py error class → ours: the whole translation, in one place."""


def translate(exc: nats.errors.Error) -> BusError:
    """Our exception for a nats-py error, with its message (the caller raises it ``from`` it)."""
    for kind in type(exc).__mro__:
        ours = _TABLE.get(kind)
        if ours is not None:
            return ours(str(exc))
    return BusError(str(exc))  # unreachable: nats.errors.Error is in the table


class _NatsBoundary:
    """``with nats_boundary:`` (or ``async with``): a nats-py error raised in the block leaves it
    as ours (see ``_TABLE``); anything else, cancellation included, passes through untouched.

    Stateless, so one instance serves every block, nested or concurrent; a block that raises
    nothing costs an ``__enter__`` and an ``__exit__`` call, no allocation, no await.
    """

    __slots__ = ()

    def __enter__(self) -> None:
        return None

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if isinstance(exc, nats.errors.Error):
            raise translate(exc) from exc

    async def __aenter__(self) -> None:
        return None

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.__exit__(exc_type, exc, tb)


nats_boundary: Final = _NatsBoundary()
"""The boundary itself: ``with nats_boundary: await nc.publish(...)``."""
