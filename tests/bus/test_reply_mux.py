"""Requests through one reply subscription (``bus.reply_mux``), against a real nats-server."""

from __future__ import annotations

import asyncio

import pytest
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg

from bus.errors import BusTimeout, NoResponders
from bus.reply_mux import ReplyMux
from tests.conftest import eventually


async def test_concurrent_requests_each_get_their_own_reply(nc: NatsClient) -> None:
    async def echo(msg: Msg) -> None:
        await msg.respond(
            msg.data + b"!",
        )

    await nc.subscribe("mux.echo", cb=echo)
    mux = ReplyMux(nc)
    replies = await asyncio.gather(
        *(mux.request("mux.echo", str(i).encode(), timeout_s=5, headers={"H": str(i)}) for i in range(100))
    )
    assert [r.data for r in replies] == [f"{i}!".encode() for i in range(100)]
    assert mux.waiting == 0
    await mux.close()


async def test_nobody_subscribed_is_no_responders_at_once(nc: NatsClient) -> None:
    mux = ReplyMux(nc)
    with pytest.raises(NoResponders):
        await mux.request("mux.nobody", b"{}", timeout_s=30)
    assert mux.waiting == 0


async def test_a_deadline_is_a_bus_timeout_and_a_late_reply_is_dropped(nc: NatsClient) -> None:
    held: list[Msg] = []

    async def hold(msg: Msg) -> None:
        held.append(msg)

    await nc.subscribe("mux.slow", cb=hold)
    mux = ReplyMux(nc)
    with pytest.raises(BusTimeout):
        await mux.request("mux.slow", b"", timeout_s=0.2)
    assert mux.waiting == 0
    await held[0].respond(b"late")  # nobody waits for it: dropped, nothing breaks
    echo_reply = asyncio.create_task(mux.request("mux.slow", b"", timeout_s=5))
    await eventually(lambda: len(held) == 2)
    await held[1].respond(b"on time")
    assert (await echo_reply).data == b"on time"


async def test_a_cancelled_request_leaves_nothing_behind(nc: NatsClient) -> None:
    async def ignore(_msg: Msg) -> None:
        pass

    await nc.subscribe("mux.never", cb=ignore)
    mux = ReplyMux(nc)
    waiting = asyncio.create_task(mux.request("mux.never", b"", timeout_s=30))
    await eventually(lambda: mux.waiting == 1)
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    assert mux.waiting == 0
