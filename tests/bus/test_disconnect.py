"""A lost NATS server ends the requests waiting on it at once (``bus.connection.on_disconnect``),
as the gateway's tool calls use it: a call in flight when its nats-server is killed fails with
the retryable ``BusDisconnected`` long before its deadline, and calls succeed again once the
server is back (same port, same store)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from nats.aio.msg import Msg

from bus.connection import caught_up, connect, on_disconnect
from bus.embedded import EmbeddedNatsServer
from bus.subjects import Subjects
from gateway.calls import ToolCaller
from gateway.errors import BusDisconnected, NoWorker
from tests.conftest import close_settled, eventually

CALL_TIMEOUT_S = 30.0
"""The calls' deadline: a call that waits for it instead of failing fast fails the test."""
FAIL_FAST_S = 3.0
"""A call in flight must end this soon after its server died (it takes milliseconds)."""


@pytest.fixture
def own_server(tmp_path: Path) -> Iterator[EmbeddedNatsServer]:
    """A nats-server of the test's own, since the test kills it."""
    server = EmbeddedNatsServer(state_dir=tmp_path / "nats")
    server.start()
    yield server
    server.stop()


async def test_a_call_in_flight_fails_fast_when_the_server_dies_and_calls_recover(
    own_server: EmbeddedNatsServer,
) -> None:
    subjects = Subjects("lost")
    worker = await connect(own_server.url, name="worker")
    gateway = await connect(own_server.url, name="gateway")
    try:
        received = asyncio.Event()

        async def never_answers(msg: Msg) -> None:
            received.set()  # the guest runs on and on: only the deadline would end the call

        await worker.subscribe(subjects.call("slow"), cb=never_answers)
        # Not ``worker.flush()``: nats-py writes its PING ahead of the SUB still in its buffer, so
        # the server could answer before it had the subscription and the calls below got ``503 no
        # responders`` (NoWorker: all three ~1 run in 8 under load, or one of them, which then
        # looked like a call in flight ending NoResponders instead of BusDisconnected).
        await caught_up(worker)
        caller = ToolCaller(gateway, subjects, timeout_s=CALL_TIMEOUT_S)
        calls = [asyncio.create_task(caller.call("slow", {}, era="2026-07-28")) for _ in range(3)]
        await asyncio.wait_for(received.wait(), 10)
        killed_at = time.monotonic()
        own_server.kill()
        for call in calls:
            with pytest.raises(BusDisconnected) as caught:
                await asyncio.wait_for(call, FAIL_FAST_S)
            assert caught.value.code.retryable
        ended_after_s = time.monotonic() - killed_at
        assert ended_after_s < FAIL_FAST_S, ended_after_s
        # Nothing of ours is left cancelled: the task carries on normally.
        current = asyncio.current_task()
        assert current is not None and current.cancelling() == 0

        own_server.start()  # same port, same store

        async def answers(msg: Msg) -> None:
            await msg.respond(b'{"content":[]}')

        await worker.subscribe(subjects.call("fast"), cb=answers)

        async def answered() -> bool:
            try:
                return await caller.call("fast", {}, era="2026-07-28", timeout_s=2.0) == b'{"content":[]}'
            except (BusDisconnected, NoWorker):  # NoWorker: the gateway is back before the worker's SUB
                return False

        await eventually(answered, timeout_s=20, what="calls did not recover after the restart")
    finally:
        await close_settled(gateway)
        await close_settled(worker)


async def test_a_closed_connection_is_no_loss(own_server: EmbeddedNatsServer) -> None:
    # Closing on purpose (a gateway stopping) must not end anything as "lost".
    gateway = await connect(own_server.url, name="gateway")
    lost: list[str] = []
    on_disconnect(gateway, lambda: lost.append("lost"))
    await gateway.close()
    assert lost == []
