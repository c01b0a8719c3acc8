"""The outbox publishes a worker's replies and call events in order, straight into nats-py's buffer
when nothing waits before them, and says why when one cannot go (real nats-server)."""

from __future__ import annotations

import asyncio

from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg

from bus.payloads import Payloads
from bus.subjects import Header, Subjects
from schemas.errors import ErrorCode
from tests.conftest import eventually
from workers.outbox import Outbox


async def _collect(nc: NatsClient, subject: str) -> list[Msg]:
    seen: list[Msg] = []

    async def keep(msg: Msg) -> None:
        seen.append(msg)

    await nc.subscribe(subject, cb=keep)
    await nc.flush()
    return seen


async def test_events_and_replies_arrive_in_the_order_put(nc: NatsClient, subjects: Subjects) -> None:
    outbox = Outbox(nc, subjects, Payloads(nc, subjects))
    events = f"{subjects.prefix}.events.call1"
    seen = await _collect(nc, ">")
    for i in range(50):
        outbox.put(events, f"event {i}".encode(), None)
        outbox.put("_INBOX.reply", f"reply {i}".encode(), {"N": str(i)})
    assert outbox.unsent() == 0, "nothing waited: every message went straight to nats-py's buffer"
    await eventually(lambda: len(seen) == 100)
    expected = [x for i in range(50) for x in (f"event {i}".encode(), f"reply {i}".encode())]
    assert [m.data for m in seen] == expected


async def test_a_full_buffer_queues_what_follows_behind_what_waits(nc: NatsClient, subjects: Subjects) -> None:
    outbox = Outbox(nc, subjects, Payloads(nc, subjects))
    seen = await _collect(nc, "_INBOX.ordered")
    limit, nc._max_pending_size = nc._max_pending_size, 1  # nats-py's buffer "full" for any message
    try:
        outbox.put("_INBOX.ordered", b"first", None)
        assert outbox.unsent() == 1, "the buffer had no room: queued for the outbox's task"
    finally:
        nc._max_pending_size = limit
    outbox.put("_INBOX.ordered", b"second", None)  # room now, but it must not overtake "first"
    assert outbox.unsent() == 2
    runner = asyncio.create_task(outbox.run())
    try:
        await asyncio.wait_for(outbox.sent(), 5)
        await eventually(lambda: len(seen) == 2)
        assert [m.data for m in seen] == [b"first", b"second"]
        outbox.put("_INBOX.ordered", b"third", None)  # nothing waits again: straight out
        assert outbox.unsent() == 0
        await eventually(lambda: len(seen) == 3)
    finally:
        runner.cancel()


async def test_what_the_bus_cannot_carry_is_dropped_or_answered_and_the_rest_goes_on(
    nc: NatsClient, subjects: Subjects
) -> None:
    outbox = Outbox(nc, subjects, Payloads(nc, subjects))
    seen = await _collect(nc, ">")
    fits = b"x" * Payloads(nc, subjects).inline_limit()  # inside the message, but not with these headers
    too_many_headers = {f"H{i}": "v" * 1000 for i in range(10)}
    outbox.put(f"{subjects.prefix}.events.c", fits, too_many_headers)  # an event: dropped, logged
    outbox.put("_INBOX.caller", fits, too_many_headers)  # a reply: its caller hears why
    outbox.put("_INBOX.caller", b"next", None)
    await eventually(lambda: len(seen) == 2)
    refusal, after = seen
    assert refusal.subject == "_INBOX.caller" and refusal.headers is not None
    assert refusal.headers[Header.ERROR] == str(int(ErrorCode.PAYLOAD_TOO_LARGE))
    assert b"headers" in refusal.data
    assert after.data == b"next"
    assert outbox.unsent() == 0
    assert nc.is_connected, "sent past the server's maximum: the server would have closed the connection"


async def test_a_connection_that_cannot_carry_a_reply_loses_it_without_raising_into_the_caller(
    nc: NatsClient, subjects: Subjects
) -> None:
    # put runs inside nats-py's read loop (a call refused at once) and in the loop's answer
    # callback: what the bus refuses there is dropped and logged, never raised.
    outbox = Outbox(nc, subjects, Payloads(nc, subjects))
    await nc.drain()  # draining, then closed
    outbox.put("_INBOX.gone", b"reply", {"K": "v"})
    outbox.put(f"{subjects.prefix}.events.c", b"event", None)
    assert outbox.unsent() == 0
