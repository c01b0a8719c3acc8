"""Tool errors a model can act on, through a real deployment (nats-server, registry, a worker
running the testkit in wasmtime, the gateway) and the mcp SDK's ``Client`` in both eras, or the
``toolbus call`` CLI: every argument error in one ``isError`` result, and a guest stopped by its
time limit answered as an ``isError`` result before the caller's deadline fires.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import mcp_types as types
import pytest
from mcp import Client

from bus.connection import connect
from schemas.codec import decode
from schemas.config import ComponentSettings, LimitsSettings
from schemas.wire import CallToolResult
from tests.conftest import FAST_TASKS, TESTKIT_WAT, nats_settings, start_task_worker, text, toolbus
from tests.gateway.responders import TaskSystem, ready
from workers.sandbox.component import LoadedComponent
from workers.sandbox.engine import EngineHost

DEADLINE_S = 1.5
"""The caller's deadline in the time-limit tests: the gateway's ``call_timeout_s``, the CLI's
``--timeout``. The testkit's limit (30 s) is longer, so the deadline is what stops the guest."""

SHORT_LIMIT_S = 1.0
"""The time limit of the ``short`` testkit: the issue's case in miniature (the tool's limit
equal to the gateway's deadline, 30 s and 30 s before)."""

EVERY_ERROR = {"a": "one", "b": 2**31, "c": 3}
"""Three mistakes in one ``kit_add`` call: a wrong type, out of range, and an unknown name."""


def text_of(result: types.CallToolResult) -> str:
    return " ".join(block.text for block in result.content if isinstance(block, types.TextContent))


@pytest.mark.parametrize("mode", ["legacy", "auto"])
async def test_every_argument_error_is_named_in_one_result(task_system: TaskSystem, mode: str) -> None:
    gateway = await task_system.gateway()
    async with Client(gateway.url, mode=mode) as client:
        result = await client.call_tool("kit_add", EVERY_ERROR)
    assert result.is_error
    assert text_of(result) == (
        "invalid arguments for tool 'kit_add': a: 'one' is not of type 'integer'; "
        "b: 2147483648 is greater than the maximum of 2147483647; c: unexpected argument"
    )


async def test_a_worker_called_straight_on_nats_names_every_argument_error(task_system: TaskSystem) -> None:
    reply = await task_system.nc.request(task_system.subjects.call("kit_add"), b'{"c": 1}', timeout=5)
    result = decode(reply.data, CallToolResult)
    assert result.is_error
    assert text(result) == (
        "invalid arguments: a: required argument is missing; b: required argument is missing; c: unexpected argument"
    )


@pytest.mark.parametrize("mode", ["legacy", "auto"])
async def test_a_runaway_guest_is_a_tool_error_before_the_gateways_deadline(task_system: TaskSystem, mode: str) -> None:
    gateway = await task_system.gateway(call_timeout_s=DEADLINE_S)
    async with Client(gateway.url, mode=mode) as client:
        for _ in range(3):  # not a lucky race: every time
            result = await client.call_tool("kit_danger_spin", {})
            assert result.is_error, result
            assert text_of(result).startswith("timed out after 1."), text_of(result)
            assert "the time its caller's deadline left (the tool's own time limit is 30 s)" in text_of(result)


async def test_a_runaway_guest_is_a_tool_error_in_toolbus_call(task_system: TaskSystem, tmp_path: Path) -> None:
    config = nats_settings(tmp_path, task_system.nats_url, task_system.subjects.prefix)
    called = await asyncio.to_thread(
        toolbus, "call", "--config", str(config), "kit_danger_spin", "{}", "--timeout", str(DEADLINE_S)
    )
    assert called.returncode == 1
    result = decode(called.stdout.strip().encode(), CallToolResult)
    assert result.is_error and text(result).startswith("timed out after 1."), called
    assert "the time its caller's deadline left" in text(result)


@pytest.fixture
async def short(task_system: TaskSystem, engine_host: EngineHost, cache_dir: Path) -> AsyncIterator[None]:
    """A second worker on the deployment serving the testkit as ``short_*``, with a 1 s time limit."""
    settings = ComponentSettings(name="short", path=TESTKIT_WAT, limits=LimitsSettings(timeout_s=SHORT_LIMIT_S))
    component = LoadedComponent.load(engine_host, settings, TESTKIT_WAT, cache_dir)
    worker = await start_task_worker(
        await connect(task_system.nats_url, name="short-worker"), task_system.subjects, [component], FAST_TASKS
    )
    yield
    await worker.stop()
    await worker.nc.close()


@pytest.mark.parametrize(
    ("call_timeout_s", "reason"),
    [
        # Deadline = limit (the old defaults): the deadline's margin stops the guest, and says so.
        (SHORT_LIMIT_S, "the time its caller's deadline left (the tool's own time limit is 1 s)"),
        # Deadline = limit + room for the answer (the new defaults): the tool's own limit is named.
        (SHORT_LIMIT_S + 0.5, "exceeded its time limit of 1 s"),
    ],
)
async def test_a_guest_stopped_by_its_own_limit_is_a_tool_error_naming_it(
    task_system: TaskSystem, short: None, call_timeout_s: float, reason: str
) -> None:
    gateway = await ready(await task_system.gateway(call_timeout_s=call_timeout_s), "short_danger_spin")
    for mode in ("legacy", "auto"):
        async with Client(gateway.url, mode=mode) as client:
            result = await client.call_tool("short_danger_spin", {})
        assert result.is_error and reason in text_of(result), (mode, text_of(result))
