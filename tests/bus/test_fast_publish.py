"""``bus.fast_publish`` sends what nats-py's own publish sends, and refuses what it refuses."""

from __future__ import annotations

import asyncio
from importlib.metadata import version
from typing import Any

import nats.errors
import pytest
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg

from bus.fast_publish import NATS_PY_VERSION, encode_headers, publish, publish_now
from tests.conftest import eventually

HEADERS = [
    {
        "Toolbus-Request-Id": "abcdefghijabcdefghij12",
        "Toolbus-Deadline-Ms": "1765087000123",
        "Toolbus-Era": "2026-07-28",
    },
    # What a client may smuggle into a value (a traceparent, a principal): a line break that
    # would end the header and start a protocol command, stray spaces, non-ASCII text.
    {"Traceparent": "00-x\r\nPUB evil 2\r\nhi\r\n-01", "Toolbus-Principal": "  jwt:iss#sübject \n", " Padded ": "v"},
    {"": "skipped", "K": ""},
]


def test_pinned_to_the_nats_py_whose_internals_it_mirrors() -> None:
    assert version("nats-py") == NATS_PY_VERSION, "re-check bus/fast_publish.py against this nats-py, then bump"


async def publish_nowait(
    nc: NatsClient, subject: str, payload: bytes, *, reply: str, headers: dict[str, str] | None
) -> None:
    assert publish_now(nc, subject, payload, reply=reply, headers=headers)


PUBLISHERS = [publish, publish_nowait]


@pytest.mark.parametrize("ours_publish", PUBLISHERS)
@pytest.mark.parametrize("headers", [*HEADERS, None])
async def test_the_same_message_arrives_as_through_nats_py(
    nc: NatsClient, headers: dict[str, str] | None, ours_publish: Any
) -> None:
    received: asyncio.Queue[Msg] = asyncio.Queue()

    async def keep(msg: Msg) -> None:
        await received.put(msg)

    await nc.subscribe("fast.>", cb=keep)
    await nc.subscribe("evil", cb=keep)  # an injected PUB would land here
    await nc.publish("fast.theirs", b"body", reply="fast.reply", headers=None if headers is None else dict(headers))
    await ours_publish(nc, "fast.ours", b"body", reply="fast.reply", headers=None if headers is None else dict(headers))
    theirs, ours = await received.get(), await received.get()
    assert (ours.subject, theirs.subject) == ("fast.ours", "fast.theirs")
    assert (ours.headers, ours.data, ours.reply) == (theirs.headers, theirs.data, theirs.reply)
    await nc.flush()
    assert received.empty(), "a value's line break started a message of its own"
    assert b"\r\nPUB" not in encode_headers(headers or {})[:-4]


@pytest.mark.parametrize("ours_publish", PUBLISHERS)
async def test_what_nats_py_refuses_is_refused(nc: NatsClient, ours_publish: Any) -> None:
    with pytest.raises(nats.errors.BadHeaderError):
        await ours_publish(nc, "fast.x", b"", reply="", headers={"Bad Name": "v"})
    with pytest.raises(nats.errors.BadSubjectError):
        await ours_publish(nc, "fast x", b"", reply="", headers={"K": "v"})
    with pytest.raises(nats.errors.BadSubjectError):
        await ours_publish(nc, "fast.x", b"", reply="a\r\nPUB evil 0", headers={"K": "v"})
    with pytest.raises(nats.errors.MaxPayloadError):
        await ours_publish(nc, "fast.x", b"x" * (nc.max_payload + 1), reply="", headers={"K": "v"})
    with pytest.raises(nats.errors.MaxPayloadError):  # nats-py sends it, and the server drops the connection
        await ours_publish(nc, "fast.x", b"x" * (nc.max_payload - 10), reply="", headers={"K": "v" * 20})
    assert nc.is_connected
    await nc.close()
    with pytest.raises(nats.errors.ConnectionClosedError):
        await ours_publish(nc, "fast.x", b"", reply="", headers={"K": "v"})


async def test_publish_now_queues_nothing_when_the_buffer_is_full_and_keeps_order(nc: NatsClient) -> None:
    received: list[bytes] = []

    async def keep(msg: Msg) -> None:
        received.append(msg.data)

    await nc.subscribe("fast.order", cb=keep)
    for i in range(100):  # one loop turn: nats-py's flusher writes them together, in order
        assert publish_now(nc, "fast.order", str(i).encode())
    limit, nc._max_pending_size = nc._max_pending_size, nc._pending_data_size + 10  # what a burst fills
    try:
        sent_before = nc.stats["out_msgs"]
        assert not publish_now(nc, "fast.order", b"x" * 100)
        assert nc.stats["out_msgs"] == sent_before, "counted as sent though it was not"
    finally:
        nc._max_pending_size = limit
    await nc.flush()
    await eventually(lambda: len(received) == 100)
    assert received == [str(i).encode() for i in range(100)]
