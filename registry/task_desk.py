"""Tasks over plain NATS, and the registry's housekeeping of them.

Requests on ``PREFIX.tasks.{submit,get,result,cancel,list}`` (registry replicas share a queue
group) let any NATS client use tasks the way an MCP client does through a gateway:

    nats req toolbus.tasks.submit '{"tool":"calc_add","arguments":{"a":2,"b":3}}'
    nats req toolbus.tasks.get '{"taskId":"…"}'

Requests and replies larger than one message use the claim check of calls (``bus.payloads``):
a submit may carry ``Toolbus-Payload`` instead of its body, and a result too large for one
message comes back as an empty reply with that header, naming an object of ``PREFIX_payloads``.

A task for a tool the catalogue does not know (not listed, never offered by a worker since the
registry started) is refused with UNKNOWN_TOOL, as a call for it is; a known tool whose workers
are all away is queued until one returns.

A plain NATS submitter has no verified identity: its tasks belong to the principal ``nats``.
A request may act for another principal (``principal`` in the body; ``*`` lists everyone's)
only when it is vouched for: with ``[nats] principal_key`` set, the request must carry that
principal signed for its ``Toolbus-Request-Id`` (``bus.principal``), as gateways and the
``toolbus tasks`` of an operator holding the key send it; anything else is refused. Without a
key (a development deployment, like auth off) a claimed principal is taken as said. The desk also:

- fails a task whose work was delivered ``tasks.max_deliver`` times without an ack (every worker
  that took it died or failed): JetStream tells us with a max-deliveries advisory, and the work's
  acknowledgement scope (``bus.acks.Exhausted``) removes it from the stream once that is recorded;
- deletes finished tasks and their results once their TTL has passed.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable

import msgspec
import structlog
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from bus.acks import Exhausted
from bus.cancellation import cancel_and_wait
from bus.connection import published_only, unsubscribe_quietly
from bus.errors import BusError, PayloadGone, PayloadRefused, PayloadTooLarge, nats_boundary
from bus.payloads import Payloads
from bus.principal import PrincipalSigner
from bus.replies import send_error
from bus.subjects import TASK_VERBS, Subjects, is_valid_tool_name
from registry.errors import UnknownTool
from schemas.codec import DecodeError, decode, encode
from schemas.errors import ErrorCode
from schemas.wire import TERMINAL_STATUSES, TaskList, TaskQuery, TaskRecord, TaskSubmit, TaskWork
from stores import ArgumentsTooLarge, TaskFinished, TaskNotFound, TaskStore

log = structlog.get_logger(__name__)

NATS_PRINCIPAL = "nats"
"""Owner of tasks submitted over plain NATS without a principal."""
SWEEP_INTERVAL_S = 30.0


class TaskDesk:
    """Answers task requests and keeps the task store tidy, until stopped."""

    def __init__(
        self,
        nc: NatsClient,
        subjects: Subjects,
        store: TaskStore,
        knows: Callable[[str], bool],
        signer: PrincipalSigner | None = None,
        payloads: Payloads | None = None,
    ) -> None:
        self._nc = nc
        self._payloads = payloads or Payloads(nc, subjects, max_bytes=store.max_payload_bytes)
        self._subjects = subjects
        self._store = store
        self._knows = knows  # the catalogue's: is this a tool some worker serves or has served?
        self._signer = signer
        self._subscriptions: list[Subscription] = []
        self._sweeper: asyncio.Task[None] | None = None

    async def start(self) -> None:
        q = self._subjects.registry_queue
        handlers: dict[str, Callable[[Msg], Awaitable[bytes]]] = {
            "submit": self._submit,
            "get": self._get,
            "result": self._result,
            "cancel": self._cancel,
            "list": self._list,
        }
        assert set(handlers) == TASK_VERBS
        for verb, handler in handlers.items():
            self._subscriptions.append(
                await self._nc.subscribe(
                    self._subjects.task_request(verb),
                    queue=q,
                    cb=published_only(self._subjects.task_request(verb), _guarded(self._nc, self._payloads, handler)),
                )
            )
        self._subscriptions.append(
            await self._nc.subscribe(
                self._subjects.tasks_max_deliveries_advisory,
                queue=q,
                cb=published_only(self._subjects.tasks_max_deliveries_advisory, self._on_max_deliveries),
            )
        )
        self._sweeper = asyncio.create_task(self._sweep_periodically())

    async def stop(self) -> None:
        for sub in self._subscriptions:
            await unsubscribe_quietly(sub)
        if self._sweeper is not None:
            await cancel_and_wait([self._sweeper])

    # -- requests -------------------------------------------------------------------------------
    async def _submit(self, msg: Msg) -> bytes:
        # A submit too large for one message comes as a claim check; the principal's signature
        # covers the real body, so it is read first.
        msg.data, name = await self._payloads.claim(msg.headers, msg.data)
        if name is not None:
            await self._payloads.delete(name)
        request = decode(msg.data, TaskSubmit)
        if not is_valid_tool_name(request.tool):
            raise ValueError(f"{request.tool!r} is not a tool name")
        principal = self._principal(msg, request.principal)  # first: the unvouched learn nothing
        if not self._knows(request.tool):
            # Queued work for a tool nobody serves would stay `working` forever (and survive
            # restarts); a known tool whose workers are away is queued for their return.
            raise UnknownTool(f"unknown tool {request.tool!r}; `toolbus tools` lists the tools on this bus")
        record = await self._store.submit(request.tool, request.arguments, principal=principal, ttl_ms=request.ttl_ms)
        return encode(record)

    async def _get(self, msg: Msg) -> bytes:
        query = decode(msg.data, TaskQuery)
        return encode(await self._store.get(query.task_id, principal=self._principal(msg, query.principal)))

    async def _result(self, msg: Msg) -> bytes:
        query = decode(msg.data, TaskQuery)
        record = await self._store.get(query.task_id, principal=self._principal(msg, query.principal))
        if record.status not in TERMINAL_STATUSES or not record.result_stored:
            raise TaskFinished(record) if record.status in TERMINAL_STATUSES else _NotReady(record.status)
        result = await self._store.result(query.task_id)
        if result is None:
            raise TaskNotFound(f"the result of task {query.task_id!r} is gone")
        return result  # a claim check when it is larger than one message (_guarded)

    async def _cancel(self, msg: Msg) -> bytes:
        query = decode(msg.data, TaskQuery)
        return encode(await self._store.cancel(query.task_id, principal=self._principal(msg, query.principal)))

    async def _list(self, msg: Msg) -> bytes:
        query = decode(msg.data, TaskQuery) if msg.data.strip() else TaskQuery()
        # `*` lists every principal's tasks: for operators (`toolbus tasks --all`); issue 7 guards it.
        claimed = self._principal(msg, query.principal)
        principal = None if claimed == "*" else claimed
        tasks, cursor = await self._store.list(principal=principal, cursor=query.cursor, limit=query.limit)
        return encode(TaskList(tasks=tasks, next_cursor=cursor))

    def _principal(self, msg: Msg, claimed: str) -> str:
        """Whose tasks a request acts on: ``nats`` unless it claims a principal it may speak for.

        Raises:
            UnvouchedPrincipal: the request claims a principal without a valid signature.
        """
        if not claimed:
            return NATS_PRINCIPAL
        if self._signer is None:
            return claimed
        headers = msg.headers or {}
        # Bound to this subject and body: a signature lifted from a call proves nothing here.
        if self._signer.verified(headers, msg.subject, msg.data) != claimed:
            raise UnvouchedPrincipal(
                f"this request claims principal {claimed!r} without a gateway's signature; only holders of "
                "the principal key (gateways, operators) may act for a principal"
            )
        return claimed

    # -- housekeeping ---------------------------------------------------------------------------
    async def _on_max_deliveries(self, msg: Msg) -> None:
        js = self._nc.jetstream()
        try:
            advisory = json.loads(msg.data)
            sequence = int(advisory["stream_seq"])
            with nats_boundary:
                stored = await js.get_msg(self._subjects.tasks_stream, sequence)
            work = decode(stored.data or b"", TaskWork)
        except (ValueError, KeyError, DecodeError, BusError) as exc:
            log.warning("max-deliveries advisory not understood", error=str(exc))
            return
        # Its scope deletes the work from the stream once the failure is recorded (bus.acks).
        async with Exhausted(js, self._subjects.tasks_stream, sequence):
            deliveries = self._store.settings.max_deliver
            message = f"failed: delivered {deliveries} times and never finished (its workers stopped running it)"
            failed = await self._store.update(
                work.task_id,
                lambda r: msgspec.structs.replace(r, status="failed", status_message=message, running=False),
            )
            if failed is not None:
                log.error("task failed after its last delivery", task_id=work.task_id, tool=work.tool)

    async def _sweep_periodically(self) -> None:
        while True:
            await asyncio.sleep(SWEEP_INTERVAL_S)
            try:
                await self.sweep()
            except BusError as exc:
                log.warning("task sweep failed", error=str(exc))

    async def sweep(self) -> int:
        """Fail tasks that waited too long for input; forget finished tasks whose TTL has passed (how many)."""
        now = time.time()
        records = await self._store.records()
        wait_s = self._store.settings.input_wait_s
        for task in records:
            if task.status == "input_required" and task.updated_at + wait_s < now:
                await self._store.update(task.task_id, _unanswered(wait_s))
        expired = [t for t in records if t.status in TERMINAL_STATUSES and t.updated_at + t.ttl_ms / 1000 < now]
        for task in expired:
            await self._store.forget(task.task_id)
        return len(expired)


def _unanswered(wait_s: float) -> Callable[[TaskRecord], TaskRecord | None]:
    """The change that fails a task still waiting for input after ``wait_s`` (``tasks.input_wait_s``)."""
    message = f"failed: the client did not answer the task's question within {wait_s:g} s"

    def change(record: TaskRecord) -> TaskRecord | None:
        if record.status != "input_required" or record.updated_at + wait_s >= time.time():
            return None  # answered meanwhile
        return msgspec.structs.replace(record, status="failed", status_message=message, running=False)

    return change


class UnvouchedPrincipal(Exception):
    """Raised when a task request claims a principal without a valid gateway signature."""


class _NotReady(Exception):
    def __init__(self, status: str) -> None:
        super().__init__(f"the task is still {status}; ask again later")


_REFUSALS: tuple[tuple[type[Exception] | tuple[type[Exception], ...], ErrorCode], ...] = (
    ((DecodeError, ValueError, PayloadRefused, PayloadGone), ErrorCode.BAD_REQUEST),
    (TaskNotFound, ErrorCode.TASK_NOT_FOUND),
    ((TaskFinished, _NotReady), ErrorCode.TASK_STATE),
    ((PayloadTooLarge, ArgumentsTooLarge), ErrorCode.PAYLOAD_TOO_LARGE),
    (UnvouchedPrincipal, ErrorCode.FORBIDDEN),
    (UnknownTool, ErrorCode.UNKNOWN_TOOL),
)
"""Which refusal answers which exception; anything else is a bug (INTERNAL, logged)."""


def _guarded(
    nc: NatsClient, payloads: Payloads, handler: Callable[[Msg], Awaitable[bytes]]
) -> Callable[[Msg], Awaitable[None]]:
    """A request callback that always replies: the handler's bytes (as a claim check when larger
    than one message), or a typed error."""

    async def handle(msg: Msg) -> None:
        if not msg.reply:
            return
        try:
            body, headers = await payloads.offload(await handler(msg), None)
        except Exception as exc:  # the outermost handler: every request gets a reply
            code = next((code for kinds, code in _REFUSALS if isinstance(exc, kinds)), None)
            if code is None:
                log.exception("task request failed", subject=msg.subject)
                await send_error(nc, msg.reply, ErrorCode.INTERNAL, "internal error in the registry; see its logs")
            else:
                await send_error(nc, msg.reply, code, str(exc))
            return
        await nc.publish(msg.reply, body, headers=headers)

    return handle
