"""Durable tasks against a real nats-server (JetStream), real workers and the real registry:
submit and poll over plain NATS, principals, cancellation in every state, large results, a
worker dying mid-task."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import nats.errors
import pytest
from nats.aio.client import Client as NatsClient

from bus.acks import Acknowledgement
from bus.connection import connect
from bus.embedded import EmbeddedNatsServer
from bus.payloads import Payloads
from bus.principal import PrincipalSigner
from bus.subjects import Header, Subjects
from registry.service import RegistryService
from schemas.codec import decode, encode
from schemas.config import RegistrySettings
from schemas.errors import ErrorCode
from schemas.wire import CallToolResult, ErrorReply, TaskList, TaskQuery, TaskRecord, TaskSubmit
from stores import TaskStore, task_consumer_config
from tests.conftest import (
    FAST_TASKS,
    TEST_ANNOUNCE_INTERVAL_S,
    TaskWorker,
    close_settled,
    eventually,
    nats_settings,
    start_task_worker,
    task_reaches,
    toolbus,
)
from workers.sandbox.component import LoadedComponent


@dataclass
class Tasks:
    nc: NatsClient
    subjects: Subjects
    store: TaskStore
    start_worker: Callable[..., Awaitable[TaskWorker]]
    registry: RegistryService
    started: list[TaskWorker]

    async def served_once(self) -> None:
        """A worker offers the testkit's tools and stops: they stay known, and nobody takes their tasks."""
        worker = await self.start_worker()
        await eventually(lambda: self.registry.catalogue is not None and self.registry.catalogue.knows("kit_add"))
        await worker.stop()
        await worker.nc.close()
        self.started.remove(worker)

    async def request(self, verb: str, body: object) -> tuple[bytes, ErrorReply | None]:
        reply = await self.nc.request(self.subjects.task_request(verb), encode(body), timeout=10)
        if reply.headers and Header.ERROR in reply.headers:
            return reply.data, decode(reply.data, ErrorReply)
        return reply.data, None

    async def submit(self, tool: str, arguments: dict[str, object], principal: str = "") -> TaskRecord:
        data, error = await self.request("submit", TaskSubmit(tool=tool, arguments=arguments, principal=principal))
        assert error is None, error
        return decode(data, TaskRecord)

    async def get(self, task_id: str, principal: str = "") -> TaskRecord | ErrorReply:
        data, error = await self.request("get", TaskQuery(task_id=task_id, principal=principal))
        return error or decode(data, TaskRecord)


@pytest.fixture
async def tasks(
    nats_server: EmbeddedNatsServer, nc: NatsClient, subjects: Subjects, kit: LoadedComponent
) -> AsyncIterator[Tasks]:
    registry = RegistryService(
        nc, subjects, RegistrySettings(), announce_interval_s=TEST_ANNOUNCE_INTERVAL_S, tasks=FAST_TASKS
    )
    await registry.start()
    store = await TaskStore.open(nc, subjects, FAST_TASKS)
    started: list[TaskWorker] = []

    async def start_worker(concurrency: int = 2) -> TaskWorker:
        worker_nc = await connect(nats_server.url, name="task-worker")
        worker = await start_task_worker(worker_nc, subjects, [kit], FAST_TASKS, concurrency)
        started.append(worker)
        return worker

    yield Tasks(nc, subjects, store, start_worker, registry, started)
    for worker in started:
        await worker.stop()
        await worker.nc.close()
    await registry.stop()


async def test_a_task_submitted_over_nats_runs_and_its_result_is_kept(tasks: Tasks) -> None:
    await tasks.start_worker()
    record = await tasks.submit("kit_add", {"a": 2, "b": 3})
    # The record exists before the submitter hears the id.
    assert (record.status, record.status_message, record.principal) == ("working", "queued", "nats")
    done = await task_reaches(tasks.store, record.task_id, "completed")
    assert (done.attempts, done.result_stored) == (1, True)
    data, error = await tasks.request("result", TaskQuery(task_id=record.task_id))
    assert error is None
    assert decode(data, CallToolResult).structured_content == 5


async def test_a_task_belongs_to_its_principal(tasks: Tasks) -> None:
    await tasks.served_once()
    record = await tasks.submit("kit_add", {"a": 1, "b": 1}, principal="alice")
    assert isinstance(await tasks.get(record.task_id, principal="alice"), TaskRecord)
    for stranger in ("bob", ""):
        refused = await tasks.get(record.task_id, principal=stranger)
        assert isinstance(refused, ErrorReply) and refused.error.code == ErrorCode.TASK_NOT_FOUND
    data, _ = await tasks.request("list", TaskQuery(principal="bob"))
    assert decode(data, TaskList).tasks == []
    data, _ = await tasks.request("list", TaskQuery(principal="alice"))
    assert [t.task_id for t in decode(data, TaskList).tasks] == [record.task_id]


PRINCIPAL_KEY = "registry-test-principal-key"


async def test_with_a_principal_key_only_signed_requests_act_for_a_principal(
    nc: NatsClient, tmp_path: Path, nats_server: EmbeddedNatsServer, kit: LoadedComponent
) -> None:
    subjects = Subjects("vouched")  # a deployment of its own: this registry is the only one answering
    signer = PrincipalSigner(PRINCIPAL_KEY)
    registry = RegistryService(
        nc,
        subjects,
        RegistrySettings(),
        announce_interval_s=TEST_ANNOUNCE_INTERVAL_S,
        tasks=FAST_TASKS,
        principal_signer=signer,
    )
    await registry.start()
    worker = await start_task_worker(await connect(nats_server.url, name="task-worker"), subjects, [kit], FAST_TASKS)
    try:
        await eventually(lambda: registry.catalogue is not None and registry.catalogue.knows("kit_add"))
        body = encode(TaskSubmit(tool="kit_add", arguments={"a": 1, "b": 2}, principal="alice"))
        forged = await nc.request(subjects.task_request("submit"), body, timeout=10)
        error = decode(forged.data, ErrorReply).error
        assert error.code == ErrorCode.FORBIDDEN and "principal 'alice'" in error.message
        # Two principal keys in one body: read once, the last one is the claim, and it is refused too.
        twice = b'{"tool":"kit_add","arguments":{"a":1,"b":2},"principal":"","principal":"alice"}'
        doubled = await nc.request(subjects.task_request("submit"), twice, timeout=10)
        assert decode(doubled.data, ErrorReply).error.code == ErrorCode.FORBIDDEN
        # Signed for another request id, the same principal is still refused (no replaying).
        submit = subjects.task_request("submit")
        replayed = {Header.REQUEST_ID: "r1"}
        signer.stamp(replayed, "alice", subject=submit, body=body, valid_for_s=10)
        replayed[Header.REQUEST_ID] = "r2"
        reply = await nc.request(submit, body, timeout=10, headers=replayed)
        assert decode(reply.data, ErrorReply).error.code == ErrorCode.FORBIDDEN
        headers = {Header.REQUEST_ID: "r3"}
        signer.stamp(headers, "alice", subject=submit, body=body, valid_for_s=10)
        record = decode(
            (await nc.request(subjects.task_request("submit"), body, timeout=10, headers=headers)).data, TaskRecord
        )
        assert record.principal == "alice"
        # Without a claim a request is plain NATS: it sees none of alice's tasks.
        listed = await nc.request(subjects.task_request("list"), encode(TaskQuery()), timeout=10)
        assert decode(listed.data, TaskList).tasks == []
        # An operator holding the key speaks for alice with the CLI.
        config = nats_settings(tmp_path, nats_server.url, subjects.prefix)
        config.write_text(config.read_text() + f'principal_key = "{PRINCIPAL_KEY}"\n')
        shown = await asyncio.to_thread(toolbus, "tasks", "--config", str(config), "--principal", "alice")
        assert shown.returncode == 0, shown.stderr
        assert record.task_id in shown.stdout
        config.write_text(config.read_text().replace(PRINCIPAL_KEY, "another-key-another-key"))
        refused = await asyncio.to_thread(toolbus, "tasks", "--config", str(config), "--principal", "alice")
        assert refused.returncode != 0 and "without a gateway's signature" in refused.stderr
    finally:
        await worker.stop()
        await worker.nc.close()
        await registry.stop()


async def test_a_task_for_an_unknown_tool_is_refused_at_once(
    tasks: Tasks, nats_server: EmbeddedNatsServer, tmp_path: Path
) -> None:
    await tasks.start_worker()
    _, error = await tasks.request("submit", TaskSubmit(tool="kit_subtract", arguments={}))
    assert error is not None and error.error.code == ErrorCode.UNKNOWN_TOOL
    assert "unknown tool 'kit_subtract'" in error.error.message
    settings = nats_settings(tmp_path, nats_server.url, tasks.subjects.prefix)
    refused = await asyncio.to_thread(toolbus, "tasks", "--config", str(settings), "submit", "kit_subtract", "{}")
    assert refused.returncode == 1
    assert f"error {ErrorCode.UNKNOWN_TOOL}: unknown tool 'kit_subtract'" in refused.stderr
    assert not (await tasks.store.list(principal=None))[0], "nothing was queued"


async def test_a_failing_tool_ends_the_task_failed_with_its_error(tasks: Tasks) -> None:
    await tasks.start_worker()
    record = await tasks.submit("kit_divide", {"a": 1, "b": 0})
    failed = await task_reaches(tasks.store, record.task_id, "failed")
    assert failed.status_message == "division by zero"


async def test_cancel_a_queued_task(tasks: Tasks) -> None:
    await tasks.served_once()
    record = await tasks.submit("kit_add", {"a": 1, "b": 1})  # no worker now: it waits in the queue
    data, error = await tasks.request("cancel", TaskQuery(task_id=record.task_id))
    assert error is None and decode(data, TaskRecord).status == "cancelled"
    await tasks.start_worker()
    follow_up = await tasks.submit("kit_add", {"a": 2, "b": 2})
    await task_reaches(tasks.store, follow_up.task_id, "completed")  # the worker took and skipped the cancelled one
    assert (await tasks.store.get(record.task_id)).status == "cancelled"
    _, error = await tasks.request("result", TaskQuery(task_id=record.task_id))
    assert error is not None and error.error.code == ErrorCode.TASK_STATE


async def test_cancel_a_running_task_stops_its_guest(tasks: Tasks) -> None:
    await tasks.start_worker(concurrency=1)
    record = await tasks.submit("kit_danger_spin", {})
    await task_reaches(tasks.store, record.task_id, "working", running=True)
    _, error = await tasks.request("cancel", TaskQuery(task_id=record.task_id))
    assert error is None
    # The only guest thread is free again: the next task runs at once.
    after = await tasks.submit("kit_add", {"a": 1, "b": 2})
    await task_reaches(tasks.store, after.task_id, "completed", timeout_s=5)
    assert (await tasks.store.get(record.task_id)).status == "cancelled"


async def test_cancel_a_finished_task_is_refused(tasks: Tasks) -> None:
    await tasks.start_worker()
    record = await tasks.submit("kit_add", {"a": 1, "b": 1})
    await task_reaches(tasks.store, record.task_id, "completed")
    _, error = await tasks.request("cancel", TaskQuery(task_id=record.task_id))
    assert error is not None and error.error.code == ErrorCode.TASK_STATE
    assert "already ended: completed" in error.error.message
    assert (await tasks.store.get(record.task_id)).status == "completed"


async def test_a_result_larger_than_a_message_is_stored_whole(tasks: Tasks) -> None:
    await tasks.start_worker()
    name = "x" * int(tasks.nc.max_payload * 0.6)  # the result carries it twice: > max payload
    record = await tasks.submit("kit_greet", {"name": name})
    await task_reaches(tasks.store, record.task_id, "completed")
    stored = await tasks.store.result(record.task_id)
    assert stored is not None and len(stored) > tasks.nc.max_payload
    assert name in decode(stored, CallToolResult).structured_content  # type: ignore[operator]
    # Over plain NATS it comes back as a claim check on the payloads bucket (bus.payloads).
    reply = await tasks.nc.request(
        tasks.subjects.task_request("result"), encode(TaskQuery(task_id=record.task_id)), timeout=10
    )
    body, claimed = await Payloads(tasks.nc, tasks.subjects).claim(reply.headers, reply.data)
    assert claimed is not None and body == stored


async def test_a_worker_dying_mid_task_loses_nothing(tasks: Tasks) -> None:
    doomed = await tasks.start_worker(concurrency=1)
    record = await tasks.submit("kit_burn", {"iterations": 2_000_000_000})  # ~3.5 s of guest time
    await task_reaches(tasks.store, record.task_id, running=True, timeout_s=10)
    await doomed.nc.close()  # the connection is gone: no ack, no heartbeat, as after kill -9
    await tasks.start_worker()
    done = await task_reaches(tasks.store, record.task_id, "completed", "failed", timeout_s=30)
    assert done.status == "completed" and done.attempts == 2


async def test_a_task_whose_every_delivery_fails_is_failed_by_the_registry_and_its_work_deleted(tasks: Tasks) -> None:
    await tasks.served_once()
    record = await tasks.submit("kit_add", {"a": 1, "b": 1})  # no worker: this test takes the work
    js = tasks.nc.jetstream()
    taker = await js.pull_subscribe(
        tasks.subjects.task_work("kit_add"),
        durable=tasks.subjects.task_consumer("kit_add"),
        stream=tasks.subjects.tasks_stream,
        config=task_consumer_config(tasks.subjects, "kit_add", FAST_TASKS),
    )
    try:
        for _ in range(FAST_TASKS.max_deliver):
            [message] = await taker.fetch(1, timeout=10)
            with pytest.raises(RuntimeError):
                async with Acknowledgement(message, in_progress_every_s=1.0, retry_delay_s=0.1):
                    raise RuntimeError("every attempt fails")
        with pytest.raises(nats.errors.TimeoutError):  # asking again: no delivery is left
            await taker.fetch(1, timeout=1)
    finally:
        await taker.unsubscribe()
    failed = await task_reaches(tasks.store, record.task_id, "failed", "completed", "cancelled")
    assert failed.status == "failed"
    assert failed.status_message == (
        f"failed: delivered {FAST_TASKS.max_deliver} times and never finished (its workers stopped running it)"
    )

    async def work_deleted() -> bool:
        return (await js.stream_info(tasks.subjects.tasks_stream)).state.messages == 0

    await eventually(work_deleted, what="the exhausted work is still in the stream")


async def test_200_tasks_survive_a_nats_server_restart(
    tmp_path_factory: pytest.TempPathFactory, kit: LoadedComponent
) -> None:
    # A server of its own: file storage in a fixed directory, restarted on the same port.
    server = EmbeddedNatsServer(state_dir=tmp_path_factory.mktemp("restarted-nats"))
    server.start()
    subjects = Subjects(prefix="restart")
    clients: list[NatsClient] = []
    workers: list[TaskWorker] = []
    try:
        nc = await connect(server.url, name="test")
        clients.append(nc)
        registry = RegistryService(
            nc, subjects, RegistrySettings(), announce_interval_s=TEST_ANNOUNCE_INTERVAL_S, tasks=FAST_TASKS
        )
        await registry.start()
        store = await TaskStore.open(nc, subjects, FAST_TASKS)
        for _ in range(2):
            worker_nc = await connect(server.url, name="task-worker")
            clients.append(worker_nc)
            workers.append(await start_task_worker(worker_nc, subjects, [kit], FAST_TASKS))
        ids = [(await store.submit("kit_burn", {"iterations": 20_000_000}, principal="p")).task_id for _ in range(200)]
        await asyncio.sleep(0.5)  # some are done, some running, most queued
        server.stop()
        await asyncio.sleep(1.0)
        server.start()  # same port, same store directory
        statuses: dict[str, str] = {}

        async def all_ended() -> bool:
            nonlocal statuses
            try:
                statuses = {task_id: (await store.get(task_id)).status for task_id in ids}
            except Exception:
                return False
            return all(status in ("completed", "failed", "cancelled") for status in statuses.values())

        await eventually(
            all_ended, timeout_s=90, interval_s=0.5, what=lambda: f"not every task ended: {Counter(statuses.values())}"
        )
        counts = {status: list(statuses.values()).count(status) for status in set(statuses.values())}
        assert counts == {"completed": 200}, counts
        await registry.stop()
    finally:
        for worker in workers:
            await worker.stop()
        for client in clients:
            await close_settled(client)
        server.stop()


async def test_the_cli_submits_lists_and_reads_tasks(
    tasks: Tasks, nats_server: EmbeddedNatsServer, tmp_path: Path
) -> None:
    await tasks.start_worker()
    settings = nats_settings(tmp_path, nats_server.url, tasks.subjects.prefix)
    common = ("--config", str(settings))
    submitted = await asyncio.to_thread(toolbus, "tasks", *common, "submit", "kit_add", '{"a":20,"b":22}')
    assert submitted.returncode == 0, submitted.stderr
    task_id = decode(submitted.stdout.encode(), TaskRecord).task_id
    await task_reaches(tasks.store, task_id, "completed")
    listed = await asyncio.to_thread(toolbus, "tasks", *common)
    [row] = [line for line in listed.stdout.splitlines() if line.startswith(task_id)]
    assert row.split()[1:3] == ["kit_add", "completed"]
    result = await asyncio.to_thread(toolbus, "tasks", *common, "result", task_id)
    assert decode(result.stdout.encode(), CallToolResult).structured_content == 42
    refused = await asyncio.to_thread(toolbus, "tasks", *common, "cancel", task_id)
    assert refused.returncode == 1 and "already ended: completed" in refused.stderr


ODD_SUBMITS: dict[str, bytes] = {
    "overflowing float": b'{"tool":"kit_add","arguments":{"a":1e400,"b":1}}',
    "NaN": b'{"tool":"kit_add","arguments":{"a":NaN,"b":1}}',
    "Infinity": b'{"tool":"kit_add","arguments":{"a":Infinity,"b":1}}',
    "deep nesting": b'{"tool":"kit_add","arguments":{"x":' + b"[" * 100_000 + b"]" * 100_000 + b"}}",
    "not an object": b'["kit_add"]',
    "tool not a string": b'{"tool":7,"arguments":{}}',
    "arguments not an object": b'{"tool":"kit_add","arguments":[1,2]}',
    "truncated": b'{"tool":"kit_add","argu',
}
"""(A claimed principal is refused unsigned by a registry with the principal key: the test above.)"""


async def test_odd_task_requests_over_raw_nats_are_refused_and_record_nothing(tasks: Tasks) -> None:
    """Every body a plain NATS client could send to the task desk instead of a TaskSubmit (or a
    query): an error reply each, no task recorded, and the desk serves a good request after."""
    await tasks.start_worker()
    for verb in ("submit", "get", "result", "cancel"):
        for case, body in ODD_SUBMITS.items():
            reply = await tasks.nc.request(tasks.subjects.task_request(verb), body, timeout=10)
            assert reply.headers and Header.ERROR in reply.headers, (verb, case, reply.data[:200])
    assert not (await tasks.store.list(principal=None))[0], "an odd request recorded a task"
    record = await tasks.submit("kit_add", {"a": 2, "b": 3})
    assert (await task_reaches(tasks.store, record.task_id, "completed")).result_stored
