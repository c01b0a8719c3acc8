"""The outbox: a worker's replies and call events, published in order by one task.

Guests finish in their own threads and calls are refused on the event loop; either way the
answer is queued here, and one task publishes the queue. Publishing several messages per
wake-up lets nats-py flush them together, and a call's events always precede its reply.
"""

from __future__ import annotations

import asyncio

import nats.errors
import structlog
from nats.aio.client import Client as NatsClient

from bus.replies import error_reply
from schemas.errors import ErrorCode

log = structlog.get_logger(__name__)


class Outbox:
    """Messages waiting to be published: ``put`` from the event loop, ``run`` publishes them."""

    def __init__(self, nc: NatsClient) -> None:
        self._nc = nc
        self._queue: asyncio.Queue[tuple[str, bytes, dict[str, str] | None]] = asyncio.Queue()

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
            try:
                await self._publish(subject, body, headers)
            finally:
                self._queue.task_done()

    async def _publish(self, subject: str, body: bytes, headers: dict[str, str] | None) -> None:
        try:
            await self._nc.publish(subject, body, headers=headers)
        except nats.errors.MaxPayloadError:
            size = len(body)
            limit = self._nc.max_payload
            body, headers = error_reply(
                ErrorCode.PAYLOAD_TOO_LARGE, f"result is {size} bytes; the bus allows at most {limit} per message"
            )
            await self._nc.publish(subject, body, headers=headers)
        except nats.errors.ConnectionClosedError:
            log.warning("reply lost: connection closed")
