"""The acknowledgement scope: how the block that handles a durable (JetStream) message ends decides
that message's fate, in this one module (faststream's acknowledgement middleware is the model).

A handler runs inside ``async with Acknowledgement(msg, ...)`` and never acks by hand:

| the block | the message |
|---|---|
| returns | ``ack``: handled (a work-queue stream removes it) |
| raises ``GiveUp`` | ``term``: it can never be handled (it cannot be decoded, say) |
| raises any other exception | ``nak``: delivered again after ``retry_delay_s`` (see ``max_deliver``) |
| is cancelled (the process stops) | nothing: the server delivers it again after ``ack_wait`` |

Any other exception then goes on to the caller, which logs it; a give-up ends in the scope.

While the scope is open — and from ``keep_alive()`` on, for a message that waits before its block
runs — it says "in progress" every ``in_progress_every_s``, so a long handler is not taken for dead.

A message whose deliveries are used up (its last handler failed or died) goes to no one; the server
announces it (the max-deliveries advisory) and a work-queue stream keeps it. ``Exhausted`` is the
scope of whoever hears that announcement: once its block has recorded what became of the message,
the message is deleted; if the block fails, it stays. This is also why a failed last delivery is
nak'ed like any other and not terminated: a term would silence that announcement, and with it the
one place that records the outcome, whether the last handler failed or died.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
from types import TracebackType

from nats.aio.msg import Msg
from nats.js.client import JetStreamContext

from bus.errors import BusError, GiveUp, nats_boundary


class Fate(enum.Enum):
    """What becomes of a durable message."""

    DONE = "ack"
    RETRY = "nak"
    GIVE_UP = "term"
    UNDECIDED = "left to ack_wait"


def fate_of(error: BaseException | None) -> Fate:
    """The fate of a message whose handling block ended with ``error`` (None: it returned)."""
    if error is None:
        return Fate.DONE
    if isinstance(error, GiveUp):
        return Fate.GIVE_UP
    if isinstance(error, Exception):
        return Fate.RETRY
    return Fate.UNDECIDED  # cancelled, interrupted: the process is stopping, not the handler failing


class Acknowledgement:
    """The scope of one delivered message: settles it by how the block ends (see the module).

    Raises:
        BusError: (on leaving) the ack or term could not be sent, such as ``ConnectionClosed``.
    """

    def __init__(self, msg: Msg, *, in_progress_every_s: float, retry_delay_s: float) -> None:
        self.msg = msg
        self._in_progress_every_s = in_progress_every_s
        self._retry_delay_s = retry_delay_s
        self._heartbeat: asyncio.Task[None] | None = None

    def keep_alive(self) -> None:
        """Say "in progress" from now on, before the block runs (idempotent)."""
        if self._heartbeat is None:
            self._heartbeat = asyncio.create_task(self._say_in_progress())

    def abandon(self) -> None:
        """Stop saying "in progress" and settle nothing: the server delivers the message again after ack_wait."""
        if self._heartbeat is not None:
            self._heartbeat.cancel()

    async def __aenter__(self) -> Acknowledgement:
        self.keep_alive()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> bool:
        self.abandon()
        fate = fate_of(exc)
        if fate is Fate.DONE:
            with nats_boundary:
                await self.msg.ack()
        elif fate is Fate.GIVE_UP:
            with nats_boundary:
                await self.msg.term()
        elif fate is Fate.RETRY:
            # The caller needs to hear the block's exception, not the nak's: a nak that cannot be
            # sent changes nothing, as the server delivers the message again after ack_wait anyway.
            with contextlib.suppress(BusError), nats_boundary:
                await self.msg.nak(delay=self._retry_delay_s)
        return fate is Fate.GIVE_UP  # a give-up is settled here; anything else goes on to the caller

    async def _say_in_progress(self) -> None:
        while True:
            await asyncio.sleep(self._in_progress_every_s)
            with contextlib.suppress(BusError), nats_boundary:  # a lost connection: the message is redelivered
                await self.msg.in_progress()


class Exhausted:
    """The scope of a message whose deliveries are used up, known by its stream and sequence."""

    def __init__(self, js: JetStreamContext, stream: str, sequence: int) -> None:
        self._js = js
        self._stream = stream
        self._sequence = sequence

    async def __aenter__(self) -> Exhausted:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> bool:
        fate = fate_of(exc)
        if fate in (Fate.DONE, Fate.GIVE_UP):
            # Its outcome is recorded: what a work queue still keeps of it is garbage (and a
            # message already gone needs nothing).
            with contextlib.suppress(BusError), nats_boundary:
                await self._js.delete_msg(self._stream, self._sequence)
        return fate is Fate.GIVE_UP
