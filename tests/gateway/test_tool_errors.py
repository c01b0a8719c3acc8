"""Tool errors a model can act on, through a real deployment (nats-server, registry, a worker
running the testkit in wasmtime, the gateway) and the mcp SDK's ``Client`` in both eras, or the
``toolbus call`` CLI: every argument error in one ``isError`` result, and a guest stopped by its
time limit answered as an ``isError`` result before the caller's deadline fires.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import mcp_types as types
import pytest
from mcp import Client

from schemas.codec import decode
from schemas.wire import CallToolResult
from tests.conftest import nats_settings, text, toolbus
from tests.gateway.responders import TaskSystem

DEADLINE_S = 1.5
"""The caller's deadline in the time-limit tests: the gateway's ``call_timeout_s``, the CLI's
``--timeout``. The testkit's limit (30 s) is longer, so the deadline is what stops the guest."""

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
