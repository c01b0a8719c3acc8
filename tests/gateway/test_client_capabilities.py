"""A tool that needs client capabilities is refused, before it runs, to a client that did not declare them.

SEP-2575's MissingRequiredClientCapability (-32021, HTTP 400 in 2026-07-28) with
``data.requiredCapabilities`` keyed by what is missing; on the hot path and the SDK path, in both
eras, and before a task could be created for it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from nats.js.kv import KeyValue

from gateway.inbound import TASKS_EXTENSION
from schemas.wire import CallToolResult, TextContent, ToolDescriptor
from tests.gateway.raw_mcp import LEGACY, MODERN, MODERN_META, RawMcp
from tests.gateway.responders import RunningGateway, ScriptedWorker, message_of, put_tools, ready, result_reply

ASKS = ToolDescriptor(name="asks", input_schema={"type": "object"}, client_capabilities=("sampling", "elicitation"))


@pytest.fixture(params=[True, False], ids=["hot", "sdk"])
async def setup(
    request: pytest.FixtureRequest,
    kv: KeyValue,
    worker: Callable[..., Awaitable[ScriptedWorker]],
    start_gateway: Callable[..., Awaitable[RunningGateway]],
) -> tuple[RunningGateway, ScriptedWorker]:
    await put_tools(kv, ASKS)
    scripted = await worker("asks", result_reply(CallToolResult(content=[TextContent("Success")])))
    return await ready(await start_gateway(hot_path=request.param), "asks"), scripted


def capabilities_meta(capabilities: dict[str, Any]) -> dict[str, Any]:
    return {**MODERN_META, "io.modelcontextprotocol/clientCapabilities": capabilities}


@pytest.mark.parametrize(
    "declared", [{}, {"sampling": {}}, {"extensions": {TASKS_EXTENSION: {}}}], ids=["none", "half", "tasks-only"]
)
async def test_2026_a_client_without_the_capabilities_is_refused_before_the_call(
    setup: tuple[RunningGateway, ScriptedWorker], declared: dict[str, Any]
) -> None:
    gateway, scripted = setup
    response = await RawMcp(gateway.url, MODERN).call("asks", {}, _meta=capabilities_meta(declared))
    assert response.status_code == 400, response.text
    error = message_of(response)["error"]
    assert error["code"] == -32021
    missing = {"sampling", "elicitation"} - set(declared)
    assert error["data"] == {"requiredCapabilities": {c: {} for c in missing}}
    assert scripted.messages == []  # never reached a worker (nor became a task)


async def test_2026_a_client_with_the_capabilities_gets_the_call(setup: tuple[RunningGateway, ScriptedWorker]) -> None:
    gateway, _ = setup
    meta = capabilities_meta({"sampling": {}, "elicitation": {}})
    result = message_of(await RawMcp(gateway.url, MODERN).call("asks", {}, _meta=meta))["result"]
    assert result["content"] == [{"type": "text", "text": "Success"}]


async def test_2025_a_session_without_the_capabilities_is_refused(
    setup: tuple[RunningGateway, ScriptedWorker],
) -> None:
    gateway, scripted = setup
    error = message_of(await RawMcp(gateway.url, LEGACY).call("asks", {}))["error"]
    assert error["code"] == -32021 and set(error["data"]["requiredCapabilities"]) == {"sampling", "elicitation"}
    assert scripted.messages == []
