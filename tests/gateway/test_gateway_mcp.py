"""The gateway end to end through the real mcp SDK client, in both protocol eras."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from mcp import Client
from mcp.shared.exceptions import MCPError
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.js.kv import KeyValue

import gateway.tool_service
from bus.subjects import Header, Subjects
from gateway.errors import DEADLINE_EXCEEDED, INTERNAL_ERROR, INVALID_PARAMS, NO_WORKER, OVERLOADED, PAYLOAD_TOO_LARGE
from schemas.errors import ErrorCode
from schemas.wire import CallToolResult, TextContent, ToolDescriptor
from tests.gateway.responders import (
    ADD,
    STATS,
    RunningGateway,
    ScriptedWorker,
    error_reply,
    put_tools,
    result_reply,
    silent,
)

StartGateway = Callable[..., Awaitable[RunningGateway]]
StartWorker = Callable[..., Awaitable[ScriptedWorker]]

ERAS = {"legacy": "2025-11-25", "auto": "2026-07-28"}


@pytest.fixture(params=sorted(ERAS))
def mode(request: pytest.FixtureRequest) -> str:
    """How the client negotiates: ``legacy`` (2025-11-25 handshake) or ``auto`` (2026-07-28)."""
    return str(request.param)


def tool(name: str) -> ToolDescriptor:
    return ToolDescriptor(name=name, description=f"tool {name}", input_schema={"type": "object"})


async def test_client_negotiates_the_expected_era(start_gateway: StartGateway, kv: KeyValue, mode: str) -> None:
    gateway = await start_gateway()
    async with Client(gateway.url, mode=mode) as client:
        assert client.protocol_version == ERAS[mode]


async def test_tools_list_carries_input_schemas_and_era_shaped_output_schemas(
    start_gateway: StartGateway, kv: KeyValue, mode: str
) -> None:
    await put_tools(kv, STATS, ADD)
    gateway = await start_gateway()
    async with Client(gateway.url, mode=mode) as client:
        listed = await client.list_tools()
    assert [t.name for t in listed.tools] == ["add", "stats"]
    assert listed.next_cursor is None
    add, stats = listed.tools
    assert add.input_schema == ADD.input_schema
    assert add.description == "Add two integers."
    assert stats.input_schema == STATS.input_schema
    assert stats.output_schema == STATS.output_schema
    # A non-object outputSchema would make a 2025 client reject the whole list: dropped there.
    assert add.output_schema == (ADD.output_schema if mode == "auto" else None)


async def test_tools_list_pages_through_the_catalogue(start_gateway: StartGateway, kv: KeyValue, mode: str) -> None:
    names = ["t1", "t2", "t3", "t4", "t5"]
    await put_tools(kv, *(tool(n) for n in reversed(names)))
    gateway = await start_gateway(page_size=2)
    seen: list[list[str]] = []
    async with Client(gateway.url, mode=mode) as client:
        cursor: str | None = None
        while True:
            page = await client.list_tools(cursor=cursor)
            seen.append([t.name for t in page.tools])
            cursor = page.next_cursor
            if cursor is None:
                break
    assert seen == [["t1", "t2"], ["t3", "t4"], ["t5"]]


async def test_an_invalid_cursor_is_invalid_params(start_gateway: StartGateway, kv: KeyValue, mode: str) -> None:
    await put_tools(kv, ADD)
    gateway = await start_gateway()
    async with Client(gateway.url, mode=mode) as client:
        with pytest.raises(MCPError) as caught:
            await client.list_tools(cursor="not-a-cursor")
    assert caught.value.code == INVALID_PARAMS
    assert "cursor" in caught.value.message


async def test_call_returns_the_workers_result_shaped_for_the_era(
    start_gateway: StartGateway, kv: KeyValue, worker: StartWorker, mode: str
) -> None:
    await put_tools(kv, ADD)
    add = await worker("add", result_reply(CallToolResult(content=[TextContent("5")], structured_content=5)))
    gateway = await start_gateway()
    async with Client(gateway.url, mode=mode) as client:
        result = await client.call_tool("add", {"a": 2, "b": 3})
    assert not result.is_error
    assert [c.text for c in result.content if c.type == "text"] == ["5"]
    if mode == "auto":
        assert result.structured_content == 5
    else:
        assert result.structured_content is None  # integers are not structured output before 2026
    (msg,) = add.messages
    assert msg.data == b'{"a":2,"b":3}'
    assert msg.headers is not None
    assert msg.headers[Header.ERA] == ERAS[mode]
    assert msg.headers[Header.REQUEST_ID]  # a unique id (NUID) per call
    assert int(msg.headers[Header.DEADLINE_MS]) > 0


async def test_a_2025_client_without_text_content_still_sees_the_value(
    start_gateway: StartGateway, kv: KeyValue, worker: StartWorker
) -> None:
    await put_tools(kv, ADD)
    await worker("add", result_reply(CallToolResult(content=[], structured_content=5)))
    gateway = await start_gateway()
    async with Client(gateway.url, mode="legacy") as client:
        result = await client.call_tool("add", {"a": 2, "b": 3})
    assert result.structured_content is None
    assert [c.text for c in result.content if c.type == "text"] == ["5"]


async def test_object_structured_content_reaches_both_eras(
    start_gateway: StartGateway, kv: KeyValue, worker: StartWorker, mode: str
) -> None:
    await put_tools(kv, STATS)
    reply = CallToolResult(content=[TextContent('{"mean": 2.0}')], structured_content={"mean": 2.0})
    await worker("stats", result_reply(reply))
    gateway = await start_gateway()
    async with Client(gateway.url, mode=mode) as client:
        result = await client.call_tool("stats", {"values": [1, 3]})
    assert result.structured_content == {"mean": 2.0}


async def test_a_tool_error_result_passes_through(
    start_gateway: StartGateway, kv: KeyValue, worker: StartWorker, mode: str
) -> None:
    await put_tools(kv, STATS)
    await worker("stats", result_reply(CallToolResult(content=[TextContent("empty list")], is_error=True)))
    gateway = await start_gateway()
    async with Client(gateway.url, mode=mode) as client:
        result = await client.call_tool("stats", {"values": []})
    assert result.is_error
    assert [c.text for c in result.content if c.type == "text"] == ["empty list"]


@pytest.mark.parametrize(
    ("arguments", "field"),
    [({"a": 1}, "b"), ({"a": "one", "b": 2}, "a"), ({"a": 1, "b": 2, "c": 3}, "c")],
)
async def test_invalid_arguments_are_a_tool_error_naming_the_field_and_nothing_is_published(
    start_gateway: StartGateway,
    kv: KeyValue,
    worker: StartWorker,
    nc: NatsClient,
    subjects: Subjects,
    mode: str,
    arguments: dict[str, Any],
    field: str,
) -> None:
    await put_tools(kv, ADD)
    add = await worker("add", result_reply(CallToolResult(content=[TextContent("3")], structured_content=3)))
    published: list[Msg] = []

    async def spy(msg: Msg) -> None:
        published.append(msg)

    await nc.subscribe(subjects.call_any, cb=spy)
    await nc.flush()
    gateway = await start_gateway()
    async with Client(gateway.url, mode=mode) as client:
        result = await client.call_tool("add", arguments)
        assert result.is_error
        (text,) = [c.text for c in result.content if c.type == "text"]
        assert f"{field}:" in text
        assert "'add'" in text
        # A valid call afterwards: the gateway's publishes are ordered, so the spy seeing only
        # this one proves the invalid call published nothing.
        ok = await client.call_tool("add", {"a": 1, "b": 2})
        assert not ok.is_error
    await nc.flush()
    assert len(add.messages) == 1
    assert [m.data for m in published] == [b'{"a":1,"b":2}']


async def test_an_unknown_tool_is_invalid_params_naming_it(
    start_gateway: StartGateway, kv: KeyValue, mode: str
) -> None:
    await put_tools(kv, ADD)
    gateway = await start_gateway()
    async with Client(gateway.url, mode=mode) as client:
        with pytest.raises(MCPError) as caught:
            await client.call_tool("subtract", {"a": 1, "b": 2})
    assert caught.value.code == INVALID_PARAMS
    assert "'subtract'" in caught.value.message


async def test_no_worker_for_a_listed_tool_is_the_no_worker_error(
    start_gateway: StartGateway, kv: KeyValue, mode: str
) -> None:
    await put_tools(kv, ADD)
    gateway = await start_gateway()
    async with Client(gateway.url, mode=mode) as client:
        with pytest.raises(MCPError) as caught:
            await client.call_tool("add", {"a": 1, "b": 2})
    assert caught.value.code == NO_WORKER
    assert caught.value.message == "no worker is serving tool 'add' right now; retry later"
    assert caught.value.data == {"reason": "NO_WORKER", "retryable": True, "tool": "add"}


async def test_a_silent_worker_ends_in_the_deadline_error(
    start_gateway: StartGateway, kv: KeyValue, worker: StartWorker, mode: str
) -> None:
    await put_tools(kv, ADD)
    await worker("add", silent)
    gateway = await start_gateway(call_timeout_s=0.3)
    async with Client(gateway.url, mode=mode) as client:
        with pytest.raises(MCPError) as caught:
            await client.call_tool("add", {"a": 1, "b": 2})
    assert caught.value.code == DEADLINE_EXCEEDED
    assert "deadline passed" in caught.value.message
    assert "'add'" in caught.value.message


@pytest.mark.parametrize(
    ("code", "jsonrpc_code", "retryable"),
    [
        (ErrorCode.OVERLOADED, OVERLOADED, True),
        (ErrorCode.NO_WORKER, NO_WORKER, True),
        (ErrorCode.DEADLINE_EXCEEDED, DEADLINE_EXCEEDED, False),
        (ErrorCode.PAYLOAD_TOO_LARGE, PAYLOAD_TOO_LARGE, False),
        (ErrorCode.UNKNOWN_TOOL, INVALID_PARAMS, False),
        (ErrorCode.BAD_REQUEST, INVALID_PARAMS, False),
        (ErrorCode.INTERNAL, INTERNAL_ERROR, False),
    ],
)
async def test_worker_error_replies_map_to_jsonrpc_errors(
    start_gateway: StartGateway,
    kv: KeyValue,
    worker: StartWorker,
    mode: str,
    code: ErrorCode,
    jsonrpc_code: int,
    retryable: bool,
) -> None:
    await put_tools(kv, ADD)
    await worker("add", error_reply(code, "worker says so"))
    gateway = await start_gateway()
    async with Client(gateway.url, mode=mode) as client:
        with pytest.raises(MCPError) as caught:
            await client.call_tool("add", {"a": 1, "b": 2})
    assert caught.value.code == jsonrpc_code
    assert "'add'" in caught.value.message
    assert caught.value.data == {"reason": code.name, "retryable": retryable, "tool": "add"}


async def test_a_reply_that_is_not_a_result_is_an_internal_error(
    start_gateway: StartGateway, kv: KeyValue, worker: StartWorker, mode: str
) -> None:
    async def garbage(_msg: Msg) -> tuple[bytes, None]:
        return b'{"content": "nope"}', None

    await put_tools(kv, ADD)
    await worker("add", garbage)
    gateway = await start_gateway()
    async with Client(gateway.url, mode=mode) as client:
        with pytest.raises(MCPError) as caught:
            await client.call_tool("add", {"a": 1, "b": 2})
    assert caught.value.code == INTERNAL_ERROR
    assert "'add'" in caught.value.message


async def test_catalogue_changes_reach_clients_without_a_restart(
    start_gateway: StartGateway, kv: KeyValue, mode: str
) -> None:
    await put_tools(kv, ADD)
    gateway = await start_gateway()
    async with Client(gateway.url, mode=mode) as client:
        await put_tools(kv, STATS)
        await kv.delete("add")
        async with asyncio.timeout(5):
            # Polling the server is the point here: the client has no other way to see the change.
            while [t.name for t in (await client.list_tools(cache_mode="refresh")).tools] != ["stats"]:  # noqa: ASYNC110
                await asyncio.sleep(0.02)
        with pytest.raises(MCPError) as caught:
            await client.call_tool("add", {"a": 1, "b": 2})
    assert caught.value.code == INVALID_PARAMS


async def test_a_gateway_without_nats_says_so_at_once(
    start_gateway: StartGateway, kv: KeyValue, worker: StartWorker, mode: str
) -> None:
    await put_tools(kv, ADD)
    await worker("add", silent)
    gateway = await start_gateway(call_timeout_s=30)
    assert gateway.state.nc is not None
    await gateway.state.nc.close()
    async with Client(gateway.url, mode=mode) as client:
        assert [t.name for t in (await client.list_tools()).tools] == ["add"]  # the catalogue stays
        with pytest.raises(MCPError) as caught:
            await client.call_tool("add", {"a": 1, "b": 2})
    assert caught.value.code == NO_WORKER
    assert "not connected to NATS" in caught.value.message


async def test_a_bug_is_an_internal_error_without_details(
    start_gateway: StartGateway, kv: KeyValue, mode: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*_args: object) -> str:
        raise RuntimeError("secret detail")

    monkeypatch.setattr(gateway.tool_service, "argument_problem", broken)
    await put_tools(kv, ADD)
    running = await start_gateway()
    async with Client(running.url, mode=mode) as client:
        with pytest.raises(MCPError) as caught:
            await client.call_tool("add", {"a": 1, "b": 2})
    assert caught.value.code == INTERNAL_ERROR
    assert "secret" not in caught.value.message
    assert "secret" not in str(caught.value.data)
