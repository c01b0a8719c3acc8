"""A subscription whose messages are handed to a plain function as nats-py reads them: no queue, no task.

A nats-py subscription with a callback queues every message (``asyncio.Queue.put_nowait``) for a
task of its own, which wakes, takes it, creates the callback's coroutine, runs it and marks the
queue item done: per message a loop turn and a few µs of Python. For a reply that only resolves a
future (``bus.reply_mux``: one per tool call) or ticks an acknowledgement off a list (the audit
trail: one per call), or a call that a worker only checks and hands to a guest thread
(``workers.service``), that is most of the cost of receiving it. ``subscribe_direct`` subscribes
without a callback and puts a stand-in for the queue in the subscription, whose ``put_nowait``
calls the handler at once, on nats-py's reading task.

So a handler must be quick and must not block: it runs inside nats-py's read loop. What it
raises is logged here and goes no further (it would end the read loop). The one place that reaches
into nats-py's subscription internals (``_pending_queue``, ``_pending_size``); pinned to
``bus.fast_publish.NATS_PY_VERSION`` by ``tests/bus/test_direct_delivery.py``. What would make
this public upstream: a subscription option to call a plain function per message.
"""

from __future__ import annotations

from collections.abc import Callable

import structlog
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

log = structlog.get_logger(__name__)


class _Handoff:
    """Stands in for a subscription's pending queue: a message put is handled, never queued."""

    __slots__ = ("_handle", "_subscription")

    def __init__(self, subscription: Subscription, handle: Callable[[Msg], None]) -> None:
        self._subscription = subscription
        self._handle = handle

    def put_nowait(self, msg: Msg) -> None:
        # nats-py counted the bytes as pending before putting the message; none stay pending.
        self._subscription._pending_size -= len(msg.data)
        try:
            self._handle(msg)
        except Exception:
            log.exception("a message's handler failed", subject=msg.subject)

    # What nats-py asks of the queue elsewhere (pending counts, drain, auto-unsubscribe).
    def qsize(self) -> int:
        return 0

    def empty(self) -> bool:
        return True

    async def join(self) -> None:
        return None


async def subscribe_direct(
    nc: NatsClient, subject: str, handle: Callable[[Msg], None], *, queue: str = ""
) -> Subscription:
    """Subscribe to ``subject`` (in the queue group ``queue``, if given); each message is passed
    to ``handle`` as soon as it is read.

    Raises:
        nats.errors.Error: as ``nc.subscribe`` (callers translate with ``bus.errors.nats_boundary``).
    """
    subscription = await nc.subscribe(subject, queue=queue)
    # No callback: nats-py made a message iterator over the real queue, which nobody reads.
    queued, handoff = subscription._pending_queue, _Handoff(subscription, handle)
    subscription._pending_queue = handoff  # type: ignore[assignment]
    while not queued.empty():  # read while nc.subscribe was sending the SUB
        handoff.put_nowait(queued.get_nowait())
    return subscription
