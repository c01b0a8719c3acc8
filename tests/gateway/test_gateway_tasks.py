"""Durable MCP tasks through the gateway, with the real mcp SDK client in both protocol eras.

The deployment is real: nats-server with JetStream, the registry, a worker serving the testkit
component with a ``TaskRunner``, and the gateway (hot path on, as deployed). The client side
of tasks, which the SDK's client lacks, is ``tests.gateway.mcp_tasks``.
"""

from __future__ import annotations

import mcp_types as types
import pytest
from mcp import Client
from mcp.client.extension import ClientExtension
from mcp.shared.exceptions import MCPError

from gateway.errors import CANCELLED, INVALID_PARAMS
from gateway.inbound import TASKS_EXTENSION
from gateway.principals import ANONYMOUS
from gateway.task_frontend import UpdateTaskRequestParams
from tests.conftest import task_reaches
from tests.gateway.mcp_tasks import (
    Acknowledged,
    CreatedTask,
    ModernCancelTask,
    ModernGetTask,
    ModernUpdateTask,
    StatusListener,
    TasksExtension,
    create_legacy,
    legacy_cancel,
    legacy_get,
    legacy_list,
    legacy_result,
    modern_get,
    poll_legacy,
    poll_modern,
    raw_request,
)
from tests.gateway.responders import RunningGateway, TaskSystem, ready, running_gateway

BURN_1S = {"iterations": 600_000_000}
"""Roughly a second of guest time."""


def text_of(result: types.CallToolResult) -> str:
    return " ".join(block.text for block in result.content if isinstance(block, types.TextContent))


def legacy_client(gateway: RunningGateway, *extensions: ClientExtension) -> Client:
    return Client(gateway.url, mode="legacy", extensions=list(extensions) or None)


def modern_client(gateway: RunningGateway, *extensions: ClientExtension) -> Client:
    return Client(gateway.url, mode="auto", extensions=list(extensions) or None)


# -- capabilities -----------------------------------------------------------------------------------


async def test_2025_initialize_advertises_tasks_and_every_tool_supports_them(task_system: TaskSystem) -> None:
    gateway = await task_system.gateway()
    async with legacy_client(gateway) as client:
        assert client.protocol_version == "2025-11-25"
        tasks = client.server_capabilities.tasks
        assert tasks is not None and tasks.list is not None and tasks.cancel is not None
        assert tasks.requests is not None and tasks.requests.tools is not None
        assert tasks.requests.tools.call is not None
        listed = await client.list_tools()
    assert listed.tools
    for tool in listed.tools:
        assert tool.execution is not None and tool.execution.task_support == "optional", tool.name


async def test_2026_discover_advertises_the_tasks_extension(task_system: TaskSystem) -> None:
    gateway = await task_system.gateway()
    async with modern_client(gateway) as client:
        assert client.protocol_version == "2026-07-28"
        assert (client.server_capabilities.extensions or {}).get(TASKS_EXTENSION) == {}
        assert client.server_capabilities.tasks is None
        listed = await client.list_tools()
    assert all(tool.execution is None for tool in listed.tools)


# -- 2025-11-25 ---------------------------------------------------------------------------------------


async def test_2025_a_task_runs_to_its_result(task_system: TaskSystem) -> None:
    gateway = await task_system.gateway()
    async with legacy_client(gateway) as client:
        created = await create_legacy(client, "kit_add", {"a": 2, "b": 3}, ttl=120_000)
        assert (created.status, created.status_message) == ("working", "queued")
        assert (created.ttl, created.poll_interval) == (120_000, 1000)
        assert created.created_at.endswith("Z") and created.last_updated_at.endswith("Z")
        # The record was in the store before the client heard the id.
        record = await task_system.store.get(created.task_id)
        assert (record.tool, record.principal) == ("kit_add", ANONYMOUS.subject)

        done = await poll_legacy(client, created.task_id, "completed", "failed")
        assert done.status == "completed" and done.task_id == created.task_id
        result = await legacy_result(client, created.task_id)
        assert text_of(result) == "5" and not result.is_error
        assert result.meta == {"io.modelcontextprotocol/related-task": {"taskId": created.task_id}}

        listed = await legacy_list(client)
        assert created.task_id in [task.task_id for task in listed.tasks]


async def test_2025_tasks_result_waits_for_the_task_to_end(task_system: TaskSystem) -> None:
    gateway = await task_system.gateway()
    async with legacy_client(gateway) as client:
        created = await create_legacy(client, "kit_burn", BURN_1S)
        result = await legacy_result(client, created.task_id)  # asked at once: blocks until it ends
        assert not result.is_error
        assert (await legacy_get(client, created.task_id)).status == "completed"


async def test_2025_a_session_hears_its_tasks_change(task_system: TaskSystem) -> None:
    gateway = await task_system.gateway()
    listener = StatusListener()
    async with legacy_client(gateway, listener) as client:
        created = await create_legacy(client, "kit_burn", {"iterations": 200_000_000})
        await listener.until(created.task_id, "completed")
    notes = [n for n in listener.received if n.task_id == created.task_id]
    assert any(n.status == "working" and (n.status_message or "").startswith("running") for n in notes)
    assert notes[-1].status == "completed"
    assert [n.status for n in notes].count("completed") == 1


async def test_2025_a_failing_tool_ends_its_task_failed_with_the_error_result(task_system: TaskSystem) -> None:
    gateway = await task_system.gateway()
    async with legacy_client(gateway) as client:
        created = await create_legacy(client, "kit_divide", {"a": 1, "b": 0})
        failed = await poll_legacy(client, created.task_id, "completed", "failed")
        assert (failed.status, failed.status_message) == ("failed", "division by zero")
        # tasks/result returns what the tools/call would have: a result with isError.
        result = await legacy_result(client, created.task_id)
        assert result.is_error and "division by zero" in text_of(result)


async def test_2025_cancel_a_running_task(task_system: TaskSystem) -> None:
    gateway = await task_system.gateway()
    async with legacy_client(gateway) as client:
        created = await create_legacy(client, "kit_danger_spin", {})
        await task_reaches(task_system.store, created.task_id, "working", running=True)
        cancelled = await legacy_cancel(client, created.task_id)
        assert (cancelled.task_id, cancelled.status) == (created.task_id, "cancelled")
        assert (await legacy_get(client, created.task_id)).status == "cancelled"
        with pytest.raises(MCPError) as caught:
            await legacy_result(client, created.task_id)
        assert caught.value.code == CANCELLED
        assert caught.value.data["taskId"] == created.task_id
        # Cancelling it again: it has ended.
        with pytest.raises(MCPError) as again:
            await legacy_cancel(client, created.task_id)
        assert again.value.code == INVALID_PARAMS
        assert again.value.message == "Cannot cancel task: already in terminal status 'cancelled'"
    # The guest was stopped: both task slots serve the next tasks at once.
    ids = [(await task_system.store.submit("kit_add", {"a": 1, "b": i}, principal="t")).task_id for i in range(2)]
    for task_id in ids:
        await task_reaches(task_system.store, task_id, "completed", timeout_s=5)


async def test_2025_cancel_a_finished_task_is_invalid_params(task_system: TaskSystem) -> None:
    gateway = await task_system.gateway()
    async with legacy_client(gateway) as client:
        created = await create_legacy(client, "kit_add", {"a": 1, "b": 1})
        await poll_legacy(client, created.task_id, "completed")
        with pytest.raises(MCPError) as caught:
            await legacy_cancel(client, created.task_id)
    assert caught.value.code == INVALID_PARAMS
    assert caught.value.message == "Cannot cancel task: already in terminal status 'completed'"
    assert (await task_system.store.get(created.task_id)).status == "completed"


async def test_2025_unknown_tasks_and_cursors_are_invalid_params(task_system: TaskSystem) -> None:
    gateway = await task_system.gateway()
    async with legacy_client(gateway) as client:
        for ask in (legacy_get, legacy_result, legacy_cancel):
            with pytest.raises(MCPError) as caught:
                await ask(client, "0123456789abcdef0123456789abcdef")
            assert caught.value.code == INVALID_PARAMS
            assert caught.value.data["reason"] == "TASK_NOT_FOUND"
        with pytest.raises(MCPError) as bad_cursor:
            await legacy_list(client, cursor="not-a-task")
        assert bad_cursor.value.code == INVALID_PARAMS
        with pytest.raises(MCPError) as unknown_tool:
            await create_legacy(client, "kit_subtract", {})
        assert unknown_tool.value.code == INVALID_PARAMS and "'kit_subtract'" in unknown_tool.value.message


async def test_2025_ids_that_cannot_be_keys_name_no_task(task_system: TaskSystem) -> None:
    gateway = await task_system.gateway()
    async with legacy_client(gateway) as client:
        for task_id in ("a*b", ".dot", "with space", "x" * 300):
            for ask in (legacy_get, legacy_result, legacy_cancel):
                with pytest.raises(MCPError) as caught:
                    await ask(client, task_id)
                assert caught.value.code == INVALID_PARAMS
                assert caught.value.data["reason"] == "TASK_NOT_FOUND" and caught.value.data["taskId"] == task_id
            with pytest.raises(MCPError) as bad_cursor:
                await legacy_list(client, cursor=task_id)
            assert bad_cursor.value.code == INVALID_PARAMS
            assert bad_cursor.value.message == f"invalid tasks/list cursor {task_id!r}"


async def test_2025_tasks_list_pages_newest_first(task_system: TaskSystem) -> None:
    gateway = await task_system.gateway(page_size=2)
    async with legacy_client(gateway) as client:
        ids = [(await create_legacy(client, "kit_add", {"a": i, "b": 0})).task_id for i in range(3)]
        first = await legacy_list(client)
        assert [t.task_id for t in first.tasks] == ids[:0:-1] and first.next_cursor is not None
        second = await legacy_list(client, cursor=first.next_cursor)
        assert [t.task_id for t in second.tasks] == ids[:1] and second.next_cursor is None


async def test_the_hot_path_hands_tasks_to_the_sdk_and_serves_plain_calls(task_system: TaskSystem) -> None:
    gateway = await task_system.gateway()
    hot = gateway.hot
    async with legacy_client(gateway) as client:
        await client.list_tools()  # also: notifications/initialized has reached the gateway
        served, handed_over = hot.served, hot.handed_over
        assert text_of(await client.call_tool("kit_add", {"a": 1, "b": 2})) == "3"
        assert (hot.served, hot.handed_over) == (served + 1, handed_over)
        served = hot.served
        created = await create_legacy(client, "kit_add", {"a": 1, "b": 2})
        await legacy_get(client, created.task_id)
        assert (hot.served, hot.handed_over) == (served, handed_over + 2)
    async with modern_client(gateway, TasksExtension()) as client:
        await client.list_tools()
        served, handed_over = hot.served, hot.handed_over
        assert text_of(await client.call_tool("kit_add", {"a": 1, "b": 2})) == "3"  # a task, resolved
        assert hot.served == served and hot.handed_over >= handed_over + 2  # tools/call, tasks/get…
    async with modern_client(gateway) as client:
        await client.list_tools()
        served, handed_over = hot.served, hot.handed_over
        assert text_of(await client.call_tool("kit_add", {"a": 1, "b": 2})) == "3"
        assert (hot.served, hot.handed_over) == (served + 1, handed_over)


# -- 2026-07-28 ---------------------------------------------------------------------------------------


async def test_2026_a_call_from_a_client_with_the_extension_becomes_a_task(task_system: TaskSystem) -> None:
    gateway = await task_system.gateway()
    extension = TasksExtension()
    async with modern_client(gateway, extension) as client:
        created = await client.session.call_tool("kit_add", {"a": 2, "b": 3}, allow_claimed=True)
        assert isinstance(created, CreatedTask)
        assert (created.status, created.status_message, created.poll_interval_ms) == ("working", "queued", 1000)
        assert created.ttl_ms == 3_600_000  # the gateway's default: [tasks] ttl_s
        assert created.meta is not None and "io.modelcontextprotocol/serverInfo" in created.meta
        done = await poll_modern(client.session, created.task_id, "completed")
        assert done.result is not None and done.result["structuredContent"] == 5
        assert done.result_type == "complete"
        # The SDK client resolves a claimed task transparently through the extension.
        result = await client.call_tool("kit_add", {"a": 20, "b": 22})
        assert result.structured_content == 42 and len(extension.resolved) == 1


async def test_2026_a_task_for_an_unknown_tool_is_refused_at_once(task_system: TaskSystem) -> None:
    gateway = await task_system.gateway()
    async with modern_client(gateway, TasksExtension()) as client:
        with pytest.raises(MCPError) as unknown_tool:
            await client.session.call_tool("kit_subtract", {}, allow_claimed=True)
    assert unknown_tool.value.code == INVALID_PARAMS and "'kit_subtract'" in unknown_tool.value.message
    assert not (await task_system.store.list(principal=None))[0], "nothing was queued"


async def test_2026_a_client_without_the_extension_gets_plain_results_and_no_tasks(task_system: TaskSystem) -> None:
    gateway = await task_system.gateway()
    record = await task_system.store.submit("kit_add", {"a": 1, "b": 1}, principal=ANONYMOUS.subject)
    async with modern_client(gateway) as client:
        result = await client.call_tool("kit_add", {"a": 2, "b": 3})
        assert result.structured_content == 5
        for request in (
            ModernGetTask(params=types.GetTaskRequestParams(task_id=record.task_id)),
            ModernCancelTask(params=types.CancelTaskRequestParams(task_id=record.task_id)),
        ):
            with pytest.raises(MCPError) as caught:
                await client.session.send_request(request, Acknowledged)
            assert caught.value.code == types.MISSING_REQUIRED_CLIENT_CAPABILITY
            assert caught.value.data == {"requiredCapabilities": {"extensions": {TASKS_EXTENSION: {}}}}


async def test_2026_a_tool_error_completes_the_task_with_the_error_result(task_system: TaskSystem) -> None:
    gateway = await task_system.gateway()
    async with modern_client(gateway, TasksExtension()) as client:
        created = await client.session.call_tool("kit_divide", {"a": 1, "b": 0}, allow_claimed=True)
        assert isinstance(created, CreatedTask)
        done = await poll_modern(client.session, created.task_id, "completed", "failed")
        # The extension keeps `failed` for JSON-RPC errors; isError results complete.
        assert done.status == "completed" and done.result is not None and done.result["isError"] is True
        assert done.error is None


async def test_a_guest_that_crashes_fails_its_task_in_2026_and_keeps_its_result_in_2025(
    task_system: TaskSystem,
) -> None:
    """A trap is not a result the tool returned: the extension's ``failed`` with an ``error``
    (SEP-2663: protocol-level failures), while 2025's tasks/result still has the isError result."""
    gateway = await task_system.gateway()
    async with modern_client(gateway, TasksExtension()) as client:
        created = await client.session.call_tool("kit_danger_boom", {}, allow_claimed=True)
        assert isinstance(created, CreatedTask)
        done = await poll_modern(client.session, created.task_id, "completed", "failed")
        assert done.status == "failed" and done.result is None
        assert done.error is not None and done.error["code"] == -32603 and "trapped" in done.error["message"]
    async with legacy_client(gateway) as client:
        assert (await legacy_get(client, created.task_id)).status == "failed"
        result = await legacy_result(client, created.task_id)
        assert result.is_error and "trapped" in text_of(result)


async def test_2026_cancel_update_and_unknown_tasks(task_system: TaskSystem) -> None:
    gateway = await task_system.gateway()
    async with modern_client(gateway, TasksExtension()) as client:
        session = client.session
        spinning = await session.call_tool("kit_danger_spin", {}, allow_claimed=True)
        assert isinstance(spinning, CreatedTask)
        await task_reaches(task_system.store, spinning.task_id, "working", running=True)
        update = ModernUpdateTask(params=UpdateTaskRequestParams(task_id=spinning.task_id, input_responses={"x": {}}))
        assert (await session.send_request(update, Acknowledged)).result_type == "complete"
        cancel = ModernCancelTask(params=types.CancelTaskRequestParams(task_id=spinning.task_id))
        assert (await session.send_request(cancel, Acknowledged)).result_type == "complete"
        assert (await modern_get(session, spinning.task_id)).status == "cancelled"
        # Cancelling a task that has ended is acknowledged too; it stays as it ended.
        assert (await session.send_request(cancel, Acknowledged)).result_type == "complete"

        unknown = "0123456789abcdef0123456789abcdef"
        for request in (
            ModernGetTask(params=types.GetTaskRequestParams(task_id=unknown)),
            ModernCancelTask(params=types.CancelTaskRequestParams(task_id=unknown)),
            ModernUpdateTask(params=UpdateTaskRequestParams(task_id=unknown, input_responses={})),
        ):
            with pytest.raises(MCPError) as caught:
                await session.send_request(request, Acknowledged)
            assert caught.value.code == INVALID_PARAMS
        # The extension has no tasks/result and no tasks/list.
        for method in ("tasks/result", "tasks/list"):
            with pytest.raises(MCPError) as missing:
                await raw_request(client, method, {"taskId": spinning.task_id})
            assert missing.value.code == types.METHOD_NOT_FOUND


# -- failures -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["legacy", "auto"])
async def test_a_task_outlives_a_gateway_restart(task_system: TaskSystem, mode: str) -> None:
    settings = task_system.settings()
    extensions: list[ClientExtension] = [TasksExtension()] if mode == "auto" else []
    async with running_gateway(settings) as first:
        await ready(first)
        async with Client(first.url, mode=mode, extensions=extensions or None) as client:
            if mode == "legacy":
                task_id = (await create_legacy(client, "kit_burn", {"iterations": 2_000_000_000})).task_id
            else:
                created = await client.session.call_tool("kit_burn", {"iterations": 2_000_000_000}, allow_claimed=True)
                assert isinstance(created, CreatedTask)
                task_id = created.task_id
        await task_reaches(task_system.store, task_id, "working", running=True)
    # The first gateway is gone; the guest still runs. A new gateway (a new client, a new
    # 2025 session) knows the task: everything about it is in JetStream.
    assert (await task_system.store.get(task_id)).running
    async with running_gateway(settings) as second:
        await ready(second)
        async with Client(second.url, mode=mode, extensions=extensions or None) as client:
            if mode == "legacy":
                seen = await legacy_get(client, task_id)
                assert seen.status == "working"
                await poll_legacy(client, task_id, "completed")
                assert not (await legacy_result(client, task_id)).is_error
            else:
                assert (await modern_get(client.session, task_id)).status == "working"
                done = await poll_modern(client.session, task_id, "completed")
                assert done.result is not None and done.result["isError"] is False
