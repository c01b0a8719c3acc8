"""``stores.task_store`` against a real nats-server: what the task store refuses, with which of the
stores' exceptions (the gateway and the registry map each to its own answer)."""

from __future__ import annotations

import pytest
from nats.aio.client import Client as NatsClient

from bus.errors import BusError
from bus.subjects import Subjects
from schemas.wire import TaskWork
from stores import StoreError, TaskFinished, TaskNotFound, TaskStore, UnknownCursor


async def test_a_task_is_found_only_by_its_principal(nc: NatsClient, subjects: Subjects) -> None:
    store = await TaskStore.open(nc, subjects)
    record = await store.submit("kit_add", {"a": 1, "b": 2}, principal="alice")
    assert (await store.get(record.task_id, principal="alice")).task_id == record.task_id
    for task_id, principal in ((record.task_id, "bob"), ("no-such-task", None), ("not a key!", None)):
        with pytest.raises(TaskNotFound):
            await store.get(task_id, principal=principal)


async def test_an_unknown_cursor_is_refused(nc: NatsClient, subjects: Subjects) -> None:
    store = await TaskStore.open(nc, subjects)
    await store.submit("kit_add", {}, principal="alice")
    with pytest.raises(UnknownCursor) as caught:
        await store.list(principal="alice", cursor="not-one-of-hers")
    assert isinstance(caught.value, ValueError) and isinstance(caught.value, StoreError)


async def test_an_ended_task_cannot_be_cancelled_and_says_how_it_ended(nc: NatsClient, subjects: Subjects) -> None:
    store = await TaskStore.open(nc, subjects)
    record = await store.submit("kit_add", {}, principal="alice")
    await store.finish(record.task_id, b"{}", failed=False)
    with pytest.raises(TaskFinished, match="has already ended: completed") as caught:
        await store.cancel(record.task_id, principal="alice")
    assert caught.value.record.status == "completed"


async def test_a_task_parked_with_arguments_near_one_message_keeps_them_beside_its_record(
    nc: NatsClient, subjects: Subjects
) -> None:
    # Arguments under one message travel inline in the work; parking used to copy them into the
    # record beside the question, past one KV value: MessageTooLarge, the run delivered again.
    store = await TaskStore.open(nc, subjects)
    arguments: dict[str, object] = {"text": "x" * (900 * 1024)}
    record = await store.submit("kit_greet", arguments, principal="alice")
    work = TaskWork(task_id=record.task_id, tool="kit_greet", arguments=arguments)
    question = {"q": {"method": "elicitation/create", "params": {"message": "y" * (200 * 1024)}}}
    parked = await store.wait_for_input(work, question, [])
    assert parked is not None and parked.status == "input_required" and parked.arguments_object
    requeued = TaskWork(
        task_id=record.task_id, tool="kit_greet", arguments={}, arguments_object=parked.arguments_object
    )
    assert await store.arguments(requeued) == arguments
    answered = await store.answer(record.task_id, {"q": {"action": "decline"}}, principal="alice")
    assert answered.status == "working"


async def test_a_task_whose_work_cannot_be_queued_is_failed(nc: NatsClient, subjects: Subjects) -> None:
    store = await TaskStore.open(nc, subjects)
    await nc.jetstream().delete_stream(subjects.tasks_stream)  # its work queue is gone: the publish fails
    with pytest.raises(BusError):
        await store.submit("kit_add", {}, principal="alice")
    [record] = await store.records()
    assert record.status == "failed" and "could not be queued" in record.status_message, record
