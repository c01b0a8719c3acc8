"""Views: named subsets of tools on ``/mcp/<view>``, through real mcp SDK clients in both eras, on the
hot path and the SDK path, with views from config and from the views bucket (set by the real CLI)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import httpx2
import pytest
from mcp import Client
from nats.aio.client import Client as NatsClient
from nats.js.kv import KeyValue

from bus.embedded import EmbeddedNatsServer
from bus.provisioning import ensure_bucket
from bus.subjects import Subjects
from gateway.app import hot_path
from gateway.catalogue_mirror import CatalogueMirror
from gateway.policy import Policy
from gateway.principals import Principal
from gateway.tool_service import ToolService
from gateway.views import ViewBook
from schemas.config import PolicyRule, ViewSettings, load_settings
from schemas.wire import CallToolResult, TextContent
from stores import ViewStore
from tests.conftest import eventually, nats_settings, toolbus
from tests.gateway.listeners import SETTLE_S, listening, tool
from tests.gateway.odd_json import ODD_BODIES
from tests.gateway.raw_mcp import ERAS, LEGACY, MODERN, RawMcp, jsonrpc_error, open_session
from tests.gateway.responders import (
    ADD,
    STATS,
    RunningGateway,
    ScriptedWorker,
    TaskSystem,
    message_of,
    put_tools,
    ready,
    result_reply,
    running_gateway,
    spying,
)
from tests.gateway.test_pipeline import REGION

StartGateway = Callable[..., Awaitable[RunningGateway]]
MATH = ["add"]
"""The view ``math`` of the gateway's config."""


@pytest.fixture
async def views_kv(nc: NatsClient, subjects: Subjects) -> KeyValue:
    """The views bucket, as the registry creates it."""
    return await ensure_bucket(nc, subjects.views_bucket)


@pytest.fixture
async def start(
    nats_server: EmbeddedNatsServer, subjects: Subjects, kv: KeyValue, views_kv: KeyValue
) -> AsyncIterator[StartGateway]:
    """A gateway with ``[views.math]`` in its config, over a catalogue of ``add`` and ``stats``."""
    await put_tools(kv, ADD, STATS)
    stack = AsyncExitStack()

    async def started(**gateway: Any) -> RunningGateway:
        settings = load_settings(
            None,
            nats={"url": nats_server.url, "prefix": subjects.prefix},
            gateway=gateway,
            views={"math": {"tools": MATH}},
        )
        running = await stack.enter_async_context(running_gateway(settings))
        await asyncio.wait_for(running.state.catalogue.loaded.wait(), 10)
        return running

    async with stack:
        yield started


async def names(url: str, mode: str) -> list[str]:
    async with Client(url, mode=mode) as client:
        return sorted(t.name for t in (await client.list_tools()).tools)


@pytest.mark.parametrize("hot", [True, False], ids=["hot-path", "sdk-only"])
async def test_two_views_serve_two_tool_lists_and_refuse_the_rest_as_unknown(
    start: StartGateway,
    nc: NatsClient,
    subjects: Subjects,
    kv: KeyValue,
    worker: Callable[..., Awaitable[ScriptedWorker]],
    hot: bool,
) -> None:
    await ViewStore(await nc.jetstream().key_value(subjects.views_bucket)).set("numbers", ["stat*"])
    gateway = await start(hot_path=hot)
    await asyncio.wait_for(gateway.state.catalogue.loaded.wait(), 10)
    added = await worker("add", result_reply(CallToolResult(content=[TextContent("3")], structured_content=3)))
    base = gateway.base_url + gateway.settings.gateway.path
    await eventually(lambda: _view_loaded(gateway, "numbers"), timeout_s=10)

    for mode in ("legacy", "auto"):
        assert await names(f"{base}/math", mode) == ["add"], mode
        assert await names(f"{base}/numbers", mode) == ["stats"], mode
        assert await names(base, mode) == ["add", "stats"], mode
    served = hot_path(gateway.app).served if hot else 0

    for era in ERAS:
        math, whole = RawMcp(f"{base}/math", era), RawMcp(base, era)
        inside = await math.call("add", {"a": 1, "b": 2})
        assert inside.status_code == 200 and _result(inside)["content"][0]["text"] == "3", inside.text
        outside = await math.call("stats", {"values": [1]})
        unknown = await whole.call("nope", {"values": [1]})
        # Exactly an unknown tool: same status, same code, same message but for the name.
        assert outside.status_code == unknown.status_code
        assert json.dumps(_error(outside)) == json.dumps(_error(unknown)).replace("nope", "stats")
        assert "unknown tool 'stats'" in _error(outside)["message"], era
        # As a task too (2026: the extension declared; 2025: params.task): unknown, no task made.
        meta = {"io.modelcontextprotocol/clientCapabilities": {"extensions": {"io.modelcontextprotocol/tasks": {}}}}
        as_task = await math.call("stats", {"values": [1]}, **({"_meta": meta} if era == MODERN else {"task": {}}))
        assert "unknown tool 'stats'" in _error(as_task)["message"], era
    assert len(added.messages) == 2  # one call per era reached the worker; the refused ones none

    # A tool outside the view has no schema there either: its Mcp-Param-* headers are not checked
    # (which would answer 400 / -32020 and so reveal it), it is unknown, as on the SDK's own check.
    await put_tools(kv, REGION)
    await eventually(lambda: gateway.state.catalogue.get("region_echo") is not None)
    math, whole = RawMcp(f"{base}/math", MODERN), RawMcp(base, MODERN)
    for header in ({}, {"Mcp-Param-Region": "us-east"}):
        outside = await math.post(math.call_body("region_echo", {"region": "eu-west"}), tool="region_echo", **header)
        unknown = await whole.post(whole.call_body("nope", {"region": "eu-west"}), tool="nope", **header)
        assert outside.status_code == unknown.status_code, outside.text
        assert json.dumps(_error(outside)) == json.dumps(_error(unknown)).replace("nope", "region_echo")
        mismatched = await whole.post(
            whole.call_body("region_echo", {"region": "eu-west"}), tool="region_echo", **header
        )
        assert jsonrpc_error(mismatched) == -32020  # on /mcp, where it exists, the headers are checked
    if hot:
        assert hot_path(gateway.app).served > served  # the fast path served views, refusals included

    async with httpx2.AsyncClient(timeout=10) as http:
        for odd in ("nope", "math/", "math/tools", "/math", "MATH", "..", "%2e%2e", ""):
            missing = await http.post(f"{base}/{odd}", content=b"{}", headers={"Content-Type": "application/json"})
            assert missing.status_code == 404, odd
    # A 2025 session belongs to its path: named on another path it does not exist.
    opened = await open_session(f"{base}/math")
    session = opened.headers["mcp-session-id"]
    for elsewhere in (f"{base}/numbers", base):
        raw = RawMcp(elsewhere, LEGACY, session_id=session)
        moved = await raw.post(raw.call_body("add", {"a": 1, "b": 2}))
        assert moved.status_code == 404 and "Session not found" in moved.text, elsewhere
    assert len(added.messages) == 2


async def test_changing_a_view_at_run_time_tells_that_views_clients_only(
    start: StartGateway, nats_server: EmbeddedNatsServer, subjects: Subjects, kv: KeyValue, tmp_path: Path
) -> None:
    gateway = await start()
    base = gateway.base_url + gateway.settings.gateway.path
    config = nats_settings(tmp_path, nats_server.url, subjects.prefix)
    done = await asyncio.to_thread(toolbus, "views", "set", "numbers", "stats", "--config", str(config))
    assert done.returncode == 0, done.stderr
    await eventually(lambda: _view_loaded(gateway, "numbers"), timeout_s=10)

    async with AsyncExitStack() as stack:
        listeners = {
            (view, mode): await stack.enter_async_context(listening(f"{base}/{view}", kv, mode))
            for view in ("math", "numbers")
            for mode in ("legacy", "auto")
        }
        await asyncio.sleep(SETTLE_S)
        before = {key: listener.inbox.heard for key, listener in listeners.items()}

        # The operator widens `numbers` with the real CLI; only its clients hear of it.
        done = await asyncio.to_thread(toolbus, "views", "set", "numbers", "stats", "add", "--config", str(config))
        assert done.returncode == 0, done.stderr
        for mode in ("legacy", "auto"):
            client, inbox = listeners[("numbers", mode)].client, listeners[("numbers", mode)].inbox
            await inbox.more_than(before[("numbers", mode)])
            assert sorted(t.name for t in (await client.list_tools()).tools) == ["add", "stats"], mode
        await asyncio.sleep(SETTLE_S)
        for mode in ("legacy", "auto"):
            assert listeners[("math", mode)].inbox.heard == before[("math", mode)], mode

        listed = await asyncio.to_thread(toolbus, "views", "list", "--json", "--config", str(config))
        assert json.loads(listed.stdout) == [{"name": "numbers", "source": "run time", "tools": ["stats", "add"]}]
        # Deleting it: its clients hear once more, and the path is gone.
        before = {key: listener.inbox.heard for key, listener in listeners.items()}
        done = await asyncio.to_thread(toolbus, "views", "delete", "numbers", "--config", str(config))
        assert done.returncode == 0, done.stderr
        await listeners[("numbers", "auto")].inbox.more_than(before[("numbers", "auto")])
    async with httpx2.AsyncClient(timeout=10) as http:
        gone = await http.post(f"{base}/numbers", content=b"{}", headers={"Content-Type": "application/json"})
    assert gone.status_code == 404
    bad = await asyncio.to_thread(toolbus, "views", "set", "Bad/Name", "x", "--config", str(config))
    assert bad.returncode == 1 and "view name 'Bad/Name' must be" in bad.stderr


def _view_loaded(gateway: RunningGateway, name: str) -> bool:
    return gateway.state.views.get(name) is not None


def _result(response: httpx2.Response) -> dict[str, Any]:
    result: dict[str, Any] = message_of(response)["result"]
    return result


def _error(response: httpx2.Response) -> dict[str, Any]:
    error: dict[str, Any] = message_of(response)["error"]
    return error


def test_a_view_narrows_what_policy_grants_and_never_widens_it() -> None:
    catalogue = CatalogueMirror()
    for name in ("calc_add", "calc_div", "docs_search", "admin_reset"):
        catalogue.put(tool(name))
    service = ToolService(catalogue, page_size=10)
    service.views = ViewBook({"work": ViewSettings(tools=["calc_*", "admin_*"])})
    service.policy = Policy([PolicyRule(subjects=["key:alice"], tools=["calc_*", "docs_*"])])
    alice = Principal("key:alice", method="api-key", name="alice")

    def listed(principal: Principal, view: str | None) -> list[str]:
        return [entry.name for entry in service.page(None, principal, view).entries]

    assert listed(alice, None) == ["calc_add", "calc_div", "docs_search"]
    assert listed(alice, "work") == ["calc_add", "calc_div"]  # admin_reset is in the view, not in her grant
    assert listed(Principal("key:mallory", method="api-key", name="mallory"), "work") == []
    assert listed(alice, "gone") == []  # a view deleted under a request: nothing, not everything
    assert service.entry("docs_search", "work") is None and service.entry("docs_search", None) is not None
    assert service.entry("calc_add", "gone") is None


async def test_an_initialize_naming_a_session_of_its_own_choosing_opens_no_unbound_session(
    start: StartGateway,
) -> None:
    # A session is bound to its path when the answer that opens it carries its id; a request that
    # already names one is not watched. An initialize on a view naming a made-up session must not
    # open a session that the binding never saw (usable on /mcp, past the view).
    gateway = await start()
    base = gateway.base_url + gateway.settings.gateway.path
    body = {
        "jsonrpc": "2.0",
        "id": 0,
        "method": "initialize",
        "params": {"protocolVersion": LEGACY, "capabilities": {}, "clientInfo": {"name": "raw", "version": "1"}},
    }
    headers = {"Accept": "application/json, text/event-stream", "Mcp-Session-Id": "made-up-session"}
    async with httpx2.AsyncClient(timeout=10) as http:
        opened = await http.post(f"{base}/math", json=body, headers=headers)
    assert opened.status_code == 404 and "mcp-session-id" not in opened.headers, opened.text


@pytest.mark.parametrize("era", ERAS)
@pytest.mark.parametrize("hot_path_on", [True, False])
async def test_no_odd_body_on_a_view_reaches_a_tool_outside_it(
    task_system: TaskSystem, era: str, hot_path_on: bool
) -> None:
    """The odd-JSON corpus (non-finite and huge numbers, duplicate names and methods, escapes,
    deep nesting, batches) sent on a view that holds kit_greet only, through whichever layer
    serves it: the workers hear no call of kit_add or kit_divide, and the gateway serves on."""
    settings = load_settings(
        None,
        nats={"url": task_system.nats_url, "prefix": task_system.subjects.prefix},
        gateway={"hot_path": hot_path_on},
        views={"greet": {"tools": ["kit_greet"]}},
    )
    async with running_gateway(settings) as gateway:
        await ready(gateway, "kit_greet")
        raw = RawMcp(f"{gateway.url}/greet", era)
        async with spying(task_system, "kit_add") as added, spying(task_system, "kit_divide") as divided:
            for case, body in ODD_BODIES.items():
                response = await raw.post(body, tool="kit_add")
                assert response.status_code != 500 and "Traceback" not in response.text, (case, response.text)
            greeted = await raw.call("kit_greet", {"name": "x"})  # the view's own tool still answers
            assert greeted.status_code == 200 and jsonrpc_error(greeted) is None, greeted.text
        assert added == [] and divided == [], [m.subject for m in added + divided]
