"""Attacks on replies handled as nats-py reads them (``bus.direct_delivery`` under ``bus.reply_mux``).

A reply now resolves its request's future on nats-py's reading task, with no queue in between. A
responder (or anyone able to publish to the gateway's inbox) tries to make a reply meant for one
request reach another: a duplicate, a reply for the next token guessed ahead of its request, a
late one; or to stall the reader with a flood. Real nats-server throughout.
"""

from __future__ import annotations

import asyncio

from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg

from bus.reply_mux import ReplyMux
from tests.conftest import eventually


async def test_a_duplicate_or_guessed_ahead_reply_reaches_no_other_request(nc: NatsClient) -> None:
    held: list[Msg] = []

    async def hold(msg: Msg) -> None:
        held.append(msg)

    await nc.subscribe("attack.mux", cb=hold)
    mux = ReplyMux(nc)
    first = asyncio.create_task(mux.request("attack.mux", b"1", timeout_s=5))
    await eventually(lambda: len(held) == 1)
    assert held[0].reply
    prefix, _, token = held[0].reply.rpartition(".")
    # The responder answers twice, and answers the next request (its token guessed) before it is made.
    await held[0].respond(b"first")
    await held[0].respond(b"duplicate")
    await nc.publish(f"{prefix}.{int(token) + 1}", b"forged ahead")
    await nc.flush()
    assert (await first).data == b"first"
    second = asyncio.create_task(mux.request("attack.mux", b"2", timeout_s=5))
    await eventually(lambda: len(held) == 2)
    assert held[1].reply == f"{prefix}.{int(token) + 1}"
    await held[1].respond(b"second")
    assert (await second).data == b"second"
    assert mux.waiting == 0
    await mux.close()


async def test_a_flood_of_unmatched_replies_leaves_nothing_pending_and_requests_flowing(nc: NatsClient) -> None:
    async def echo(msg: Msg) -> None:
        await msg.respond(msg.data)

    await nc.subscribe("attack.echo", cb=echo)
    mux = ReplyMux(nc)
    assert (await mux.request("attack.echo", b"warm", timeout_s=5)).data == b"warm"
    subscription = mux._subscription
    assert subscription is not None
    prefix = mux._prefix
    # Far more than a nats-py subscription's pending limits would hold, at up to 512 KiB each.
    big = b"x" * (512 * 1024)
    for i in range(2000):
        await nc.publish(f"{prefix}{10_000_000 + i}", big if i % 100 == 0 else b"junk")
        await nc.publish(f"{prefix}not-a-token.{i}", b"junk")
    await nc.flush()
    assert (await mux.request("attack.echo", b"after", timeout_s=5)).data == b"after"
    assert (subscription.pending_msgs, subscription.pending_bytes) == (0, 0)
    assert nc.is_connected and mux.waiting == 0
    await mux.close()


async def test_a_request_cancelled_while_its_reply_is_read_raises_nothing_in_the_reader(nc: NatsClient) -> None:
    """The reply's future is cancelled by its caller as the reply arrives: the reader must not
    raise (``InvalidStateError``) and the next request is still answered."""
    held: list[Msg] = []

    async def hold(msg: Msg) -> None:
        held.append(msg)

    await nc.subscribe("attack.cancel", cb=hold)
    mux = ReplyMux(nc)
    for _ in range(20):
        waiting = asyncio.create_task(mux.request("attack.cancel", b"", timeout_s=5))
        await eventually(lambda: len(held) == 1)
        await held.pop().respond(b"answer")
        waiting.cancel()  # races the reply being read
        try:
            await waiting
        except asyncio.CancelledError:
            pass
    assert mux.waiting == 0
    answered = asyncio.create_task(mux.request("attack.cancel", b"", timeout_s=5))
    await eventually(lambda: len(held) == 1)
    await held.pop().respond(b"still served")
    assert (await answered).data == b"still served"
    await mux.close()
