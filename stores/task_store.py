"""Durable tasks in JetStream: records in KV, work in a work-queue stream, results in an Object Store.

- The **record** (KV ``PREFIX_tasks``, key = task id) is written before anyone learns the id.
  Every change is a compare-and-set on the record's revision, so concurrent writers (a worker
  finishing, a client cancelling, a redelivered copy) cannot both win, and a terminal status
  (completed, failed, cancelled) is never left again: a task ends in exactly one of them.
- The **work** (stream ``PREFIX_TASKS``, subject ``PREFIX.tasks.work.<tool>``, work-queue
  retention, file storage) is taken by workers through one durable pull consumer per tool,
  with explicit acks, in-progress heartbeats and a delivery limit (``workers.task_runner``).
- The **result** (Object Store ``PREFIX_task_results``, name = task id) is the
  ``CallToolResult`` JSON, up to ``[nats] max_payload_bytes`` (a larger one is replaced by an
  ``isError`` result naming the cap, ``workers.admission``). Arguments too large for one work
  message are kept there too (name ``<task id>.arguments``) for as long as the task.
- Every status change is also published on ``PREFIX.tasks.status.<id>`` (the gateway turns it
  into ``notifications/tasks/status``).

Readers and writers — gateways, workers, the registry, the CLI — all use this module (``stores``
belongs to no role, so a role imports it, never another role).
"""

from __future__ import annotations

import builtins
import time
import uuid
from collections.abc import Callable
from typing import Any, Final

import msgspec
from nats.aio.client import Client as NatsClient
from nats.js.api import ConsumerConfig, RetentionPolicy, StorageType, StreamConfig
from nats.js.kv import KeyValue
from nats.js.object_store import ObjectStore

from bus.errors import BusError, InvalidKey, KeyDeleted, KeyNotFound, NotFound, RequestRejected, nats_boundary
from bus.kv import snapshot
from bus.payloads import HEADROOM_BYTES, put_object, read_object, too_large_message
from bus.provisioning import ensure_bucket, ensure_object_store, ensure_stream
from bus.subjects import Subjects
from schemas.codec import decode, decode_json, encode
from schemas.config import DEFAULT_MAX_PAYLOAD_BYTES, TasksSettings
from schemas.wire import TERMINAL_STATUSES, TaskRecord, TaskWork
from stores.errors import ArgumentsTooLarge, ChangeConflict, TaskFinished, TaskNotFound, UnknownCursor

MAX_TTL_MS = 7 * 24 * 60 * 60 * 1000
CAS_ATTEMPTS = 20


PARKED_ARGUMENTS_BYTES: Final = 64 * 1024
"""Arguments a parked task keeps in its record (a KV value, one message) beside the question, its
answers and earlier rounds; larger ones are stored as an object. Arguments just under one message
travel inline in the work, and copied into the record with a question they overflowed it: the park
failed and the run was delivered again until ``max_deliver`` (attack kept in
tests/gateway/test_gateway_task_asks.py)."""


def new_task_id() -> str:
    return uuid.uuid4().hex


def arguments_object(task_id: str) -> str:
    """Name of a task's arguments in the results store, when too large for its work message."""
    return f"{task_id}.arguments"


class TaskStore:
    """The tasks of one deployment.

    Besides what each method names, any of them raises a ``bus.errors.BusError`` (such as
    ``ConnectionClosed`` or ``BusTimeout``) when NATS fails one of its reads or writes.
    """

    def __init__(
        self,
        nc: NatsClient,
        subjects: Subjects,
        kv: KeyValue,
        results: ObjectStore,
        settings: TasksSettings,
        max_payload_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES,
    ) -> None:
        self._nc = nc
        self._subjects = subjects
        self.kv = kv
        self.results = results
        self.settings = settings
        self.max_payload_bytes = max_payload_bytes
        """``[nats] max_payload_bytes``: the largest arguments a task may be given."""

    @classmethod
    async def open(
        cls,
        nc: NatsClient,
        subjects: Subjects,
        settings: TasksSettings | None = None,
        *,
        replicas: int = 1,
        max_payload_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES,
    ) -> TaskStore:
        """The task store of ``subjects``' deployment; its stream and buckets are created if missing."""
        kv = await ensure_bucket(nc, subjects.tasks_bucket, replicas=replicas)
        results = await ensure_object_store(nc, subjects.task_results_store, replicas=replicas)
        await ensure_tasks_stream(nc, subjects, replicas=replicas)
        return cls(nc, subjects, kv, results, settings or TasksSettings(), max_payload_bytes)

    # -- creating -------------------------------------------------------------------------------
    async def submit(
        self,
        tool: str,
        arguments: dict[str, object],
        *,
        principal: str,
        ttl_ms: int | None = None,
        capabilities: frozenset[str] = frozenset(),
        rounds: builtins.list[dict[str, Any]] | None = None,
    ) -> TaskRecord:
        """Record a task, then queue its work; the record exists before the id is returned.

        Arguments too large for one message are stored beside the result (``TaskWork.arguments_object``).

        Raises:
            ArgumentsTooLarge: the arguments are over ``max_payload_bytes`` (nothing is recorded).
        """
        encoded = encode(arguments)
        if len(encoded) > self.max_payload_bytes:
            raise ArgumentsTooLarge(too_large_message("the arguments", len(encoded), self.max_payload_bytes))
        now = time.time()
        record = TaskRecord(
            task_id=new_task_id(),
            tool=tool,
            principal=principal,
            status="working",
            status_message="queued",
            created_at=now,
            updated_at=now,
            ttl_ms=min(ttl_ms if ttl_ms and ttl_ms > 0 else int(self.settings.ttl_s * 1000), MAX_TTL_MS),
        )
        # ``capabilities``: what the guest may ask its client (none: it cannot; TaskWork.capabilities).
        # ``rounds``: answers the client gave before the task existed (MRTR, then a task).
        work = TaskWork(
            task_id=record.task_id,
            tool=tool,
            arguments=arguments,
            rounds=list(rounds or ()),
            capabilities=sorted(capabilities),
        )
        if len(encoded) > self._nc.max_payload - HEADROOM_BYTES:
            # Stored before the work is queued (no worker can look too early), for the task's lifetime:
            # a claim check's TTL would be too short for work that may wait for its workers for hours.
            name = arguments_object(record.task_id)
            await put_object(self.results, name, encoded)
            work = msgspec.structs.replace(work, arguments={}, arguments_object=name)
        with nats_boundary:
            await self.kv.create(record.task_id, encode(record))
        # The message id makes a retried publish of the same task a no-op (stream de-duplication).
        await self._queue(work, message_id=record.task_id)
        await self._announce(record)
        return record

    async def _queue(self, work: TaskWork, *, message_id: str) -> None:
        """Publish ``work`` to its tool's work queue; if that fails, fail the task saying why.

        The record is written first (a worker may look it up at once), so a publish that fails
        would leave it ``working`` with nothing queued, for ever: no worker would take it and no
        sweep ends a working task. Failing it is best effort (the bus may be down for that too).

        Raises:
            BusError: the publish failed (the task is failed, where the bus allowed it).
        """
        try:
            with nats_boundary:
                await self._nc.jetstream().publish(
                    self._subjects.task_work(work.tool), encode(work), headers={"Nats-Msg-Id": message_id}
                )
        except BusError as exc:
            message = f"failed: its work could not be queued: {exc}"
            try:
                await self.update(
                    work.task_id,
                    lambda r: msgspec.structs.replace(r, status="failed", status_message=message, running=False),
                )
            except BusError:
                pass  # the record says `working` until its TTL; the caller hears the error either way
            raise

    # -- reading --------------------------------------------------------------------------------
    async def get(self, task_id: str, *, principal: str | None = None) -> TaskRecord:
        """The task's record; ``principal`` (when given) must be its owner.

        Raises:
            TaskNotFound: no such task, or it belongs to someone else (indistinguishable on purpose).
        """
        record, _ = await self._read(task_id)
        if record is None or (principal is not None and record.principal != principal):
            raise TaskNotFound(f"no task {task_id!r}")
        return record

    async def records(self) -> list[TaskRecord]:
        """Every task record, read in one pass over the bucket."""
        return [decode(value, TaskRecord) for _, value in await snapshot(self.kv)]

    async def list(self, *, principal: str | None, cursor: str = "", limit: int = 100) -> tuple[list[TaskRecord], str]:
        """Tasks of ``principal`` (all with None), newest first, one page; and the next cursor.

        Raises:
            UnknownCursor: ``cursor`` is not a task of this principal (not one this store issued).
        """
        records = [r for r in await self.records() if principal is None or r.principal == principal]
        records.sort(key=lambda r: (-r.created_at, r.task_id))
        start = 0
        if cursor:
            start = next((i + 1 for i, r in enumerate(records) if r.task_id == cursor), -1)
            if start < 0:
                raise UnknownCursor(f"unknown cursor {cursor!r}")
        page = records[start : start + limit]
        more = start + limit < len(records)
        return page, (page[-1].task_id if more and page else "")

    async def result(self, task_id: str) -> bytes | None:
        """The stored ``CallToolResult`` JSON of a finished task, if it has one."""
        return await self._object(task_id)

    async def arguments(self, work: TaskWork) -> dict[str, object]:
        """The arguments of ``work``: in the message, or in the object it names.

        Raises:
            TaskNotFound: the arguments object is gone (the task was forgotten).
        """
        if not work.arguments_object:
            return work.arguments
        data = await self._object(work.arguments_object)
        if data is None:
            raise TaskNotFound(f"the arguments of task {work.task_id!r} are gone")
        arguments = decode_json(data)
        if not isinstance(arguments, dict):
            raise TaskNotFound(f"the stored arguments of task {work.task_id!r} are not an object")
        return arguments

    async def _object(self, name: str) -> bytes | None:
        try:
            with nats_boundary:
                info = await self.results.get_info(name)
        except NotFound:
            return None
        return await read_object(self._nc, self._subjects.task_results_store, info)

    # -- changing -------------------------------------------------------------------------------
    async def update(self, task_id: str, change: Callable[[TaskRecord], TaskRecord | None]) -> TaskRecord | None:
        """Apply ``change`` to the current record with compare-and-set, retrying on conflicts.

        ``change`` returns the new record, or None to leave it as is. A terminal record is never
        changed (``change`` is not called). Returns the record written, or None.

        Raises:
            ChangeConflict: every one of ``CAS_ATTEMPTS`` writes lost to a concurrent change.
        """
        for _ in range(CAS_ATTEMPTS):
            record, revision = await self._read(task_id)
            if record is None or record.status in TERMINAL_STATUSES:
                return None
            changed = change(record)
            if changed is None:
                return None
            changed = msgspec.structs.replace(changed, updated_at=time.time())
            try:
                with nats_boundary:
                    await self.kv.update(task_id, encode(changed), last=revision)
            except RequestRejected:  # WrongLastSequence among them
                continue  # someone else changed it first: look again
            await self._announce(changed)
            return changed
        raise ChangeConflict(f"task {task_id}: too many concurrent changes")

    async def finish(
        self, task_id: str, result: bytes, *, failed: bool, message: str = "", crashed: bool = False
    ) -> TaskRecord | None:
        """Store the result, then end the task (unless it already ended, e.g. cancelled).

        ``crashed``: the guest did not return (``TaskRecord.crashed``); the task is ``failed``.
        """
        await put_object(self.results, task_id, result)
        status = "failed" if failed or crashed else "completed"
        return await self.update(
            task_id,
            lambda r: msgspec.structs.replace(
                r, status=status, status_message=message, running=False, result_stored=True, crashed=crashed
            ),
        )

    async def cancel(self, task_id: str, *, principal: str | None = None) -> TaskRecord:
        """Cancel a task that has not ended, and interrupt it if a worker runs it.

        Raises:
            TaskNotFound: no such task for this principal.
            TaskFinished: it had already ended (the record says how).
        """
        record = await self.get(task_id, principal=principal)
        if record.status in TERMINAL_STATUSES:
            raise TaskFinished(record)
        cancelled = await self.update(
            task_id,
            lambda r: msgspec.structs.replace(
                r, status="cancelled", status_message="cancelled by the client", running=False
            ),
        )
        if cancelled is None:  # it ended meanwhile
            raise TaskFinished(await self.get(task_id))
        with nats_boundary:
            await self._nc.publish(self._subjects.cancel(task_id), b"")
        return cancelled

    # -- asking (a task's guest asks its client: workers.sandbox.replay) -------------------------
    async def wait_for_input(
        self, work: TaskWork, question: dict[str, Any], rounds: builtins.list[dict[str, Any]]
    ) -> TaskRecord | None:
        """Park a task whose guest asked ``question`` (its run ended there): ``input_required``
        with the question pending, the answers it was replayed, and what queuing it again needs.
        A redelivered run that asks again replaces the question (and any partial answers). None
        when the task has ended (cancelled meanwhile).

        Arguments over ``PARKED_ARGUMENTS_BYTES`` are kept beside the result, as ``submit`` keeps
        those too large for one message, rather than in the record.
        """
        if work.arguments and not work.arguments_object:
            encoded = encode(work.arguments)
            if len(encoded) > PARKED_ARGUMENTS_BYTES:
                name = arguments_object(work.task_id)
                await put_object(self.results, name, encoded)
                work = msgspec.structs.replace(work, arguments={}, arguments_object=name)
        return await self.update(
            work.task_id,
            lambda r: msgspec.structs.replace(
                r,
                status="input_required",
                status_message="waiting for the client's answer (tasks/update)",
                running=False,
                input_requests=question,
                answered={},
                rounds=rounds,
                arguments=work.arguments,
                arguments_object=work.arguments_object,
                capabilities=work.capabilities,
            ),
        )

    async def answer(self, task_id: str, responses: dict[str, Any], *, principal: str | None = None) -> TaskRecord:
        """Take a client's answers to a task's pending question (``tasks/update``).

        Only keys the question still asks count: others (never asked, answered already, a task
        not waiting) change nothing. Once every key is answered the task is ``working`` again and
        its work is queued with the answers as one more round (``TaskWork.rounds``). Returns the
        record as it is now.

        Raises:
            TaskNotFound: no such task for this principal.
        """
        record = await self.get(task_id, principal=principal)
        parked: TaskRecord | None = None

        def change(r: TaskRecord) -> TaskRecord | None:
            nonlocal parked
            taken = {k: v for k, v in responses.items() if k in r.input_requests}
            if r.status != "input_required" or not taken:
                return None
            answered = {**r.answered, **taken}
            pending = {k: v for k, v in r.input_requests.items() if k not in answered}
            parked = r
            if pending:
                parked = None  # still waiting: nothing to queue
                return msgspec.structs.replace(r, input_requests=pending, answered=answered)
            return msgspec.structs.replace(
                r,
                status="working",
                status_message="answered; queued again",
                input_requests={},
                answered={},
                rounds=[*r.rounds, answered],
                arguments=None,
                arguments_object="",
                capabilities=[],
            )

        changed = await self.update(task_id, change)
        if changed is None:
            return record
        if parked is not None and changed.status == "working":
            work = TaskWork(
                task_id=task_id,
                tool=changed.tool,
                arguments=parked.arguments or {},
                arguments_object=parked.arguments_object,
                rounds=changed.rounds,
                capabilities=parked.capabilities,
            )
            # One message id per round: a retried publish of the same round is a no-op.
            await self._queue(work, message_id=f"{task_id}.{len(changed.rounds)}")
        return changed

    async def forget(self, task_id: str) -> None:
        """Delete a task's record, result and stored arguments (its TTL has passed)."""
        with nats_boundary:
            await self.kv.delete(task_id)
        for name in (task_id, arguments_object(task_id)):
            try:
                with nats_boundary:
                    await self.results.delete(name)
            except NotFound:
                pass

    async def _read(self, task_id: str) -> tuple[TaskRecord | None, int]:
        try:
            with nats_boundary:
                entry = await self.kv.get(task_id)
        except (KeyNotFound, KeyDeleted, InvalidKey):
            return None, 0  # an id that cannot even be a key names no task
        if not entry.value:
            return None, 0
        return decode(entry.value, TaskRecord), entry.revision or 0

    async def _announce(self, record: TaskRecord) -> None:
        with nats_boundary:
            await self._nc.publish(self._subjects.task_status(record.task_id), encode(record))


async def ensure_tasks_stream(nc: NatsClient, subjects: Subjects, *, replicas: int = 1) -> None:
    """The work-queue stream of tasks (file storage: queued work survives a server restart)."""
    await ensure_stream(
        nc,
        StreamConfig(
            name=subjects.tasks_stream,
            subjects=[subjects.task_work_any],
            retention=RetentionPolicy.WORK_QUEUE,
            storage=StorageType.FILE,
            num_replicas=replicas,
            duplicate_window=120.0,
        ),
    )


def task_consumer_config(subjects: Subjects, tool: str, settings: TasksSettings) -> ConsumerConfig:
    """The durable pull consumer every worker serving ``tool`` shares (created by the first one)."""
    return ConsumerConfig(
        durable_name=subjects.task_consumer(tool),
        filter_subject=subjects.task_work(tool),
        ack_wait=settings.ack_wait_s,
        max_deliver=settings.max_deliver,
        max_ack_pending=-1,
    )
