"""``bus.errors``: the translation table, checked against what a real nats-server makes nats-py raise."""

from __future__ import annotations

import asyncio

import pytest
from nats.aio.client import Client as NatsClient

from bus.connection import connect, send_request
from bus.embedded import EmbeddedNatsServer
from bus.errors import (
    BusError,
    BusTimeout,
    ConnectionClosed,
    KeyNotFound,
    MessageTooLarge,
    NoResponders,
    NotFound,
    nats_boundary,
)
from bus.provisioning import ensure_bucket
from bus.subjects import Subjects


async def test_a_request_nobody_listens_to_is_no_responders(nc: NatsClient, subjects: Subjects) -> None:
    with pytest.raises(NoResponders) as caught:
        await send_request(nc, subjects.call("nobody_home"), b"", timeout_s=2.0)
    assert "no responders" in str(caught.value)  # nats-py's own words, kept


async def test_a_request_nobody_answers_is_a_timeout(nc: NatsClient, subjects: Subjects) -> None:
    silent = await nc.subscribe(subjects.call("silent"))  # listens, never replies
    try:
        with pytest.raises(BusTimeout) as caught:
            await send_request(nc, subjects.call("silent"), b"", timeout_s=0.2)
    finally:
        await silent.unsubscribe()
    assert isinstance(caught.value, TimeoutError)  # one clause catches it and asyncio's


async def test_publishing_on_a_closed_connection_is_connection_closed(nats_server: EmbeddedNatsServer) -> None:
    closed = await connect(nats_server.url, name="test-closed")
    await closed.close()
    with pytest.raises(ConnectionClosed), nats_boundary:
        await closed.publish("anything", b"")


async def test_a_payload_over_the_servers_maximum_is_message_too_large(nc: NatsClient, subjects: Subjects) -> None:
    async with nats_boundary:  # the async form translates alike
        with pytest.raises(MessageTooLarge):
            async with nats_boundary:
                await nc.publish(subjects.announce, b"x" * (nc.max_payload + 1))


async def test_a_missing_kv_key_is_key_not_found(nc: NatsClient, subjects: Subjects) -> None:
    kv = await ensure_bucket(nc, f"{subjects.prefix}_errors")
    with pytest.raises(KeyNotFound) as caught, nats_boundary:
        await kv.get("never.written")
    assert isinstance(caught.value, NotFound)
    assert type(caught.value.__cause__).__module__ == "nats.js.errors"  # raised from the library's error


async def test_what_is_not_a_nats_error_passes_through_untouched() -> None:
    with pytest.raises(asyncio.TimeoutError) as caught, nats_boundary:
        await asyncio.wait_for(asyncio.sleep(1), 0.01)
    assert not isinstance(caught.value, BusError)
    with pytest.raises(asyncio.CancelledError), nats_boundary:
        raise asyncio.CancelledError
