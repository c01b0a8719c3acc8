"""A tool's task support (``forbidden`` / ``optional`` / ``required``), honoured in both eras and on both paths.

The rule is ``gateway.task_frontend.task_route``; every attempt below is made with the hot path on
and off, since a hot path that served a ``required`` tool as a plain call would skip the rule.
2025-11-25 answers -32601 for both mismatches (its spec: "Servers SHOULD/MUST return -32601");
2026-07-28 lets the server decide, so a ``forbidden`` tool runs as a call even for a client that
takes tasks, and a ``required`` one from a client without the extension is -32021 naming it.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

import httpx2
import pytest
from nats.js.kv import KeyValue

from gateway.inbound import TASKS_EXTENSION
from schemas.wire import CallToolResult, TextContent, ToolDescriptor
from tests.gateway.raw_mcp import ERAS, LEGACY, MODERN, MODERN_META, RawMcp
from tests.gateway.responders import RunningGateway, ScriptedWorker, message_of, put_tools, ready, result_reply

SCHEMA = {"type": "object"}
FORBIDDEN = ToolDescriptor(name="sync_only", input_schema=SCHEMA, task_support="forbidden")
REQUIRED = ToolDescriptor(name="task_only", input_schema=SCHEMA, task_support="required")
OPTIONAL = ToolDescriptor(name="either_way", input_schema=SCHEMA)
TASKS_META = {"io.modelcontextprotocol/clientCapabilities": {"extensions": {TASKS_EXTENSION: {}}}}


@pytest.fixture(params=[True, False], ids=["hot", "sdk"])
async def gateway(
    request: pytest.FixtureRequest,
    kv: KeyValue,
    worker: Callable[..., Awaitable[ScriptedWorker]],
    start_gateway: Callable[..., Awaitable[RunningGateway]],
) -> RunningGateway:
    await put_tools(kv, FORBIDDEN, REQUIRED, OPTIONAL)
    for tool in (FORBIDDEN, REQUIRED, OPTIONAL):
        await worker(tool.name, result_reply(CallToolResult(content=[TextContent("ran")])))
    return await ready(await start_gateway(hot_path=request.param), "either_way")


async def test_2025_tools_list_shows_each_tool_s_task_support(gateway: RunningGateway) -> None:
    raw = RawMcp(gateway.url, LEGACY)
    body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {}}).encode()
    tools = {t["name"]: t for t in message_of(await raw.post(body, method="tools/list"))["result"]["tools"]}
    assert tools["sync_only"]["execution"] == {"taskSupport": "forbidden"}
    assert tools["task_only"]["execution"] == {"taskSupport": "required"}
    assert tools["either_way"]["execution"] == {"taskSupport": "optional"}


@pytest.mark.parametrize("era", ERAS)
async def test_a_required_tool_called_without_a_task_is_refused(gateway: RunningGateway, era: str) -> None:
    raw = RawMcp(gateway.url, era)
    response = await raw.call("task_only", {})
    error = message_of(response)["error"]
    if era == MODERN:
        assert error["code"] == -32021, error
        assert response.status_code == 400, response.text
        assert TASKS_EXTENSION in error["data"]["requiredCapabilities"]["extensions"], error
    else:
        assert error["code"] == -32601, error
        assert error["data"]["taskSupport"] == "required"
    assert "task_only" in error["message"]


async def test_2025_a_forbidden_tool_called_as_a_task_is_refused(gateway: RunningGateway) -> None:
    response = await RawMcp(gateway.url, LEGACY).call("sync_only", {}, task={"ttl": 60_000})
    error = message_of(response)["error"]
    assert error["code"] == -32601 and error["data"]["taskSupport"] == "forbidden", error


@pytest.mark.parametrize(
    "extra", [{"_meta": TASKS_META}, {"_meta": TASKS_META, "task": {"ttl": 1}}], ids=["ext", "ext+legacy-task"]
)
async def test_2026_a_forbidden_tool_runs_as_a_call_for_a_client_that_takes_tasks(
    gateway: RunningGateway, extra: dict[str, Any]
) -> None:
    result = message_of(await RawMcp(gateway.url, MODERN).call("sync_only", {}, **extra))["result"]
    assert result.get("resultType") != "task" and "taskId" not in result, result
    assert result["content"] == [{"type": "text", "text": "ran"}]


@pytest.mark.parametrize("era", ERAS)
async def test_an_optional_tool_runs_as_a_call_when_no_task_is_asked(gateway: RunningGateway, era: str) -> None:
    result = message_of(await RawMcp(gateway.url, era).call("either_way", {}))["result"]
    assert result["content"] == [{"type": "text", "text": "ran"}] and "taskId" not in result


async def test_2026_a_required_tool_becomes_a_task_for_a_client_that_takes_tasks(
    gateway: RunningGateway,
) -> None:
    result = message_of(await RawMcp(gateway.url, MODERN).call("task_only", {}, _meta=TASKS_META))["result"]
    assert result["resultType"] == "task" and result["taskId"], result


async def test_2025_a_required_tool_becomes_a_task_when_asked(gateway: RunningGateway) -> None:
    result = message_of(await RawMcp(gateway.url, LEGACY).call("task_only", {}, task={"ttl": 60_000}))["result"]
    assert result["task"]["taskId"], result


@pytest.mark.parametrize("method", ["tasks/get", "tasks/update", "tasks/cancel"])
@pytest.mark.parametrize("names", [[], ["other-task"], ["t1", "t1"]], ids=["missing", "other", "repeated"])
async def test_2026_a_task_request_whose_mcp_name_is_not_its_task_is_refused(
    gateway: RunningGateway, method: str, names: list[str]
) -> None:
    """Before any handler runs: a router reading Mcp-Name and the gateway reading the body must
    not act on different tasks (SEP-2243's -32020, HTTP 400)."""
    raw = RawMcp(gateway.url, MODERN)
    params: dict[str, Any] = {"taskId": "t1", "_meta": {**MODERN_META, **TASKS_META}}
    if method == "tasks/update":
        params["inputResponses"] = {}
    body = json.dumps({"jsonrpc": "2.0", "id": 7, "method": method, "params": params}).encode()
    headers = await raw.headers(method)
    async with httpx2.AsyncClient(timeout=30) as http:
        response = await http.post(
            gateway.url, content=body, headers=[*headers.items(), *(("Mcp-Name", n) for n in names)]
        )
    assert response.status_code == 400, response.text
    assert response.json()["error"]["code"] == -32020 and response.json()["id"] == 7


async def test_2026_a_task_request_naming_its_task_reaches_the_handler(gateway: RunningGateway) -> None:
    raw = RawMcp(gateway.url, MODERN)
    params = {"taskId": "no-such-task", "_meta": {**MODERN_META, **TASKS_META}}
    body = json.dumps({"jsonrpc": "2.0", "id": 7, "method": "tasks/get", "params": params}).encode()
    response = await raw.post(body, method="tasks/get", tool="no-such-task")
    assert message_of(response)["error"]["code"] == -32602  # TASK_NOT_FOUND: the handler answered
