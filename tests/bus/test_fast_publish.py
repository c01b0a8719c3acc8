"""``bus.fast_publish`` sends what nats-py's own publish sends, and refuses what it refuses."""

from __future__ import annotations

import asyncio
from importlib.metadata import version

import nats.errors
import pytest
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg

from bus.fast_publish import NATS_PY_VERSION, encode_headers, publish

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


@pytest.mark.parametrize("headers", HEADERS)
async def test_the_same_message_arrives_as_through_nats_py(nc: NatsClient, headers: dict[str, str]) -> None:
    received: asyncio.Queue[Msg] = asyncio.Queue()

    async def keep(msg: Msg) -> None:
        await received.put(msg)

    await nc.subscribe("fast.>", cb=keep)
    await nc.subscribe("evil", cb=keep)  # an injected PUB would land here
    await nc.publish("fast.theirs", b"body", reply="fast.reply", headers=dict(headers))
    await publish(nc, "fast.ours", b"body", reply="fast.reply", headers=dict(headers))
    theirs, ours = await received.get(), await received.get()
    assert (ours.subject, theirs.subject) == ("fast.ours", "fast.theirs")
    assert (ours.headers, ours.data, ours.reply) == (theirs.headers, theirs.data, theirs.reply)
    await nc.flush()
    assert received.empty(), "a value's line break started a message of its own"
    assert b"\r\nPUB" not in encode_headers(headers)[:-4]


async def test_what_nats_py_refuses_is_refused(nc: NatsClient) -> None:
    with pytest.raises(nats.errors.BadHeaderError):
        await publish(nc, "fast.x", b"", reply="", headers={"Bad Name": "v"})
    with pytest.raises(nats.errors.BadSubjectError):
        await publish(nc, "fast x", b"", reply="", headers={"K": "v"})
    with pytest.raises(nats.errors.BadSubjectError):
        await publish(nc, "fast.x", b"", reply="a\r\nPUB evil 0", headers={"K": "v"})
    with pytest.raises(nats.errors.MaxPayloadError):
        await publish(nc, "fast.x", b"x" * (nc.max_payload + 1), reply="", headers={"K": "v"})
    await nc.close()
    with pytest.raises(nats.errors.ConnectionClosedError):
        await publish(nc, "fast.x", b"", reply="", headers={"K": "v"})
