"""The outbox: a worker's replies and call events, published in order by one task.

Guests finish in their own threads and calls are refused on the event loop; either way the
answer is queued here, and one task publishes the queue. Publishing several messages per
wake-up lets nats-py flush them together, and a call's events always precede its reply.

A reply too large for one message goes through the Object Store (``bus.payloads``): its own
task stores the body and then publishes the claim check, so the replies queued behind it are
not held up meanwhile (each reply goes to its own caller, so only a call's events must precede
its reply, and they were queued first).
"""

from __future__ import annotations

import asyncio

import structlog
from nats.aio.client import Client as NatsClient

from bus.errors import BusError, ConnectionClosed, MessageTooLarge, PayloadTooLarge, nats_boundary
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

    def put(self, subject: str, body: bytes, headers: dict[str, str] | None) -> None:
        """Queue one message (on the event loop; guest threads go through ``call_soon_threadsafe``)."""
        self._queue.put_nowait((subject, body, headers))

    def unsent(self) -> int:
        """Messages queued and not yet published."""
        return self._queue.qsize()

    async def sent(self) -> None:
        """Wait until every queued message is published."""
        await self._queue.join()

    async def run(self) -> None:
        """Publish queued messages until cancelled."""
        while True:
            subject, body, headers = await self._queue.get()
            if len(body) > self._payloads.inline_limit() and not self._subjects.is_deployment_subject(subject):
                # A reply (replies go to the caller's inbox, never to our own subjects): check it in
                # on the side; it counts as unsent until published (``task_done`` there).
                task = asyncio.create_task(self._check_in(subject, body, headers))
                self._checking_in.add(task)
                task.add_done_callback(self._checking_in.discard)
                continue
            try:
                await self._publish(subject, body, headers)
            finally:
                self._queue.task_done()

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
            self._queue.task_done()

    async def _publish(self, subject: str, body: bytes, headers: dict[str, str] | None) -> None:
        try:
            with nats_boundary:
                await self._nc.publish(subject, body, headers=headers)
        except MessageTooLarge:
            if self._subjects.is_deployment_subject(subject):
                # Call events and notifications: their readers take plain messages, so an oversized
                # one is dropped and said so.
                log.warning("message dropped: larger than the bus allows", subject=subject, size=len(body))
                return
            # A reply that fit by its body but not with its headers: its caller still hears why.
            message = f"the reply is {len(body)} bytes and its headers; the bus allows {self._nc.max_payload}"
            error_body, error_headers = error_reply(ErrorCode.PAYLOAD_TOO_LARGE, message)
            with nats_boundary:
                await self._nc.publish(subject, error_body, headers=error_headers)
        except ConnectionClosed:
            log.warning("reply lost: connection closed")
