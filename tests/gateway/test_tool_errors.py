"""Tool errors a model can act on, through a real deployment (nats-server, registry, a worker
running the testkit in wasmtime, the gateway) and the mcp SDK's ``Client`` in both eras: every
argument error in one ``isError`` result.
"""

from __future__ import annotations

import mcp_types as types
import pytest
from mcp import Client

from schemas.codec import decode
from schemas.wire import CallToolResult
from tests.conftest import text
from tests.gateway.responders import TaskSystem

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
