"""Resources, resource templates, prompts and completion through the gateway, end to end: a real
registry, a real worker serving the conformance component (componentize-py, toolbus:mcp exports),
a real gateway, and the mcp SDK's ``Client`` in both protocol eras; then policy, attacked."""

from __future__ import annotations

import asyncio
import json
import warnings
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx2
import mcp_types as types
import pytest
from mcp import Client
from mcp.shared.exceptions import MCPDeprecationWarning, MCPError
from nats.aio.client import Client as NatsClient

from bus.connection import connect
from bus.embedded import EmbeddedNatsServer
from bus.subjects import Subjects
from gateway.errors import INVALID_PARAMS
from gateway.inbound import MAX_RESOURCE_SUBSCRIPTIONS
from registry.service import RegistryService
from schemas.config import ComponentSettings, RegistrySettings, WorkerSettings
from tests.conftest import TEST_ANNOUNCE_INTERVAL_S, eventually
from tests.gateway.auth_kit import API_KEY, Issuer, client
from tests.gateway.raw_mcp import LEGACY, MODERN, MODERN_META, RawMcp, jsonrpc_error
from tests.gateway.responders import RunningGateway
from tests.workers.conftest import conformance_wasm  # noqa: F401 (a fixture)
from workers.sandbox.component import LoadedComponent
from workers.sandbox.engine import EngineHost
from workers.service import WorkerService

StartGateway = Callable[..., Awaitable[RunningGateway]]
MODES = ["legacy", "auto"]


@pytest.fixture(scope="module")
def conformance(engine_host: EngineHost, cache_dir: Path, conformance_wasm: Path) -> LoadedComponent:  # noqa: F811
    return LoadedComponent.load(
        engine_host, ComponentSettings(name="test", path=conformance_wasm), conformance_wasm, cache_dir
    )


@pytest.fixture
async def served(
    nats_server: EmbeddedNatsServer,
    nc: NatsClient,
    subjects: Subjects,
    conformance: LoadedComponent,
    kit: LoadedComponent,
) -> AsyncIterator[None]:
    """A registry and a worker serving the conformance component (and the testkit) on the test's deployment."""
    registry = RegistryService(nc, subjects, RegistrySettings(), announce_interval_s=TEST_ANNOUNCE_INTERVAL_S)
    await registry.start()
    worker_nc = await connect(nats_server.url, name="surface-worker")
    settings = WorkerSettings(concurrency=2, announce_interval_s=TEST_ANNOUNCE_INTERVAL_S)
    worker = WorkerService(worker_nc, subjects, settings, [kit, conformance])
    await worker.start()
    yield
    await worker.stop(grace_s=1)
    await worker_nc.close()
    await registry.stop()


async def surfaces_ready(gateway: RunningGateway) -> RunningGateway:
    front_door = gateway.state.front_door
    assert front_door is not None
    await eventually(lambda: front_door.surfaces.surface("test") is not None, timeout_s=10)
    # The tool the update tests call, too: the registry offers a component's tools one by one.
    catalogue = gateway.state.catalogue
    await eventually(lambda: catalogue.get("test_update_watched_resource") is not None, timeout_s=10)
    return gateway


@pytest.fixture
async def gateway(served: None, start_gateway: StartGateway) -> RunningGateway:
    return await surfaces_ready(await start_gateway())


@pytest.mark.parametrize("mode", MODES)
async def test_resources_templates_prompts_and_completion_in_both_eras(gateway: RunningGateway, mode: str) -> None:
    async with Client(gateway.url, mode=mode) as mcp:
        capabilities = mcp.server_capabilities
        assert capabilities.resources is not None and capabilities.resources.list_changed
        assert capabilities.prompts is not None and capabilities.prompts.list_changed
        assert capabilities.completions is not None
        resources = await mcp.list_resources()
        assert [str(r.uri) for r in resources.resources] == [
            "test://static-binary",
            "test://static-text",
            "test://watched-resource",
        ]
        templates = await mcp.list_resource_templates()
        assert [t.uri_template for t in templates.resource_templates] == ["test://template/{id}/data"]

        text = (await mcp.read_resource("test://static-text")).contents[0]
        assert isinstance(text, types.TextResourceContents)
        assert text.text == "This is the content of the static text resource."
        blob = (await mcp.read_resource("test://static-binary")).contents[0]
        assert isinstance(blob, types.BlobResourceContents) and blob.mime_type == "image/png"
        templated = (await mcp.read_resource("test://template/123/data")).contents[0]
        assert isinstance(templated, types.TextResourceContents) and '"id": "123"' in templated.text

        prompts = await mcp.list_prompts()
        assert [p.name for p in prompts.prompts] == [
            "test_input_required_result_prompt",
            "test_prompt_with_arguments",
            "test_prompt_with_embedded_resource",
            "test_prompt_with_image",
            "test_simple_prompt",
        ]
        got = await mcp.get_prompt("test_prompt_with_arguments", {"arg1": "a", "arg2": "b"})
        assert isinstance(got.messages[0].content, types.TextContent)
        assert got.messages[0].content.text == "Prompt with arguments: arg1='a', arg2='b'"
        image = await mcp.get_prompt("test_prompt_with_image")
        assert isinstance(image.messages[0].content, types.ImageContent)

        ref = types.PromptReference(type="ref/prompt", name="test_prompt_with_arguments")
        completed = await mcp.complete(ref, {"name": "arg1", "value": "par"})
        assert completed.completion.values == ["paris", "park", "party"]
        template_ref = types.ResourceTemplateReference(type="ref/resource", uri="test://template/{id}/data")
        assert (await mcp.complete(template_ref, {"name": "id", "value": "1"})).completion.values == ["1", "123"]


@pytest.mark.parametrize("mode", MODES)
async def test_an_unknown_resource_is_invalid_params_naming_the_uri(gateway: RunningGateway, mode: str) -> None:
    async with Client(gateway.url, mode=mode) as mcp:
        with pytest.raises(MCPError) as caught:
            await mcp.read_resource("test://nowhere")
    assert caught.value.code == INVALID_PARAMS
    assert caught.value.error.data["uri"] == "test://nowhere"


@pytest.mark.parametrize("mode", MODES)
async def test_a_prompt_missing_an_argument_or_unknown_is_invalid_params(gateway: RunningGateway, mode: str) -> None:
    async with Client(gateway.url, mode=mode) as mcp:
        for name, arguments in (("test_prompt_with_arguments", {"arg1": "a"}), ("test_nope", {})):
            with pytest.raises(MCPError) as caught:
                await mcp.get_prompt(name, arguments)
            assert caught.value.code == INVALID_PARAMS, name


@pytest.mark.parametrize("mode", MODES)
async def test_lists_page_with_the_tools_cursor_scheme(served: None, start_gateway: StartGateway, mode: str) -> None:
    gateway = await surfaces_ready(await start_gateway(page_size=2))
    async with Client(gateway.url, mode=mode) as mcp:
        uris: list[str] = []
        cursor: str | None = None
        while True:
            page = await mcp.list_resources(cursor=cursor)
            uris += [str(r.uri) for r in page.resources]
            cursor = page.next_cursor
            if cursor is None:
                break
        assert len(uris) == 3 and uris == sorted(uris)
        first = await mcp.list_prompts()
        assert len(first.prompts) == 2 and first.next_cursor is not None
        second = await mcp.list_prompts(cursor=first.next_cursor)
        assert [p.name for p in second.prompts] == ["test_prompt_with_embedded_resource", "test_prompt_with_image"]
        with pytest.raises(MCPError) as caught:
            await mcp.list_resources(cursor="not-a-cursor")
        assert caught.value.code == INVALID_PARAMS


@dataclass
class Updates:
    uris: list[str] = field(default_factory=list)
    arrived: asyncio.Event = field(default_factory=asyncio.Event)

    async def handle(self, message: Any) -> None:
        if isinstance(message, types.ResourceUpdatedNotification):
            self.uris.append(str(message.params.uri))
            self.arrived.set()


async def test_a_guest_update_reaches_a_subscribed_2025_session(gateway: RunningGateway) -> None:
    updates = Updates()
    async with Client(gateway.url, mode="legacy", message_handler=updates.handle) as mcp:
        with warnings.catch_warnings():  # deprecated for 2026-07-28 only; this is a 2025 session
            warnings.simplefilter("ignore", MCPDeprecationWarning)
            await mcp.session.subscribe_resource("test://watched-resource")
        # The session's GET stream opens on its own after initialize: a notice before it is lost.
        for _attempt in range(30):
            await mcp.call_tool("test_update_watched_resource", {})
            try:
                await asyncio.wait_for(updates.arrived.wait(), 0.5)
                break
            except TimeoutError:
                continue
        assert updates.uris and set(updates.uris) == {"test://watched-resource"}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", MCPDeprecationWarning)
            await mcp.session.unsubscribe_resource("test://watched-resource")
        updates.uris.clear()
        updates.arrived.clear()
        await mcp.call_tool("test_update_watched_resource", {})
        await asyncio.sleep(0.5)
        assert updates.uris == []


async def test_a_guest_update_reaches_a_2026_listen_stream_that_asked_for_it(gateway: RunningGateway) -> None:
    async with Client(gateway.url, mode="auto") as mcp:
        async with mcp.listen(resource_subscriptions=["test://watched-resource"]) as subscription:
            await mcp.call_tool("test_update_watched_resource", {})
            async with asyncio.timeout(5):
                async for event in subscription:
                    assert getattr(event, "uri", None) == "test://watched-resource"
                    break


# -- policy -----------------------------------------------------------------------------------------

POLICY = [
    {"scopes": ["mcp:tools", "team:test"], "tools": ["test_*"]},
    {"scopes": ["mcp:tools", "team:prompt"], "tools": ["test_simple_prompt", "test_simple_text"]},
    {"subjects": ["key:*"], "tools": ["kit_*"]},
]


@pytest.fixture(params=[True, False], ids=["hot-path", "sdk-only"])
async def secured_gateway(
    request: pytest.FixtureRequest, served: None, nats_server: EmbeddedNatsServer, subjects: Subjects, issuer: Issuer
) -> AsyncIterator[RunningGateway]:
    """A gateway with a policy, with and without the hot path (which never serves these methods:
    the refusals must not depend on it)."""
    from schemas.config import load_settings
    from tests.gateway.auth_kit import PRINCIPAL_KEY, auth_settings
    from tests.gateway.responders import running_gateway

    settings = load_settings(
        None,
        nats={"url": nats_server.url, "prefix": subjects.prefix, "principal_key": PRINCIPAL_KEY},
        auth=auth_settings(issuer, policy=POLICY),
        gateway={"hot_path": request.param},
    )
    async with running_gateway(settings) as gateway:
        yield await surfaces_ready(gateway)


@pytest.mark.parametrize("mode", MODES)
async def test_each_principal_lists_only_what_its_globs_grant(
    secured_gateway: RunningGateway, issuer: Issuer, mode: str
) -> None:
    url = secured_gateway.url
    async with client(url, issuer.token(scope="mcp:tools team:test"), mode=mode) as mcp:
        assert len((await mcp.list_resources()).resources) == 3
        assert len((await mcp.list_prompts()).prompts) == 5
    async with client(url, issuer.token(scope="mcp:tools team:prompt"), mode=mode) as mcp:
        assert (await mcp.list_resources()).resources == []  # no whole-component grant
        assert (await mcp.list_resource_templates()).resource_templates == []
        assert [p.name for p in (await mcp.list_prompts()).prompts] == ["test_simple_prompt"]
        assert (await mcp.get_prompt("test_simple_prompt")).messages
    async with client(url, API_KEY, mode=mode, api_key_header=True) as mcp:
        assert (await mcp.list_resources()).resources == []
        assert (await mcp.list_prompts()).prompts == []


ATTACKS = {
    "read another component's resource": ("resources/read", {"uri": "test://static-text"}),
    "read an unknown resource": ("resources/read", {"uri": "test://nowhere"}),
    "read through a template": ("resources/read", {"uri": "test://template/1/data"}),
    "get a prompt by name": ("prompts/get", {"name": "test_prompt_with_arguments", "arguments": {"arg1": "a"}}),
    "complete a hidden prompt": (
        "completion/complete",
        {
            "ref": {"type": "ref/prompt", "name": "test_prompt_with_arguments"},
            "argument": {"name": "arg1", "value": ""},
        },
    ),
    "complete a hidden template": (
        "completion/complete",
        {"ref": {"type": "ref/resource", "uri": "test://template/{id}/data"}, "argument": {"name": "id", "value": ""}},
    ),
    "subscribe to a hidden resource": ("resources/subscribe", {"uri": "test://watched-resource"}),
    "listen to a hidden resource": (
        "subscriptions/listen",
        {"notifications": {"resourceSubscriptions": ["test://watched-resource"]}},
    ),
    "escape the uri name": ("resources/read", {"uri": "test://static\u002dtext"}),
}


@pytest.mark.parametrize("era", ["2025-11-25", "2026-07-28"])
@pytest.mark.parametrize("attack", sorted(ATTACKS))
async def test_a_principal_cannot_reach_what_it_may_not_use(
    secured_gateway: RunningGateway, attack: str, era: str
) -> None:
    method, params = ATTACKS[attack]
    if era == "2025-11-25" and method == "subscriptions/listen":
        pytest.skip("subscriptions/listen is a 2026-07-28 method")
    if era == "2026-07-28" and method == "resources/subscribe":
        pytest.skip("2026-07-28 removed resources/subscribe (the SDK answers 404)")
    headers = {
        "X-API-Key": API_KEY,
        "Accept": "application/json, text/event-stream",
        "Content-Type": "application/json",
        "Mcp-Protocol-Version": era,
        "Mcp-Method": method,
    }
    meta = {
        "io.modelcontextprotocol/protocolVersion": era,
        "io.modelcontextprotocol/clientCapabilities": {},
    }
    body = {"jsonrpc": "2.0", "id": 1, "method": method, "params": {**params, "_meta": meta}}
    async with httpx2.AsyncClient() as http:
        answer = await http.post(secured_gateway.url, json=body, headers=headers)
    # Refused by the front door before any session, handler or worker: 403, whatever exists.
    assert answer.status_code == 403, answer.text
    assert "not allowed to use" in answer.json()["error_description"]


@pytest.mark.parametrize("mode", MODES)
async def test_the_same_requests_pass_for_a_principal_granted_the_component(
    secured_gateway: RunningGateway, issuer: Issuer, mode: str
) -> None:
    # The control of the attacks above: the front door lets a granted principal through.
    async with client(secured_gateway.url, issuer.token(scope="mcp:tools team:test"), mode=mode) as mcp:
        assert (await mcp.read_resource("test://static-text")).contents
        assert (await mcp.read_resource("test://template/1/data")).contents
        assert (await mcp.get_prompt("test_prompt_with_arguments", {"arg1": "a", "arg2": "b"})).messages
        ref = types.PromptReference(type="ref/prompt", name="test_prompt_with_arguments")
        assert (await mcp.complete(ref, {"name": "arg1", "value": "p"})).completion.values
        # Under a policy a URI nobody serves is refused like a forbidden one (403): a refusal
        # never tells which URIs exist (without a policy it is -32602 with data.uri).
        with pytest.raises(MCPError):
            await mcp.read_resource("test://nowhere")


@pytest.mark.parametrize("era", ["2025-11-25", "2026-07-28"])
async def test_a_request_that_does_not_name_its_resource_with_a_string_is_refused(
    secured_gateway: RunningGateway, era: str
) -> None:
    headers = {
        "X-API-Key": API_KEY,
        "Accept": "application/json, text/event-stream",
        "Content-Type": "application/json",
        "Mcp-Protocol-Version": era,
    }
    body = {"jsonrpc": "2.0", "id": 1, "method": "resources/read", "params": {"uri": ["test://static-text"]}}
    async with httpx2.AsyncClient() as http:
        answer = await http.post(secured_gateway.url, json=body, headers=headers)
    assert answer.status_code == 400
    assert answer.json()["error"]["code"] == INVALID_PARAMS


async def test_reads_count_against_the_principal_s_rate_limit(
    served: None, nats_server: EmbeddedNatsServer, subjects: Subjects
) -> None:
    from schemas.config import load_settings
    from tests.conftest import steady_rate_window
    from tests.gateway.responders import running_gateway

    limits = {"per_principal": {"requests": 2, "per_s": 60}}
    settings = load_settings(None, nats={"url": nats_server.url, "prefix": subjects.prefix}, rate_limits=limits)
    await steady_rate_window(60)
    async with running_gateway(settings) as gateway:
        await surfaces_ready(gateway)
        headers = {
            "Accept": "application/json, text/event-stream",
            "Content-Type": "application/json",
            "Mcp-Protocol-Version": "2026-07-28",
            "Mcp-Method": "resources/read",
            "Mcp-Name": "test://static-text",
        }
        meta = {
            "io.modelcontextprotocol/protocolVersion": "2026-07-28",
            "io.modelcontextprotocol/clientCapabilities": {},
        }
        body = {
            "jsonrpc": "2.0",
            "id": 1,
            "method": "resources/read",
            "params": {"uri": "test://static-text", "_meta": meta},
        }
        async with httpx2.AsyncClient() as http:
            statuses = [(await http.post(gateway.url, json=body, headers=headers)).status_code for _ in range(3)]
    assert statuses == [200, 200, 429]


async def test_an_update_claimed_by_another_component_is_not_relayed(
    gateway: RunningGateway, nc: NatsClient, subjects: Subjects
) -> None:
    from schemas.codec import encode
    from schemas.wire import ResourceUpdated

    async with Client(gateway.url, mode="auto") as mcp:
        async with mcp.listen(resource_subscriptions=["test://watched-resource"]) as subscription:
            # Raw NATS, as a worker of another component could publish it: ignored.
            forged = ResourceUpdated(uri="test://watched-resource", component="kit")
            await nc.publish(subjects.resource_updated, encode(forged))
            await nc.publish(subjects.resource_updated, b"not json")
            await nc.flush()
            await asyncio.sleep(0.3)
            genuine = ResourceUpdated(uri="test://watched-resource", component="test")
            await nc.publish(subjects.resource_updated, encode(genuine))
            heard = []
            async with asyncio.timeout(5):
                async for event in subscription:
                    heard.append(event)
                    break
            await asyncio.sleep(0.3)
    assert len(heard) == 1


async def test_a_2026_listen_naming_more_uris_than_a_2025_session_may_subscribe_is_refused(
    gateway: RunningGateway,
) -> None:
    # Attack: 2025 sessions hold at most MAX_RESOURCE_SUBSCRIPTIONS URIs; a 2026 listen named
    # any number (a 4 MiB body: ~160 000 URIs through a template, each judged by policy, then
    # held as Python strings as long as the stream stays open — 64 streams per principal).
    uris = [f"test://template/{i}/data" for i in range(MAX_RESOURCE_SUBSCRIPTIONS + 1)]
    era = "2026-07-28"
    headers = {
        "Accept": "application/json, text/event-stream",
        "Content-Type": "application/json",
        "Mcp-Protocol-Version": era,
        "Mcp-Method": "subscriptions/listen",
    }
    meta = {"io.modelcontextprotocol/protocolVersion": era, "io.modelcontextprotocol/clientCapabilities": {}}
    params = {"notifications": {"resourceSubscriptions": uris}, "_meta": meta}
    body = {"jsonrpc": "2.0", "id": 1, "method": "subscriptions/listen", "params": params}
    async with (
        httpx2.AsyncClient(timeout=10) as http,
        http.stream("POST", gateway.url, json=body, headers=headers) as answer,
    ):
        assert answer.status_code == 400, answer.headers
        assert "at most" in (await answer.aread()).decode()
    async with Client(gateway.url, mode="auto") as mcp:  # the limit itself is fine
        async with mcp.listen(resource_subscriptions=uris[:MAX_RESOURCE_SUBSCRIPTIONS]):
            pass


ODD_READS = {
    "non-finite number": b'"uri": "test://static-text", "x": 1e400',
    "NaN": b'"uri": "test://static-text", "x": NaN',
    "uri not a string": b'"uri": ["test://static-text"]',
}
"""``resources/read`` params the one parse of the front door must refuse, before any policy,
handler or worker sees them (docs/security.md, "The gateway request pipeline")."""


@pytest.mark.parametrize("era", [LEGACY, MODERN])
@pytest.mark.parametrize("label", list(ODD_READS))
async def test_a_resource_read_that_cannot_be_judged_is_refused_in_both_eras(
    gateway: RunningGateway, era: str, label: str
) -> None:
    raw = RawMcp(gateway.url, era)
    meta = b', "_meta": ' + json.dumps(MODERN_META).encode() if raw.modern else b""
    body = b'{"jsonrpc": "2.0", "id": 7, "method": "resources/read", "params": {' + ODD_READS[label] + meta + b"}}"
    answer = await raw.post(body, method="resources/read", tool="test://static-text")
    assert answer.status_code >= 400 or jsonrpc_error(answer) is not None, (label, answer.text)
    assert "contents" not in answer.text, (label, answer.text)  # nothing was read


@pytest.mark.parametrize("era", [LEGACY, MODERN])
async def test_a_resource_read_with_two_uris_is_judged_and_served_as_the_same_one(
    gateway: RunningGateway, era: str
) -> None:
    # The front door keeps the last of duplicate keys and hands the SDK its own re-encoding, so the
    # URI policy judges is the URI read: never one for the check and the other for the handler.
    raw = RawMcp(gateway.url, era)
    meta = b', "_meta": ' + json.dumps(MODERN_META).encode() if raw.modern else b""
    params = b'"uri": "test://static-text", "uri": "test://static-binary"' + meta
    body = b'{"jsonrpc": "2.0", "id": 7, "method": "resources/read", "params": {' + params + b"}}"
    answer = await raw.post(body, method="resources/read", tool="test://static-binary")
    assert "test://static-binary" in answer.text and "test://static-text" not in answer.text, answer.text
