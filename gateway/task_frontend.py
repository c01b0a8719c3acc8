"""Durable MCP tasks at the gateway, in both protocol eras, over ``stores.TaskStore``.

A task is a ``tools/call`` that runs in the background: the gateway records it with
``TaskStore.submit`` (the record is in KV before the client hears the id), a worker takes the
work from JetStream, and the client polls. Nothing about a task lives in the gateway, so any
gateway of the deployment — including one started after the task was created — answers for it.

2025-11-25 (the experimental core feature):
- ``tools/call`` with ``params.task`` (``{ttl?}``) → ``CreateTaskResult`` ``{task: Task}``;
- ``tasks/get`` → the ``Task``; ``tasks/list`` → the principal's tasks, newest first, paged;
- ``tasks/result`` → waits until the task ends, then the stored ``CallToolResult`` (with
  ``_meta["io.modelcontextprotocol/related-task"]``), or the JSON-RPC error the call would have
  had (cancelled → CANCELLED, failed without a result → internal error);
- ``tasks/cancel`` → the cancelled ``Task`` (a running guest is interrupted), ``-32602`` for a
  task that already ended;
- ``notifications/tasks/status`` on the creating session's GET stream while the task changes;
- ``initialize`` advertises ``tasks: {list, cancel, requests: {tools: {call}}}`` and every tool
  in ``tools/list`` carries its ``execution.taskSupport`` (``gateway.catalogue_mirror.tool_json``).

2026-07-28 (the extension ``io.modelcontextprotocol/tasks``):
- a ``tools/call`` whose request declares the extension in its client capabilities becomes a
  task unless the tool's task support is ``forbidden`` (the server decides), answered
  ``resultType: "task"`` with the task;
- ``tasks/get`` → the task with its ``result`` (completed) or ``error`` (failed, or a guest that
  crashed: ``TaskRecord.crashed``) inlined;
  ``tasks/update`` → answers a task's pending question (status ``input_required``, its
  ``inputRequests`` shown by tasks/get: a guest that asks, ``workers.sandbox.replay``), then an
  empty acknowledgement;
  ``tasks/cancel`` → an empty acknowledgement; all three need the extension declared;
- ``server/discover`` advertises the extension (``gateway.server``).

Whether a call becomes a task, given the tool's task support, is ``task_route`` (both eras,
both paths). Whose tasks a request sees is decided in one place, ``gateway.principals.principal_of``.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from typing import Any, Final

import mcp_types as types
import msgspec
import structlog
from mcp.server.context import CallNext, HandlerResult, ServerRequestContext
from mcp.shared.exceptions import MCPError
from mcp_types import METHOD_NOT_FOUND, MISSING_REQUIRED_CLIENT_CAPABILITY
from nats.aio.client import Client as NatsClient
from nats.aio.subscription import Subscription
from pydantic import ValidationError

from bus.cancellation import cancel_and_wait
from bus.errors import BusError, BusTimeout, nats_boundary
from bus.subjects import Subjects
from gateway.askers import REQUEST_TYPES, as_json, capabilities_of
from gateway.calls import unsubscribe_quietly
from gateway.errors import (
    INTERNAL_ERROR,
    INVALID_PARAMS,
    JSONRPC_ERRORS,
    BusDisconnected,
    CallFailed,
    Cancelled,
    PayloadTooLarge,
    UnknownTool,
    WorkerFailed,
    to_jsonrpc,
)
from gateway.inbound import TASKS_EXTENSION, creates_task, declares_tasks
from gateway.principals import principal_of
from gateway.questions import RoundState
from gateway.sdk_adapter import connection_of
from gateway.tool_service import UNKNOWN_TOOL_HINT, ToolService, downgrade, is_modern
from gateway.views import view_of
from schemas.codec import DecodeError, decode, encode
from schemas.errors import ErrorCode
from schemas.wire import TERMINAL_STATUSES, CallToolResult, TaskRecord, TaskSupport
from stores import ArgumentsTooLarge, TaskFinished, TaskStore, UnknownCursor
from stores import TaskNotFound as StoreTaskNotFound

log = structlog.get_logger(__name__)

RELATED_TASK_META_KEY: Final = "io.modelcontextprotocol/related-task"
TASK_STATUS_NOTIFICATION: Final = "notifications/tasks/status"
LEGACY_TASKS_CAPABILITY: Final = types.ServerTasksCapability(
    list=types.TasksListCapability(),
    cancel=types.TasksCancelCapability(),
    requests=types.ServerTasksRequestsCapability(tools=types.TasksToolsCapability(call=types.TasksCallCapability())),
)
"""What the 2025-11-25 ``initialize`` says: tasks/list, tasks/cancel and task-augmented tools/call."""
MAX_INPUT_RESPONSES_BYTES: Final = 32 * 1024
"""What one ``tasks/update`` may carry: the answers are kept in the task's record (a KV value,
replayed to every later run of its guest, at most ``MAX_ASK_ROUNDS`` rounds of them)."""
RECHECK_S: Final = 15.0
"""A task being waited for (``tasks/result``) or followed (status notifications) is re-read from
the store this often, in case a status message was lost (NATS reconnecting)."""


def iso8601(unix_s: float) -> str:
    """A Unix time as an ISO 8601 / RFC 3339 UTC timestamp with milliseconds."""
    return datetime.fromtimestamp(unix_s, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _task_json(record: TaskRecord, status: str, ttl_key: str, poll_key: str) -> dict[str, Any]:
    """A ``Task`` of a record; the eras differ only in its status and two key names."""
    task: dict[str, Any] = {"taskId": record.task_id, "status": status}
    if record.status_message:
        task["statusMessage"] = record.status_message
    task |= {
        "createdAt": iso8601(record.created_at),
        "lastUpdatedAt": iso8601(record.updated_at),
        ttl_key: record.ttl_ms,
        poll_key: record.poll_interval_ms,
    }
    return task


def legacy_task(record: TaskRecord) -> dict[str, Any]:
    """The 2025-11-25 ``Task`` of a record."""
    return _task_json(record, record.status, "ttl", "pollInterval")


def modern_status(record: TaskRecord) -> str:
    """The 2026-07-28 status of a record.

    The extension keeps ``failed`` for JSON-RPC errors: a tool that returned ``isError: true``
    (stored as ``failed`` with its result) is ``completed`` there, with that result. A guest that
    crashed (trapped, exited, hit a limit: ``record.crashed``) did not return, so it stays ``failed``.
    """
    if record.status == "failed" and record.result_stored and not record.crashed:
        return "completed"
    return record.status


def modern_task(record: TaskRecord) -> dict[str, Any]:
    """The 2026-07-28 ``Task`` of a record (without ``result``/``error``)."""
    return _task_json(record, modern_status(record), "ttlMs", "pollIntervalMs")


class UpdateTaskRequestParams(types.RequestParams):
    """``tasks/update`` (2026-07-28 extension): responses to a task's outstanding input requests."""

    task_id: str
    input_responses: dict[str, Any] | None = None


def task_error(code: ErrorCode, message: str, task_id: str) -> MCPError:
    """The JSON-RPC error for a task request refused with a bus error code (through ``JSONRPC_ERRORS``)."""
    data = {"reason": code.name, "retryable": code.retryable, "taskId": task_id}
    return MCPError(JSONRPC_ERRORS[code], message, data)


def _call_error(exc: CallFailed, task_id: str | None = None) -> MCPError:
    error = to_jsonrpc(exc)
    data = error.data if task_id is None else {**error.data, "taskId": task_id}
    return MCPError(error.code, error.message, data)


def _missing_extension() -> MCPError:
    data: dict[str, Any] = {"requiredCapabilities": {"extensions": {TASKS_EXTENSION: {}}}}
    return MCPError(MISSING_REQUIRED_CLIENT_CAPABILITY, "Missing required client capability", data)


def task_route(asked: bool, support: TaskSupport | None, *, modern: bool, tool: str) -> bool:
    """Whether a ``tools/call`` runs as a task: the one rule, for both eras and both paths.

    ``asked`` is the request's own wish (``inbound.creates_task``: 2025 ``params.task``, 2026 the
    extension declared); ``support`` the tool's ``taskSupport`` (None: not in the catalogue, whose
    own error follows). 2026-07-28 lets the server decide, so a ``forbidden`` tool simply runs as a
    call, and a ``required`` one from a client without the extension is -32021 naming it. 2025-11-25
    says -32601 for both mismatches (a task for a ``forbidden`` tool, none for a ``required`` one).
    The hot path hands every call of a ``required`` tool to the SDK, so this is decided here alone.

    Raises:
        MCPError: the era refuses this combination.
    """
    if support is None or support == "optional":
        return asked
    if support == "forbidden":
        if asked and not modern:
            raise MCPError(
                METHOD_NOT_FOUND,
                f"tool {tool!r} cannot run as a task (taskSupport is 'forbidden'); call it without params.task",
                {"tool": tool, "taskSupport": support},
            )
        return False
    if not asked:
        if modern:
            error = _missing_extension()
            raise MCPError(
                error.code,
                f"tool {tool!r} runs only as a task: declare the {TASKS_EXTENSION} extension in the request",
                {**(error.data or {}), "tool": tool},
            )
        raise MCPError(
            METHOD_NOT_FOUND,
            f"tool {tool!r} runs only as a task (taskSupport is 'required'); call it with params.task",
            {"tool": tool, "taskSupport": support},
        )
    return True


def _method_not_found(method: str) -> MCPError:
    return MCPError(METHOD_NOT_FOUND, "Method not found", method)


@contextlib.contextmanager
def _task_errors(task_id: str) -> Iterator[None]:
    """Store and bus failures of a task request as the client's JSON-RPC errors."""
    try:
        with nats_boundary:
            yield
    except StoreTaskNotFound:
        raise task_error(ErrorCode.TASK_NOT_FOUND, f"no task {task_id!r}", task_id) from None
    except BusError as exc:
        raise _call_error(
            BusDisconnected(
                "the gateway cannot reach the task store right now; retry later", tool="", detail=type(exc).__name__
            ),
            task_id,
        ) from None


class TaskFrontend:
    """The gateway's task handlers; ``store`` and ``nc`` are attached once NATS is connected."""

    def __init__(self, service: ToolService, subjects: Subjects, *, page_size: int) -> None:
        self.service = service
        self.subjects = subjects
        self.page_size = page_size
        self.store: TaskStore | None = None
        self.nc: NatsClient | None = None
        self._meta: dict[str, Any] = {}
        """``_meta`` of a 2026-era ``CreateTaskResult``: the SDK server's ``serverInfo`` stamp
        (set by ``register``; shared by every answer, never mutated)."""
        self._followers: set[asyncio.Task[None]] = set()

    def attach(self, nc: NatsClient, store: TaskStore) -> None:
        self.nc = nc
        self.store = store

    async def stop(self) -> None:
        """Stop following tasks for status notifications (at shutdown)."""
        followers, self._followers = self._followers, set()
        await cancel_and_wait(followers)

    def register(self, server: Any) -> None:
        """Add the ``tasks/*`` handlers and the ``tools/call`` interception to an SDK ``Server``."""
        # A middleware's own answer is not stamped by the SDK: intercept_call stamps it.
        self._meta = {types.SERVER_INFO_META_KEY: server.server_info_stamp}
        server.add_request_handler("tasks/get", types.GetTaskRequestParams, self.get)
        server.add_request_handler("tasks/result", types.GetTaskPayloadRequestParams, self.result)
        server.add_request_handler("tasks/list", types.PaginatedRequestParams, self.list)
        server.add_request_handler("tasks/cancel", types.CancelTaskRequestParams, self.cancel)
        server.add_request_handler("tasks/update", UpdateTaskRequestParams, self.update)
        # Innermost middleware: a task-augmented tools/call is answered here, before the SDK
        # validates the result as a CallToolResult (2025) or runs the tools/call handler.
        server.middleware.append(self.intercept_call)

    def _store(self) -> TaskStore:
        if self.store is None:
            raise _call_error(BusDisconnected("the gateway is still starting; retry in a moment", tool=""))
        return self.store

    # -- creating -------------------------------------------------------------------------------
    async def intercept_call(self, ctx: ServerRequestContext[Any, Any], call_next: CallNext) -> HandlerResult:
        """``tools/call`` as a task when asked (2025: ``params.task``; 2026: the extension declared)."""
        if ctx.method != "tools/call":
            return await call_next(ctx)
        raw = ctx.params if isinstance(ctx.params, Mapping) else {}
        modern = is_modern(ctx.protocol_version)
        name = raw.get("name")
        if isinstance(name, str) and self.service.entry(name, view_of(ctx)) is None:
            return await call_next(ctx)  # unknown on this path (gateway.views): the call says so
        support = self.service.catalogue.task_support(name) if isinstance(name, str) else None
        if not task_route(creates_task(dict(raw), modern=modern), support, modern=modern, tool=str(name)):
            return await call_next(ctx)
        try:
            params = types.CallToolRequestParams.model_validate(raw, by_name=False)
        except ValidationError as exc:
            raise MCPError(INVALID_PARAMS, f"invalid tools/call params: {exc.errors()[0]['msg']}") from None
        if modern and support != "required" and self._over_the_cap(params.arguments):
            # 2026 lets the server decide: run as a call, whose answer is an isError naming the cap
            # (gateway.calls), rather than refuse the task with a JSON-RPC error the model never sees.
            return await call_next(ctx)
        rounds: list[dict[str, Any]] | None = None
        if modern and support == "required" and self._asks(params.name):
            # MRTR, then a task: the call's questions are asked as a plain call's are (round 1:
            # input_required, the guest waiting on its worker); the retry that answers them all
            # becomes the task, whose guest is re-run with those answers (TaskWork.rounds).
            if params.request_state is None:
                return await call_next(ctx)
            rounds = await self._answers_before_task(params)
            if rounds is None:  # answers missing: the plain call's path asks again
                return await call_next(ctx)
        ttl_ms = None if modern or params.task is None else params.task.ttl
        # Only the 2026 extension can answer a task's questions (tasks/update): a 2025 task's guest
        # hears `unsupported` when it asks.
        capabilities = capabilities_of(ctx.session.client_capabilities) if modern else frozenset()
        record = await self.create(
            params.name,
            params.arguments or {},
            principal=principal_of(ctx).subject,
            ttl_ms=ttl_ms,
            capabilities=capabilities,
            rounds=rounds,
        )
        if modern:
            return {"resultType": "task", **modern_task(record), "_meta": self._meta}
        self.follow(connection_of(ctx), record)
        return {"task": legacy_task(record)}

    def _over_the_cap(self, arguments: dict[str, Any] | None) -> bool:
        """Whether a task's arguments are over ``[nats] max_payload_bytes`` (``TaskStore.submit`` refuses them)."""
        store = self.store
        return store is not None and len(encode(arguments or {})) > store.max_payload_bytes

    def _asks(self, tool: str) -> bool:
        entry = self.service.catalogue.get(tool)
        return entry is not None and entry.descriptor.asks

    async def _answers_before_task(self, params: types.CallToolRequestParams) -> list[dict[str, Any]] | None:
        """The round-1 answers a ``required`` tool's task starts with, once the retry answers
        every key of the question; the round-1 guest, waiting on its worker, is stopped (the task
        re-runs it). None: a key is unanswered (the question stands).

        Raises:
            MCPError: the ``requestState`` is not a call's (verified and sealed by this deployment).
        """
        assert params.request_state is not None
        try:
            state = RoundState.decode(params.request_state)
        except ValueError:
            raise MCPError(INVALID_PARAMS, "Invalid or expired requestState") from None
        responses = {key: as_json(value) for key, value in (params.input_responses or {}).items()}
        question = state.question.requests
        if not question.keys() <= responses.keys():
            return None
        answers = {}
        for key, request in question.items():
            kinds = REQUEST_TYPES.get(request.get("method", ""))
            try:
                answers[key] = responses[key] if kinds is None else as_json(kinds[1].model_validate(responses[key]))
            except ValidationError as exc:
                why = exc.errors()[0]["msg"]
                raise MCPError(INVALID_PARAMS, f"inputResponses[{key!r}] is not a valid answer: {why}") from None
        caller = self.service.caller
        if caller is not None:
            await caller.cancel(state.request_id)
        return [answers]

    async def create(
        self,
        tool: str,
        arguments: dict[str, Any],
        *,
        principal: str,
        ttl_ms: int | None = None,
        capabilities: frozenset[str] = frozenset(),
        rounds: list[dict[str, Any]] | None = None,
    ) -> TaskRecord:
        """Record and queue a task for ``tool``; the record exists before this returns.

        The tool must be in the catalogue (else the call's own UNKNOWN_TOOL error). Arguments
        are checked by the worker, like a call's: invalid ones end the task ``failed`` with the
        reason, so a client always gets a task it can poll.
        """
        if self.service.catalogue.get(tool) is None:
            raise _call_error(UnknownTool(f"unknown tool {tool!r}; {UNKNOWN_TOOL_HINT}", tool=tool))
        store = self._store()
        try:
            record = await store.submit(
                tool, arguments, principal=principal, ttl_ms=ttl_ms, capabilities=capabilities, rounds=rounds
            )
        except ArgumentsTooLarge as exc:
            # No result to carry an isError yet: the task request itself is refused, naming the cap.
            raise _call_error(PayloadTooLarge(f"no task for tool {tool!r}: {exc}", tool=tool)) from None
        except BusError as exc:
            raise _call_error(
                BusDisconnected(
                    f"the gateway cannot queue a task for tool {tool!r} right now; retry later",
                    tool=tool,
                    detail=type(exc).__name__,
                )
            ) from None
        log.info("task created", task_id=record.task_id, tool=tool, principal=principal)
        return record

    # -- 2025-11-25 status notifications ----------------------------------------------------------
    def follow(self, connection: Any, record: TaskRecord) -> None:
        """Send ``notifications/tasks/status`` to a 2025 session while its task changes.

        Until the task ends or the session does (whichever is first).
        """
        if self.nc is None:
            return
        follower = asyncio.create_task(self._follow(connection, record), name=f"task-status-{record.task_id}")
        self._followers.add(follower)
        follower.add_done_callback(self._followers.discard)
        connection.exit_stack.callback(follower.cancel)

    async def _follow(self, connection: Any, record: TaskRecord) -> None:
        assert self.nc is not None
        store = self._store()
        try:
            with nats_boundary:
                subscription = await self.nc.subscribe(self.subjects.task_status(record.task_id))
        except BusError as exc:
            log.debug("task status not followed", task_id=record.task_id, error=type(exc).__name__)
            return
        sent = record  # the client has this one (the CreateTaskResult)
        try:
            # Changes made before the subscription existed: the record has them.
            current: TaskRecord | None = await store.get(record.task_id)
            while True:
                if current is not None and _newer(current, sent):
                    await connection.notify(TASK_STATUS_NOTIFICATION, legacy_task(current))
                    sent = current
                if sent.status in TERMINAL_STATUSES:
                    return
                current = await _next_status(subscription, store, record.task_id)
        except (StoreTaskNotFound, BusError) as exc:
            log.debug("task status no longer followed", task_id=record.task_id, error=type(exc).__name__)
        finally:
            await unsubscribe_quietly(subscription)

    # -- reading --------------------------------------------------------------------------------
    def _check(
        self, ctx: ServerRequestContext[Any, Any], *, legacy_only: bool = False, modern_only: bool = False
    ) -> bool:
        """Whether the request is 2026-era; refuses what its era does not have."""
        modern = is_modern(ctx.protocol_version)
        if (legacy_only and modern) or (modern_only and not modern):
            raise _method_not_found(ctx.method)
        if modern and not declares_tasks(_raw_meta(ctx)):
            raise _missing_extension()
        return modern

    async def _record(self, ctx: ServerRequestContext[Any, Any], task_id: str) -> TaskRecord:
        with _task_errors(task_id):
            return await self._store().get(task_id, principal=principal_of(ctx).subject)

    async def get(self, ctx: ServerRequestContext[Any, Any], params: types.GetTaskRequestParams) -> dict[str, Any]:
        """``tasks/get``: 2025 → the ``Task``; 2026 → the task with its result or error inlined."""
        modern = self._check(ctx)
        record = await self._record(ctx, params.task_id)
        if not modern:
            return legacy_task(record)
        task = modern_task(record)
        if task["status"] == "completed":
            task["result"] = msgspec.to_builtins(await self._result_of(record, modern=True))
        elif task["status"] == "failed":
            task["error"] = {"code": INTERNAL_ERROR, "message": record.status_message or "the task failed"}
        elif task["status"] == "input_required":
            task["inputRequests"] = record.input_requests
        return task

    async def list(self, ctx: ServerRequestContext[Any, Any], params: types.PaginatedRequestParams) -> dict[str, Any]:
        """``tasks/list`` (2025 only): the principal's tasks, newest first, one page."""
        self._check(ctx, legacy_only=True)
        principal = principal_of(ctx).subject
        cursor = params.cursor or ""
        try:
            with _task_errors(cursor):
                tasks, next_cursor = await self._store().list(principal=principal, cursor=cursor, limit=self.page_size)
        except UnknownCursor:
            raise MCPError(INVALID_PARAMS, f"invalid tasks/list cursor {cursor!r}") from None
        result: dict[str, Any] = {"tasks": [legacy_task(t) for t in tasks]}
        if next_cursor:
            result["nextCursor"] = next_cursor
        return result

    async def result(
        self, ctx: ServerRequestContext[Any, Any], params: types.GetTaskPayloadRequestParams
    ) -> dict[str, Any]:
        """``tasks/result`` (2025 only): wait until the task ends, then what its tools/call would have returned."""
        self._check(ctx, legacy_only=True)
        task_id = params.task_id
        record = await self._record(ctx, task_id)
        if record.status not in TERMINAL_STATUSES:
            record = await self._until_ended(ctx, task_id)
        if record.status == "cancelled":
            raise _call_error(Cancelled(f"task {task_id!r} was cancelled", tool=record.tool), task_id)
        if not record.result_stored:
            message = record.status_message or "the task failed without a result"
            raise _call_error(WorkerFailed(f"tool {record.tool!r}: {message}", tool=record.tool), task_id)
        result: dict[str, Any] = msgspec.to_builtins(await self._result_of(record, modern=False))
        result["_meta"] = {RELATED_TASK_META_KEY: {"taskId": task_id}}
        return result

    async def _until_ended(self, ctx: ServerRequestContext[Any, Any], task_id: str) -> TaskRecord:
        assert self.nc is not None
        store = self._store()
        principal = principal_of(ctx).subject
        with _task_errors(task_id):
            subscription = await self.nc.subscribe(self.subjects.task_status(task_id))
            try:
                record: TaskRecord | None = await store.get(task_id, principal=principal)
                while record is None or record.status not in TERMINAL_STATUSES:
                    record = await _next_status(subscription, store, task_id)
                return record  # terminal records never change again: this one is final
            finally:
                await unsubscribe_quietly(subscription)

    async def _result_of(self, record: TaskRecord, *, modern: bool) -> CallToolResult:
        with _task_errors(record.task_id):
            data = await self._store().result(record.task_id)
        if data is None:
            raise task_error(ErrorCode.TASK_NOT_FOUND, f"the result of task {record.task_id!r} is gone", record.task_id)
        try:
            result = decode(data, CallToolResult)
        except DecodeError:
            log.warning("stored task result is not a CallToolResult", task_id=record.task_id)
            raise _call_error(
                WorkerFailed(f"the result of task {record.task_id!r} is not an MCP CallToolResult", tool=record.tool),
                record.task_id,
            ) from None
        return result if modern else downgrade(result)

    # -- changing -------------------------------------------------------------------------------
    async def cancel(
        self, ctx: ServerRequestContext[Any, Any], params: types.CancelTaskRequestParams
    ) -> dict[str, Any]:
        """``tasks/cancel``: 2025 → the cancelled ``Task`` (-32602 if it had ended); 2026 → an acknowledgement."""
        modern = self._check(ctx)
        task_id = params.task_id
        try:
            with _task_errors(task_id):
                cancelled = await self._store().cancel(task_id, principal=principal_of(ctx).subject)
        except TaskFinished as exc:
            if modern:
                return {}  # cancellation is a request; the task had ended another way
            message = f"Cannot cancel task: already in terminal status {exc.record.status!r}"
            raise task_error(ErrorCode.TASK_STATE, message, task_id) from None
        log.info("task cancelled", task_id=task_id, tool=cancelled.tool)
        return {} if modern else legacy_task(cancelled)

    async def update(self, ctx: ServerRequestContext[Any, Any], params: UpdateTaskRequestParams) -> dict[str, Any]:
        """``tasks/update`` (2026 only): answers to the task's pending question; an empty acknowledgement.

        Each answer must be a valid result of the request it answers (else -32602, nothing taken);
        answers to keys the task does not wait for (never asked, answered already, a task that
        moved on or ended) are ignored, as the extension says. The task's owner alone may answer:
        another principal's task is not found. Answering the last key queues the task again
        (``TaskStore.answer``).
        """
        self._check(ctx, modern_only=True)
        task_id = params.task_id
        responses = params.input_responses or {}
        if len(encode(responses)) > MAX_INPUT_RESPONSES_BYTES:
            raise task_error(
                ErrorCode.INVALID_PARAMS,
                f"inputResponses may hold at most {MAX_INPUT_RESPONSES_BYTES} bytes of JSON",
                task_id,
            )
        record = await self._record(ctx, task_id)
        answers: dict[str, Any] = {}
        for key, value in responses.items():
            request = record.input_requests.get(key)
            if request is None:
                continue
            result_type = REQUEST_TYPES[request["method"]][1]
            try:
                answers[key] = as_json(result_type.model_validate(value))
            except ValidationError as exc:
                message = (
                    f"inputResponses[{key!r}] is not a valid answer to {request['method']}: {exc.errors()[0]['msg']}"
                )
                raise task_error(ErrorCode.INVALID_PARAMS, message, task_id) from None
        if answers:
            with _task_errors(task_id):
                await self._store().answer(task_id, answers, principal=principal_of(ctx).subject)
            log.info("task answered", task_id=task_id, keys=sorted(answers))
        return {}


def _raw_meta(ctx: ServerRequestContext[Any, Any]) -> Any:
    """The request's ``_meta`` as sent (capabilities are read from it untyped, as the SDK received them)."""
    return ctx.params.get("_meta") if isinstance(ctx.params, Mapping) else None


def _newer(current: TaskRecord, sent: TaskRecord) -> bool:
    """Whether ``current`` is news after ``sent`` (a late, older status message is not)."""
    if sent.status in TERMINAL_STATUSES:
        return False
    if current.status in TERMINAL_STATUSES:
        return True
    return current.updated_at > sent.updated_at and (current.status, current.status_message) != (
        sent.status,
        sent.status_message,
    )


async def _next_status(subscription: Subscription, store: TaskStore, task_id: str) -> TaskRecord | None:
    """The next status message of a task, or its stored record after ``RECHECK_S`` of silence."""
    try:
        with nats_boundary:
            msg = await subscription.next_msg(timeout=RECHECK_S)
    except BusTimeout:
        return await store.get(task_id)
    try:
        return decode(msg.data, TaskRecord)
    except DecodeError:
        return None
