"""``bus.acks`` against a real nats-server: the work-queue stream and the durable pull consumer the
task runner uses, so each fate is seen where it matters (redelivery, max deliveries, the stream)."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass

import nats.errors
import pytest
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.js.client import JetStreamContext

from bus.acks import Acknowledgement, Exhausted, Fate, fate_of
from bus.errors import GiveUp
from bus.subjects import Subjects
from schemas.config import TasksSettings
from stores import ensure_tasks_stream, task_consumer_config
from tests.conftest import eventually

TOOL = "acks_tool"
NO_REDELIVERY_WITHIN_S = 0.5
"""How long a fetch waits to show that nothing is delivered (well below every delay used here)."""


@dataclass
class Queue:
    """One tool's work queue, and the consumer the scope's messages come from."""

    nc: NatsClient
    js: JetStreamContext
    subjects: Subjects
    subscription: JetStreamContext.PullSubscription

    async def put(self, body: bytes = b"work") -> None:
        await self.js.publish(self.subjects.task_work(TOOL), body)

    async def take(self, timeout_s: float = 10.0) -> Msg:
        [message] = await self.subscription.fetch(1, timeout=timeout_s)
        return message

    async def nothing_delivered(self) -> bool:
        try:
            await self.subscription.fetch(1, timeout=NO_REDELIVERY_WITHIN_S)
        except nats.errors.TimeoutError:
            return True
        return False

    async def stored(self) -> int:
        """How many messages the stream still keeps."""
        return (await self.js.stream_info(self.subjects.tasks_stream)).state.messages

    async def emptied(self) -> bool:
        return await self.stored() == 0

    async def pending_acks(self) -> int:
        info = await self.js.consumer_info(self.subjects.tasks_stream, self.subjects.task_consumer(TOOL))
        return info.num_ack_pending

    async def settled(self) -> bool:
        return await self.pending_acks() == 0


@contextlib.asynccontextmanager
async def open_queue(nc: NatsClient, subjects: Subjects, settings: TasksSettings) -> AsyncIterator[Queue]:
    """The tasks stream and ``TOOL``'s consumer, configured as the task runner configures them."""
    await ensure_tasks_stream(nc, subjects)
    js = nc.jetstream()
    subscription = await js.pull_subscribe(
        subjects.task_work(TOOL),
        durable=subjects.task_consumer(TOOL),
        stream=subjects.tasks_stream,
        config=task_consumer_config(subjects, TOOL, settings),
    )
    try:
        yield Queue(nc, js, subjects, subscription)
    finally:
        await subscription.unsubscribe()


@pytest.fixture
async def queue(nc: NatsClient, subjects: Subjects) -> AsyncIterator[Queue]:
    """A queue whose ack_wait is long: any redelivery seen within a test is the scope's doing."""
    async with open_queue(nc, subjects, TasksSettings(ack_wait_s=30.0, max_deliver=5)) as opened:
        yield opened


def scope(message: Msg, *, retry_delay_s: float = 1.0, in_progress_every_s: float = 10.0) -> Acknowledgement:
    return Acknowledgement(message, in_progress_every_s=in_progress_every_s, retry_delay_s=retry_delay_s)


def test_how_a_block_ends_decides_the_fate() -> None:
    assert fate_of(None) is Fate.DONE
    assert fate_of(GiveUp("undecodable")) is Fate.GIVE_UP
    assert fate_of(RuntimeError("store down")) is Fate.RETRY
    assert fate_of(asyncio.CancelledError()) is Fate.UNDECIDED


async def test_a_block_that_returns_acks_and_the_work_queue_lets_the_message_go(queue: Queue) -> None:
    await queue.put()
    async with scope(await queue.take()):
        pass
    await eventually(queue.emptied, what="the acked message is still in the stream")
    assert await queue.nothing_delivered()


async def test_an_exception_naks_for_a_redelivery_after_the_retry_delay_and_goes_on(queue: Queue) -> None:
    await queue.put()
    with pytest.raises(RuntimeError, match="store down"):
        async with scope(await queue.take(), retry_delay_s=2.0):
            raise RuntimeError("store down")
    assert await queue.nothing_delivered()  # not before the delay
    again = await queue.take()
    assert again.metadata.num_delivered == 2  # well before ack_wait (30 s): the nak did it
    async with scope(again):
        pass


async def test_a_give_up_terms_the_message_and_ends_in_the_scope(queue: Queue) -> None:
    await queue.put(b"not a task")
    async with scope(await queue.take(), retry_delay_s=0.1):
        raise GiveUp("undecodable")  # does not propagate
    assert await queue.nothing_delivered()
    await eventually(queue.settled, what="the termed message is still pending")


async def test_in_progress_keeps_a_long_block_from_being_delivered_again(nc: NatsClient, subjects: Subjects) -> None:
    async with open_queue(nc, subjects, TasksSettings(ack_wait_s=1.0, max_deliver=5)) as queue:
        await queue.put()
        async with scope(await queue.take(), in_progress_every_s=0.3):
            assert await queue.nothing_delivered()
            assert await queue.nothing_delivered()
            assert await queue.nothing_delivered()  # 1.5 s in all: past ack_wait, still ours
        await eventually(queue.emptied, what="the acked message is still in the stream")


async def test_a_cancelled_block_settles_nothing_and_ack_wait_brings_the_message_back(
    nc: NatsClient, subjects: Subjects
) -> None:
    async with open_queue(nc, subjects, TasksSettings(ack_wait_s=1.0, max_deliver=5)) as queue:
        await queue.put()
        message = await queue.take()

        async def handle() -> None:
            async with scope(message, retry_delay_s=0.1, in_progress_every_s=0.3):
                await asyncio.sleep(60)

        handling = asyncio.create_task(handle())
        await asyncio.sleep(0.5)
        handling.cancel()
        with pytest.raises(asyncio.CancelledError):
            await handling
        assert await queue.pending_acks() == 1  # neither acked nor nak'ed nor termed
        again = await queue.take()
        assert again.metadata.num_delivered == 2
        async with scope(again):
            pass


async def test_a_failed_last_delivery_is_announced_and_its_exhausted_scope_deletes_it(
    nc: NatsClient, subjects: Subjects
) -> None:
    announced: asyncio.Queue[int] = asyncio.Queue()

    async def on_advisory(msg: Msg) -> None:
        await announced.put(int(json.loads(msg.data)["stream_seq"]))

    advisories = await nc.subscribe(subjects.tasks_max_deliveries_advisory, cb=on_advisory)
    async with open_queue(nc, subjects, TasksSettings(ack_wait_s=30.0, max_deliver=2)) as queue:
        await queue.put()
        for delivery in (1, 2):
            message = await queue.take()
            assert message.metadata.num_delivered == delivery
            with pytest.raises(RuntimeError):
                async with scope(message, retry_delay_s=0.2):
                    raise RuntimeError("failed again")
        # The last delivery was nak'ed, not termed: when a worker next asks for work, the server
        # finds no delivery left and announces the exhausted message (what the registry fails the
        # task on); the work queue still keeps it.
        assert await queue.nothing_delivered()
        sequence = await asyncio.wait_for(announced.get(), timeout=10)
        assert await queue.stored() == 1
        # An exhausted scope whose block fails keeps it; one whose block returns deletes it.
        with pytest.raises(RuntimeError):
            async with Exhausted(queue.js, subjects.tasks_stream, sequence):
                raise RuntimeError("the task store is down")
        assert await queue.stored() == 1
        async with Exhausted(queue.js, subjects.tasks_stream, sequence):
            pass
        assert await queue.stored() == 0
    await advisories.unsubscribe()
