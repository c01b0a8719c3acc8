"""Many requests, one reply subscription: request/reply without a ``wait_for`` per request.

nats-py's ``request`` already shares one reply subscription, but waits for each reply with
``asyncio.wait_for``: a second future, a timer, a done-callback and a coroutine frame per
request (6.3% of the gateway's CPU per call, issue 17). ``ReplyMux.request`` keeps one future
per request in a map that the subscription's callback resolves, and bounds the wait with a
``loop.call_at`` handle that the reply cancels: no task, no second future. A request whose
caller is cancelled leaves the map at once (``finally``), so nothing is kept for a reply that
comes after it.

The answers are nats-py's: a reply ``Msg``, ``NoResponders`` when nobody subscribes to the
subject (the server's 503 status, at once), ``BusTimeout`` at the deadline, and the publish's
own errors (``ConnectionLost`` and its kinds, ``MessageTooLarge``) through ``nats_boundary``.
"""

from __future__ import annotations

import asyncio
import itertools
from typing import Final

from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from bus.direct_delivery import subscribe_direct
from bus.errors import BusError, BusTimeout, NoResponders, nats_boundary
from bus.fast_publish import publish as fast_publish

STATUS_HEADER: Final = "Status"
NO_RESPONDERS_STATUS: Final = "503"
"""What nats-server puts in a reply when nobody is subscribed to the request's subject."""


class ReplyMux:
    """Sends requests on ``nc`` and routes their replies through one wildcard subscription."""

    def __init__(self, nc: NatsClient) -> None:
        self._nc = nc
        self._prefix = ""
        """``<inbox>.``: each request's reply subject is this plus its token."""
        self._subscription: Subscription | None = None
        self._starting: asyncio.Lock | None = None
        self._waiting: dict[str, asyncio.Future[Msg]] = {}
        # A counter, not a random token per request: the inbox itself is unguessable (a NUID under
        # the connection's inbox prefix), and only responders the server lets answer can reach it.
        self._tokens = itertools.count()

    @property
    def waiting(self) -> int:
        """Requests sent whose reply has not come yet (nor their deadline, nor their cancellation)."""
        return len(self._waiting)

    async def _subscribe(self) -> str:
        if self._starting is None:
            self._starting = asyncio.Lock()
        async with self._starting:
            if not self._prefix:
                inbox = self._nc.new_inbox()
                with nats_boundary:
                    self._subscription = await subscribe_direct(self._nc, f"{inbox}.*", self._on_reply)
                self._prefix = f"{inbox}."
        return self._prefix

    def _on_reply(self, msg: Msg) -> None:
        # Called on nats-py's reading task as the reply is read (bus.direct_delivery): no queue, no task.
        future = self._waiting.pop(msg.subject[len(self._prefix) :], None)
        if future is not None and not future.done():
            future.set_result(msg)

    async def request(
        self, subject: str, payload: bytes, *, timeout_s: float, headers: dict[str, str] | None = None
    ) -> Msg:
        """Publish ``payload`` to ``subject`` and return the first reply.

        Raises:
            NoResponders: nothing subscribes to ``subject``.
            BusTimeout: no reply within ``timeout_s``.
            ConnectionLost: the connection cannot carry the request now.
            MessageTooLarge: ``payload`` exceeds the server's maximum.
        """
        prefix = self._prefix or await self._subscribe()
        token = str(next(self._tokens))
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Msg] = loop.create_future()
        self._waiting[token] = future
        deadline: asyncio.TimerHandle | None = None
        try:
            with nats_boundary:
                if headers:  # encoded without nats-py's per-character newline scrub (bus.fast_publish)
                    await fast_publish(self._nc, subject, payload, reply=prefix + token, headers=headers)
                else:
                    await self._nc.publish(subject, payload, reply=prefix + token)
            # From the publish on, as nats-py's request counts it: a responder that answers just
            # inside its own deadline (a guest stopped at the time left) must not lose the race.
            deadline = loop.call_at(loop.time() + timeout_s, _expire, future)
            msg = await future
        finally:
            if deadline is not None:
                deadline.cancel()
            self._waiting.pop(token, None)
        if msg.headers and msg.headers.get(STATUS_HEADER) == NO_RESPONDERS_STATUS and not msg.data:
            raise NoResponders(f"nats: no responders available for request on {subject}")
        return msg

    async def close(self) -> None:
        """Unsubscribe; requests still waiting end at their deadline (or with their caller)."""
        subscription, self._subscription, self._prefix = self._subscription, None, ""
        if subscription is not None:
            try:
                with nats_boundary:
                    await subscription.unsubscribe()
            except BusError:
                pass  # a closed or draining connection dropped it anyway


def _expire(future: asyncio.Future[Msg]) -> None:
    if not future.done():
        future.set_exception(BusTimeout("nats: timeout"))
