"""The outbox: a worker's replies and call events, published in order by one task.

Guests finish in their own threads and calls are refused on the event loop; either way the
answer is put here, on the event loop. With nothing queued before it, a message goes straight into
nats-py's buffer (``bus.fast_publish.publish_now``), whose flusher writes every message put in
the same loop turn together; otherwise it is queued, and one task publishes the queue in order.
Either way a call's events precede its reply. (A task hop per reply cost a loop turn per call.)

A reply too large for one message goes through the Object Store (``bus.payloads``): its own
task stores the body and then publishes the claim check, so the replies queued behind it are
not held up meanwhile (each reply goes to its own caller, so only a call's events must precede
its reply, and they were queued first).
"""

from __future__ import annotations

import asyncio

import structlog
from nats.aio.client import Client as NatsClient

from bus.errors import BusError, MessageTooLarge, PayloadTooLarge, nats_boundary
from bus.fast_publish import publish_now
from bus.payloads import Payloads
from bus.replies import error_reply
from bus.subjects import Subjects
from schemas.errors import ErrorCode

log = structlog.get_logger(__name__)


class Outbox:
    """Messages waiting to be published: ``put`` from the event loop, ``run`` publishes them."""

    def __init__(self, nc: NatsClient, subjects: Subjects, payloads: Payloads) -> None:
        self._nc = nc
        self._subjects = subjects
        self._payloads = payloads
        self._queue: asyncio.Queue[tuple[str, bytes, dict[str, str] | None]] = asyncio.Queue()
        self._checking_in: set[asyncio.Task[None]] = set()
        self._unsent = 0
        """Messages queued and not yet published: while there are any, a new one queues behind them."""

    def put(self, subject: str, body: bytes, headers: dict[str, str] | None) -> None:
        """Publish one message, or queue it behind those waiting (on the event loop; guest threads
        go through ``call_soon_threadsafe``)."""
        if not self._unsent and not self._checked_in(subject, body) and self._publish_now(subject, body, headers):
            return
        self._unsent += 1
        self._queue.put_nowait((subject, body, headers))

    def unsent(self) -> int:
        """Messages queued and not yet published."""
        return self._unsent

    async def sent(self) -> None:
        """Wait until every queued message is published."""
        await self._queue.join()

    async def run(self) -> None:
        """Publish queued messages until cancelled."""
        while True:
            subject, body, headers = await self._queue.get()
            if self._checked_in(subject, body):
                # A reply (replies go to the caller's inbox, never to our own subjects): check it in
                # on the side; it counts as unsent until published (``_sent_one`` there).
                task = asyncio.create_task(self._check_in(subject, body, headers))
                self._checking_in.add(task)
                task.add_done_callback(self._checking_in.discard)
                continue
            try:
                await self._publish(subject, body, headers)
            finally:
                self._sent_one()

    def _sent_one(self) -> None:
        self._unsent -= 1
        self._queue.task_done()

    def _checked_in(self, subject: str, body: bytes) -> bool:
        """Whether ``body`` goes through the Object Store: a reply larger than one message holds
        (replies go to the caller's inbox, never to our own subjects)."""
        return len(body) > self._payloads.inline_limit() and not self._subjects.is_deployment_subject(subject)

    async def _check_in(self, subject: str, body: bytes, headers: dict[str, str] | None) -> None:
        size = len(body)
        try:
            try:
                body, headers = await self._payloads.offload(body, headers)
            except PayloadTooLarge:  # a call's result was capped before (workers.admission); a surface's was not
                refusal = self._payloads.too_large("the reply", size)
                body, headers = error_reply(ErrorCode.PAYLOAD_TOO_LARGE, str(refusal))
            except BusError as exc:
                log.warning("reply not stored in the Object Store", size=size, error=str(exc))
                body, headers = error_reply(
                    ErrorCode.PAYLOAD_TOO_LARGE,
                    f"the reply is {size} bytes, more than one message holds, and the Object Store "
                    f"could not take it: {exc}",
                )
            await self._publish(subject, body, headers)
        finally:
            self._sent_one()

    async def _publish(self, subject: str, body: bytes, headers: dict[str, str] | None) -> None:
        if self._publish_now(subject, body, headers):
            return
        try:  # nats-py's buffer is full: wait for room (publish_now checked the message itself)
            with nats_boundary:
                await self._nc.publish(subject, body, headers=headers)
        except BusError as exc:
            _lost(subject, exc)

    def _publish_now(self, subject: str, body: bytes, headers: dict[str, str] | None) -> bool:
        """Publish without waiting; False when nats-py's buffer has no room (nothing published).

        Never raises: it runs wherever a reply is put (nats-py's read loop, the loop's answer
        callback), and a message the bus refuses is dropped and said so.
        """
        try:
            with nats_boundary:
                return publish_now(self._nc, subject, body, headers=headers)
        except MessageTooLarge:
            if self._subjects.is_deployment_subject(subject):
                # Call events and notifications: their readers take plain messages, so an oversized
                # one is dropped and said so.
                log.warning("message dropped: larger than the bus allows", subject=subject, size=len(body))
                return True
            # A reply that fit by its body but not with its headers: its caller still hears why.
            message = f"the reply is {len(body)} bytes and its headers; the bus allows {self._nc.max_payload}"
            return self._publish_now(subject, *error_reply(ErrorCode.PAYLOAD_TOO_LARGE, message))
        except BusError as exc:  # closed, draining, or reconnecting with a full buffer
            _lost(subject, exc)
            return True


def _lost(subject: str, exc: BusError) -> None:
    log.warning("message lost: the bus refused it", subject=subject, error=str(exc) or type(exc).__name__)
