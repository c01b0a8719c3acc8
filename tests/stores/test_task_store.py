"""``stores.task_store`` against a real nats-server: what the task store refuses, with which of the
stores' exceptions (the gateway and the registry map each to its own answer)."""

from __future__ import annotations

import pytest
from nats.aio.client import Client as NatsClient

from bus.subjects import Subjects
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
