"""The client side of MCP tasks, for tests: what the mcp SDK's client does not do itself.

- 2025-11-25: the SDK client has no task helpers. ``tasks/*`` go through its typed
  ``session.send_request`` with the SDK's own task models (which validate our answers); the
  task-augmented ``tools/call`` goes through the session's raw request path, because
  ``send_request`` validates any ``tools/call`` result as a ``CallToolResult``.
- 2026-07-28: a ``ClientExtension`` for ``io.modelcontextprotocol/tasks`` declares the
  extension, claims ``resultType: "task"`` and resolves a task by polling ``tasks/get`` — the
  way the SDK lets a client extension finish a claimed result.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Literal, TypeVar

import mcp_types as types
from mcp import Client
from mcp.client.extension import ClaimContext, ClientExtension, NotificationBinding, ResultClaim

from gateway.inbound import TASKS_EXTENSION
from gateway.task_frontend import UpdateTaskRequestParams

TASK_TIMEOUT_S = 20.0
T = TypeVar("T")

# -- 2026-07-28: the tasks extension on the client side --------------------------------------------


class Task2026(types.Result):
    """The fields of a 2026 ``Task`` (the SDK's ``types.Task`` is 2025's: ``ttl``, ``pollInterval``)."""

    task_id: str
    status: types.TaskStatus
    status_message: str | None = None
    created_at: str
    last_updated_at: str
    ttl_ms: int | None
    poll_interval_ms: int | None = None


class ModernTask(Task2026):
    """A 2026 ``Task`` as ``tasks/get`` returns it (``result``/``error`` inlined once it ended)."""

    result: dict[str, Any] | None = None
    error: dict[str, Any] | None = None
    result_type: str = "complete"


class CreatedTask(Task2026):
    """A 2026 ``CreateTaskResult``: the task, tagged ``resultType: "task"``."""

    result_type: Literal["task"] = "task"


class ModernGetTask(types.Request[types.GetTaskRequestParams, Literal["tasks/get"]]):
    method: Literal["tasks/get"] = "tasks/get"
    params: types.GetTaskRequestParams
    name_param = "taskId"  # the extension: Mcp-Name carries the task id


class ModernCancelTask(types.Request[types.CancelTaskRequestParams, Literal["tasks/cancel"]]):
    method: Literal["tasks/cancel"] = "tasks/cancel"
    params: types.CancelTaskRequestParams
    name_param = "taskId"


class ModernUpdateTask(types.Request[UpdateTaskRequestParams, Literal["tasks/update"]]):
    method: Literal["tasks/update"] = "tasks/update"
    params: UpdateTaskRequestParams
    name_param = "taskId"


class Acknowledged(types.Result):
    result_type: str = "complete"


class TasksExtension(ClientExtension):
    """``io.modelcontextprotocol/tasks`` for the SDK client: a task is polled to its result."""

    identifier = TASKS_EXTENSION

    def __init__(self) -> None:
        self.resolved: list[str] = []

    def claims(self) -> Sequence[ResultClaim[Any]]:
        return [ResultClaim(result_type="task", model=CreatedTask, resolve=self._resolve)]

    async def _resolve(self, created: CreatedTask, ctx: ClaimContext) -> types.CallToolResult:
        self.resolved.append(created.task_id)
        task = await poll_modern(ctx.session, created.task_id, "completed", "failed", "cancelled")
        if task.status != "completed" or task.result is None:
            raise RuntimeError(f"task {task.task_id} ended {task.status}: {task.error or task.status_message}")
        return types.CallToolResult.model_validate(task.result)


async def modern_get(session: Any, task_id: str) -> ModernTask:
    request = ModernGetTask(params=types.GetTaskRequestParams(task_id=task_id))
    result: ModernTask = await session.send_request(request, ModernTask)
    return result


async def poll_modern(session: Any, task_id: str, *statuses: str, timeout_s: float = TASK_TIMEOUT_S) -> ModernTask:
    return await poll(lambda: modern_get(session, task_id), statuses, timeout_s)


# -- 2025-11-25: typed requests and a listener for status notifications ----------------------------


class StatusListener(ClientExtension):
    """Collects ``notifications/tasks/status`` (the SDK client has no handler of its own for them)."""

    identifier = "dev.toolbus.test/task-status"

    def __init__(self) -> None:
        self.received: list[types.TaskStatusNotificationParams] = []
        self._arrived = asyncio.Event()

    def notifications(self) -> Sequence[NotificationBinding[Any]]:
        params = types.TaskStatusNotificationParams
        return [NotificationBinding(method="notifications/tasks/status", params_type=params, handler=self._on)]

    async def _on(self, params: types.TaskStatusNotificationParams) -> None:
        self.received.append(params)
        self._arrived.set()

    async def until(self, task_id: str, status: str, timeout_s: float = TASK_TIMEOUT_S) -> None:
        async with asyncio.timeout(timeout_s):
            while not any(n.task_id == task_id and n.status == status for n in self.received):
                self._arrived.clear()
                await self._arrived.wait()


async def raw_request(client: Client, method: str, params: dict[str, Any]) -> dict[str, Any]:
    """A request through the SDK session's own framing (headers, ``_meta``), its result unvalidated."""
    data: dict[str, Any] = {"method": method, "params": params}
    opts: Any = {}
    client.session._stamp(data, opts)
    result: dict[str, Any] = await client.session._dispatcher.send_raw_request(method, data["params"], opts)
    return result


async def create_legacy(client: Client, tool: str, arguments: dict[str, Any], ttl: int | None = None) -> types.Task:
    """``tools/call`` with ``params.task``: the ``CreateTaskResult``'s task."""
    task = {} if ttl is None else {"ttl": ttl}
    raw = await raw_request(client, "tools/call", {"name": tool, "arguments": arguments, "task": task})
    return types.CreateTaskResult.model_validate(raw).task


async def legacy_get(client: Client, task_id: str) -> types.GetTaskResult:
    request = types.GetTaskRequest(params=types.GetTaskRequestParams(task_id=task_id))
    return await client.session.send_request(request, types.GetTaskResult)


async def legacy_result(client: Client, task_id: str, timeout_s: float = TASK_TIMEOUT_S) -> types.CallToolResult:
    request = types.GetTaskPayloadRequest(params=types.GetTaskPayloadRequestParams(task_id=task_id))
    return await client.session.send_request(request, types.CallToolResult, request_read_timeout_seconds=timeout_s)


async def legacy_list(client: Client, cursor: str | None = None) -> types.ListTasksResult:
    request = types.ListTasksRequest(params=types.PaginatedRequestParams(cursor=cursor))
    return await client.session.send_request(request, types.ListTasksResult)


async def legacy_cancel(client: Client, task_id: str) -> types.CancelTaskResult:
    request = types.CancelTaskRequest(params=types.CancelTaskRequestParams(task_id=task_id))
    return await client.session.send_request(request, types.CancelTaskResult)


async def poll_legacy(
    client: Client, task_id: str, *statuses: str, timeout_s: float = TASK_TIMEOUT_S
) -> types.GetTaskResult:
    return await poll(lambda: legacy_get(client, task_id), statuses, timeout_s)


async def poll(get: Callable[[], Awaitable[T]], statuses: Sequence[str], timeout_s: float) -> T:
    """Call ``get`` until its ``status`` is one of ``statuses``."""
    deadline = time.monotonic() + timeout_s
    while True:
        task = await get()
        status = getattr(task, "status", None)
        if status in statuses:
            return task
        assert time.monotonic() < deadline, f"task stayed {status} ({getattr(task, 'status_message', '')})"
        await asyncio.sleep(0.05)
