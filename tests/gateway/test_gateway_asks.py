"""Guests that ask, through real gateways: a registry, a worker running the conformance guest, and
two gateways sharing one principal key, as a deployment behind a load balancer.

- 2025-11-25: the mcp SDK's ``Client`` answers the guest's elicitation, sampling and roots
  requests on the call's stream, and the guest's result carries the answers;
- 2026-07-28: the first round ends ``input_required`` on gateway A, and the retry sent to gateway B
  resumes the very same guest (raw HTTP: the SDK client cannot switch URLs mid-call); the SDK's
  own client does the rounds by itself;
- attacks, each failing closed: a tampered, expired or other principal's ``requestState`` is
  refused with -32602 and never reaches the worker; a retry whose worker is gone says to call again;
- the hot path never serves a tool whose guest may ask.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx2
import mcp_types as types
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError
from nats.aio.client import Client as NatsClient

from bus.connection import connect
from bus.embedded import EmbeddedNatsServer
from bus.principal import PrincipalSigner
from bus.subjects import Subjects
from gateway import askers
from gateway.askers import request_state_security
from registry.service import RegistryService
from schemas.config import ComponentSettings, RegistrySettings, WorkerSettings, load_settings
from tests.conftest import eventually
from tests.gateway.auth_kit import API_KEY, PRINCIPAL_KEY, Issuer, auth_settings
from tests.gateway.raw_mcp import MODERN, MODERN_META, RawMcp, jsonrpc_error
from tests.gateway.responders import RunningGateway, running_gateway
from workers.sandbox.component import LoadedComponent
from workers.sandbox.engine import EngineHost
from workers.service import WorkerService
from workers.toolchains.componentize import build_component

INVALID_PARAMS = -32602
EXAMPLES_DIR = Path(__file__).resolve().parents[2] / "examples"


@pytest.fixture(scope="module")
def conformance(engine_host: EngineHost, cache_dir: Path) -> LoadedComponent:
    """The conformance guest (its tools ask), built with componentize-py."""
    wasm = build_component(EXAMPLES_DIR / "conformance", "test", cache_dir)
    return LoadedComponent.load(engine_host, ComponentSettings(name="test", path=wasm), wasm, cache_dir)


@dataclass
class Deployment:
    a: RunningGateway
    b: RunningGateway
    worker: WorkerService
    issuer: Issuer


@pytest.fixture
async def deployment(
    nats_server: EmbeddedNatsServer, nc: NatsClient, subjects: Subjects, conformance: LoadedComponent, issuer: Issuer
) -> AsyncIterator[Deployment]:
    registry = RegistryService(nc, subjects, RegistrySettings(), announce_interval_s=0.5)
    await registry.start()
    worker_nc = await connect(nats_server.url, name="asking-worker")
    worker = WorkerService(
        worker_nc,
        subjects,
        WorkerSettings(concurrency=2),
        [conformance],
        principal_signer=PrincipalSigner(PRINCIPAL_KEY),
    )
    await worker.start()
    settings = load_settings(
        None,
        nats={"url": nats_server.url, "prefix": subjects.prefix, "principal_key": PRINCIPAL_KEY},
        auth=auth_settings(issuer),
    )
    async with running_gateway(settings) as a, running_gateway(settings) as b:
        # Every tool of the component, on both gateways: the registry offers them one by one, and a
        # test calling one not mirrored yet would meet "unknown tool" (seen: one run in four).
        names = [tool.name for tool in conformance.tools]
        for gateway in (a, b):
            assert gateway.state.front_door is not None
            catalogue, surfaces = gateway.state.catalogue, gateway.state.front_door.surfaces
            await eventually(lambda catalogue=catalogue: all(catalogue.get(name) is not None for name in names))
            await eventually(lambda surfaces=surfaces: surfaces.prompt(PROMPT) is not None)
        yield Deployment(a, b, worker, issuer)
    await worker.stop(grace_s=1)
    await worker_nc.close()
    await registry.stop()


def result_of(response: httpx2.Response) -> dict[str, Any]:
    text = response.text
    if response.headers.get("content-type", "").startswith("text/event-stream"):
        text = [line[5:] for line in text.splitlines() if line.startswith("data:")][-1]
    message = json.loads(text)
    assert "result" in message, message
    result: dict[str, Any] = message["result"]
    return result


def text_of(result: dict[str, Any]) -> str:
    assert result.get("resultType", "complete") == "complete", result
    return str(result["content"][0]["text"])


ALL_CAPABILITIES = {"elicitation": {}, "sampling": {}, "roots": {}}


def modern(gateway: RunningGateway, credential: str) -> RawMcp:
    return RawMcp(gateway.url, MODERN, credential)


async def first_round(raw: RawMcp, tool: str, capabilities: dict[str, Any] | None = None) -> dict[str, Any]:
    meta = {"io.modelcontextprotocol/clientCapabilities": ALL_CAPABILITIES if capabilities is None else capabilities}
    result = result_of(await raw.call(tool, {}, _meta=meta))
    assert result["resultType"] == "input_required", result
    return result


async def retry(raw: RawMcp, tool: str, state: str, responses: dict[str, Any]) -> httpx2.Response:
    meta = {"io.modelcontextprotocol/clientCapabilities": ALL_CAPABILITIES}
    return await raw.call(tool, {}, requestState=state, inputResponses=responses, _meta=meta)


NAME = {"user_name": {"action": "accept", "content": {"name": "Ada"}}}


# -- 2025-11-25: on the call's stream ----------------------------------------------------------------


async def test_2025_the_sdk_client_answers_the_guest_on_the_calls_stream(deployment: Deployment) -> None:
    asked: list[str] = []

    async def elicit(_ctx: Any, params: types.ElicitRequestParams) -> types.ElicitResult:
        asked.append(params.message)
        return types.ElicitResult(action="accept", content={"response": "from the user"})

    async def sample(_ctx: Any, params: types.CreateMessageRequestParams) -> types.CreateMessageResult:
        prompt = params.messages[0].content
        asked.append(prompt.text if isinstance(prompt, types.TextContent) else "?")
        return types.CreateMessageResult(
            role="assistant", content=types.TextContent(type="text", text="Paris"), model="m", stop_reason="endTurn"
        )

    async def roots(_ctx: Any) -> types.ListRootsResult:
        return types.ListRootsResult(roots=[types.Root(uri="file:///a"), types.Root(uri="file:///b")])  # type: ignore[arg-type]

    headers = {"Authorization": f"Bearer {deployment.issuer.token()}"}
    async with httpx2.AsyncClient(headers=headers, timeout=30) as http:
        transport = streamable_http_client(deployment.a.url, http_client=http)
        async with Client(  # type: ignore[call-arg]
            transport, mode="legacy", elicitation_callback=elicit, sampling_callback=sample, list_roots_callback=roots
        ) as client:
            elicited = await client.call_tool("test_elicitation", {"message": "Your name?"})
            sampled = await client.call_tool("test_sampling", {"prompt": "Capital of France?"})
            listed = await client.call_tool("test_input_required_result_list_roots", {})
    assert asked == ["Your name?", "Capital of France?"]
    assert elicited.content[0].text == 'User response: action=accept, content={"response": "from the user"}'  # type: ignore[union-attr]
    assert sampled.content[0].text == "LLM response: Paris"  # type: ignore[union-attr]
    assert listed.content[0].text == "Found 2 root(s)"  # type: ignore[union-attr]


async def test_2025_a_client_without_the_capability_is_never_asked(deployment: Deployment) -> None:
    headers = {"Authorization": f"Bearer {deployment.issuer.token()}"}
    async with httpx2.AsyncClient(headers=headers, timeout=30) as http:
        async with Client(streamable_http_client(deployment.a.url, http_client=http), mode="legacy") as client:  # type: ignore[call-arg]
            result = await client.call_tool("test_sampling", {"prompt": "?"})
    assert result.content[0].text == "Sampling not supported or error: unsupported: sampling"  # type: ignore[union-attr]


# -- 2026-07-28: input_required rounds -------------------------------------------------------------


async def test_2026_a_retry_sent_to_another_gateway_resumes_the_same_guest(deployment: Deployment) -> None:
    token = deployment.issuer.token()
    tool = "test_input_required_result_multi_round"
    r1 = await first_round(modern(deployment.a, token), tool)
    assert list(r1["inputRequests"]) == ["step1"]
    step1 = {"step1": {"action": "accept", "content": {"name": "Ada"}}}
    r2 = result_of(await retry(modern(deployment.b, token), tool, r1["requestState"], step1))
    assert r2["resultType"] == "input_required" and list(r2["inputRequests"]) == ["step2"]
    step2 = {"step2": {"action": "accept", "content": {"color": "teal"}}}
    done = result_of(await retry(modern(deployment.a, token), tool, r2["requestState"], step2))
    # The name came in round 1, to the guest that answered round 3: one guest, three rounds, two gateways.
    assert text_of(done) == "Multi-round complete for Ada who likes teal"


async def test_2026_the_sdk_client_does_the_rounds_itself(deployment: Deployment) -> None:
    async def elicit(_ctx: Any, params: types.ElicitRequestParams) -> types.ElicitResult:
        return types.ElicitResult(action="accept", content={"name": "Grace"})

    headers = {"Authorization": f"Bearer {deployment.issuer.token()}"}
    async with httpx2.AsyncClient(headers=headers, timeout=30) as http:
        transport = streamable_http_client(deployment.b.url, http_client=http)
        async with Client(transport, elicitation_callback=elicit) as client:  # type: ignore[call-arg]
            result = await client.call_tool("test_input_required_result_elicitation", {})
    assert result.content[0].text == "Hello, Grace!"  # type: ignore[union-attr]


async def test_2026_only_declared_capabilities_are_asked(deployment: Deployment) -> None:
    raw = modern(deployment.a, deployment.issuer.token())
    r1 = await first_round(raw, "test_input_required_result_capabilities", {"sampling": {}})
    assert [r["method"] for r in r1["inputRequests"].values()] == ["sampling/createMessage"]


async def test_2026_a_missing_answer_is_asked_again(deployment: Deployment) -> None:
    raw = modern(deployment.a, deployment.issuer.token())
    tool = "test_input_required_result_elicitation"
    r1 = await first_round(raw, tool)
    again = result_of(await retry(raw, tool, r1["requestState"], {"wrong_key": {"action": "decline"}}))
    assert again["resultType"] == "input_required" and list(again["inputRequests"]) == ["user_name"]
    done = result_of(await retry(raw, tool, again["requestState"], NAME))
    assert text_of(done) == "Hello, Ada!"


# -- attacks -----------------------------------------------------------------------------------


async def test_a_tampered_state_is_refused_and_the_guest_still_waits_for_its_owner(deployment: Deployment) -> None:
    raw = modern(deployment.a, deployment.issuer.token())
    tool = "test_input_required_result_elicitation"
    state = (await first_round(raw, tool))["requestState"]
    flipped = state[:-2] + ("A" if state[-2] != "A" else "B") + state[-1]
    for forged in (state + "-TAMPERED", flipped, "v1.", json.dumps({"w": "x", "s": "y", "r": "z", "q": {}})):
        assert jsonrpc_error(await retry(raw, tool, forged, NAME)) == INVALID_PARAMS
    assert text_of(result_of(await retry(raw, tool, state, NAME))) == "Hello, Ada!"


async def test_another_principals_state_is_refused(deployment: Deployment) -> None:
    tool = "test_input_required_result_elicitation"
    alice = modern(deployment.a, deployment.issuer.token(sub="alice"))
    state = (await first_round(alice, tool))["requestState"]
    for intruder in (deployment.issuer.token(sub="mallory"), API_KEY):
        response = await retry(modern(deployment.b, intruder), tool, state, NAME)
        assert jsonrpc_error(response) == INVALID_PARAMS
    assert text_of(result_of(await retry(alice, tool, state, NAME))) == "Hello, Ada!"


async def test_a_state_for_other_arguments_or_another_tool_is_refused(deployment: Deployment) -> None:
    raw = modern(deployment.a, deployment.issuer.token())
    state = (await first_round(raw, "test_input_required_result_elicitation"))["requestState"]
    other_tool = await retry(raw, "test_input_required_result_request_state", state, NAME)
    assert jsonrpc_error(other_tool) == INVALID_PARAMS
    meta = {"io.modelcontextprotocol/clientCapabilities": ALL_CAPABILITIES}
    other_args = await raw.call(
        "test_elicitation", {"message": "x"}, requestState=state, inputResponses=NAME, _meta=meta
    )
    assert jsonrpc_error(other_args) == INVALID_PARAMS


async def test_an_expired_state_is_refused(deployment: Deployment) -> None:
    raw = modern(deployment.a, deployment.issuer.token())
    tool = "test_input_required_result_elicitation"
    state = (await first_round(raw, tool))["requestState"]
    # Re-minted with the deployment's own key (as if the gateway had sealed it long ago).
    codec = request_state_security(PRINCIPAL_KEY).codec
    claims = json.loads(codec.unseal(state))
    claims["iat"], claims["exp"] = claims["iat"] - 3600, claims["iat"] - 1
    expired = codec.seal(json.dumps(claims).encode())
    assert jsonrpc_error(await retry(raw, tool, expired, NAME)) == INVALID_PARAMS
    # The same claims, still valid, pass: only the expiry was refused.
    claims["exp"] = claims["iat"] + 7200
    assert text_of(result_of(await retry(raw, tool, codec.seal(json.dumps(claims).encode()), NAME))) == "Hello, Ada!"


async def test_a_state_sealed_under_another_key_is_refused(deployment: Deployment) -> None:
    raw = modern(deployment.a, deployment.issuer.token())
    tool = "test_input_required_result_elicitation"
    state = (await first_round(raw, tool))["requestState"]
    claims = json.loads(request_state_security(PRINCIPAL_KEY).codec.unseal(state))
    foreign = request_state_security("another-deployment-principal-key").codec.seal(json.dumps(claims).encode())
    assert jsonrpc_error(await retry(raw, tool, foreign, NAME)) == INVALID_PARAMS


async def test_a_retry_whose_worker_is_gone_says_to_call_again(deployment: Deployment) -> None:
    raw = modern(deployment.a, deployment.issuer.token())
    tool = "test_input_required_result_elicitation"
    state = (await first_round(raw, tool))["requestState"]
    await deployment.worker.stop(grace_s=0.2)
    response = await retry(modern(deployment.b, deployment.issuer.token()), tool, state, NAME)
    message = json.loads(response.text)["error"]["message"]
    assert "is gone" in message and "call the tool again" in message, message


# -- the hot path --------------------------------------------------------------------------------


async def test_the_hot_path_never_serves_an_asking_tool(deployment: Deployment) -> None:
    gateway = deployment.a
    raw = modern(gateway, deployment.issuer.token())
    served, handed_over = gateway.hot.served, gateway.hot.handed_over
    done = result_of(await raw.call("test_simple_text", {}))  # plain params: hot-path material, but it may ask
    assert text_of(done) == "This is a simple text response for testing."
    assert (gateway.hot.served, gateway.hot.handed_over) == (served, handed_over + 1)


async def test_2025_a_call_cancelled_while_its_client_is_asked_stops_the_guest(deployment: Deployment) -> None:
    asked = asyncio.Event()

    async def elicit(_ctx: Any, params: types.ElicitRequestParams) -> types.ElicitResult:
        asked.set()
        await asyncio.sleep(3600)  # the user never answers
        raise AssertionError("unreachable")

    headers = {"Authorization": f"Bearer {deployment.issuer.token()}"}
    async with httpx2.AsyncClient(headers=headers, timeout=30) as http:
        transport = streamable_http_client(deployment.a.url, http_client=http)
        async with Client(transport, mode="legacy", elicitation_callback=elicit) as client:  # type: ignore[call-arg]
            call = asyncio.create_task(client.call_tool("test_elicitation", {"message": "?"}))
            await asyncio.wait_for(asked.wait(), 10)
            assert deployment.worker.accepted == 1  # the guest waits on its worker
            call.cancel()  # the SDK sends notifications/cancelled
            # The gateway stops the guest at once, not after ask_timeout_s (300 s).
            await eventually(lambda: deployment.worker.accepted == 0, timeout_s=5)


async def test_2026_a_tool_requiring_an_undeclared_capability_is_refused_with_32021(deployment: Deployment) -> None:
    raw = modern(deployment.a, deployment.issuer.token())
    meta = {"io.modelcontextprotocol/clientCapabilities": {}}
    refused = await raw.call("test_missing_capability", {}, _meta=meta)
    assert refused.status_code == 400
    error = json.loads(refused.text)["error"]
    assert (error["code"], error.get("data", {}).get("requiredCapabilities")) == (-32021, {"sampling": {}}), error
    done = await raw.call(
        "test_missing_capability", {}, _meta={"io.modelcontextprotocol/clientCapabilities": {"sampling": {}}}
    )
    assert text_of(result_of(done)) == "Success"


async def test_2025_a_client_that_never_answers_does_not_hold_the_call_forever(
    deployment: Deployment, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Attack: a slow client keeps the call's stream open and never answers the guest's request.
    # The gateway waited on it without bound (no call_timeout_s applies while asking), holding the
    # connection and the call past the worker's own ask_timeout_s, whose timed-out reply no one read.
    monkeypatch.setattr(askers, "ANSWER_WAIT_S", 1.0)

    async def elicit(_ctx: Any, params: types.ElicitRequestParams) -> types.ElicitResult:
        await asyncio.sleep(3600)  # the user never answers
        raise AssertionError("unreachable")

    headers = {"Authorization": f"Bearer {deployment.issuer.token()}"}
    async with httpx2.AsyncClient(headers=headers, timeout=30) as http:
        transport = streamable_http_client(deployment.a.url, http_client=http)
        async with Client(transport, mode="legacy", elicitation_callback=elicit) as client:  # type: ignore[call-arg]
            result = await asyncio.wait_for(client.call_tool("test_elicitation", {"message": "?"}), 15)
    assert result.content[0].text.startswith("Elicitation not supported or error: failed")  # type: ignore[union-attr]
    await eventually(lambda: deployment.worker.accepted == 0, timeout_s=5)


# -- prompts that ask (re-run with the answers: workers.sandbox.replay) ------------------------------

PROMPT = "test_input_required_result_prompt"
CONTEXT = {"user_context": {"action": "accept", "content": {"context": "the moon"}}}


async def get_prompt(raw: RawMcp, **params: Any) -> httpx2.Response:
    meta = {**MODERN_META, "io.modelcontextprotocol/clientCapabilities": ALL_CAPABILITIES}
    body = {"jsonrpc": "2.0", "id": 1, "method": "prompts/get", "params": {"name": PROMPT, **params, "_meta": meta}}
    return await raw.post(json.dumps(body).encode(), method="prompts/get", tool=PROMPT)


def prompt_text(result: dict[str, Any]) -> str:
    assert result.get("resultType", "complete") == "complete", result
    return str(result["messages"][0]["content"]["text"])


async def test_2026_a_prompt_asks_and_its_retry_on_another_gateway_renders_it(deployment: Deployment) -> None:
    token = deployment.issuer.token()
    r1 = result_of(await get_prompt(modern(deployment.a, token)))
    assert r1["resultType"] == "input_required" and list(r1["inputRequests"]) == ["user_context"], r1
    assert r1["inputRequests"]["user_context"]["method"] == "elicitation/create"
    # Nothing waits anywhere: the prompt is re-run with the answer, on whichever gateway gets it.
    retried = await get_prompt(modern(deployment.b, token), requestState=r1["requestState"], inputResponses=CONTEXT)
    done = result_of(retried)
    assert prompt_text(done) == "Use this context: the moon"


async def test_2026_a_prompt_retry_missing_the_answer_is_asked_again(deployment: Deployment) -> None:
    raw = modern(deployment.a, deployment.issuer.token())
    r1 = result_of(await get_prompt(raw))
    wrong = {"user_name": {"action": "accept", "content": {"context": "x"}}}
    again = result_of(await get_prompt(raw, requestState=r1["requestState"], inputResponses=wrong))
    assert again["resultType"] == "input_required" and list(again["inputRequests"]) == ["user_context"]
    # Answers without a state are no answers: the prompt asks (nothing is taken on the client's word
    # alone, so a forged round cannot skip a question).
    unasked = result_of(await get_prompt(raw, inputResponses=CONTEXT))
    assert unasked["resultType"] == "input_required"


async def test_2026_a_prompt_state_is_no_calls_state_and_back(deployment: Deployment) -> None:
    token = deployment.issuer.token()
    raw = modern(deployment.a, token)
    call_state = (await first_round(raw, "test_input_required_result_elicitation"))["requestState"]
    assert jsonrpc_error(await get_prompt(raw, requestState=call_state, inputResponses=CONTEXT)) == INVALID_PARAMS
    prompt_state = result_of(await get_prompt(raw))["requestState"]
    refused = await retry(raw, "test_input_required_result_elicitation", prompt_state, NAME)
    assert jsonrpc_error(refused) == INVALID_PARAMS
    other = modern(deployment.b, deployment.issuer.token(sub="mallory"))
    assert jsonrpc_error(await get_prompt(other, requestState=prompt_state, inputResponses=CONTEXT)) == INVALID_PARAMS


async def test_2025_the_sdk_client_answers_a_prompts_question_on_its_stream(deployment: Deployment) -> None:
    async def elicit(_ctx: Any, params: types.ElicitRequestParams) -> types.ElicitResult:
        assert params.message == "What context should the prompt use?"
        return types.ElicitResult(action="accept", content={"context": "the sea"})

    headers = {"Authorization": f"Bearer {deployment.issuer.token()}"}
    async with httpx2.AsyncClient(headers=headers, timeout=30) as http:
        transport = streamable_http_client(deployment.a.url, http_client=http)
        async with Client(transport, mode="legacy", elicitation_callback=elicit) as client:  # type: ignore[call-arg]
            asked = await client.get_prompt(PROMPT)
        async with Client(streamable_http_client(deployment.a.url, http_client=http), mode="legacy") as client:  # type: ignore[call-arg]
            with pytest.raises(MCPError) as refused:
                await client.get_prompt(PROMPT)
    assert asked.messages[0].content.text == "Use this context: the sea"  # type: ignore[union-attr]
    # A client without elicitation is never asked; the guest hears `unsupported` and refuses (-32602).
    assert refused.value.code == INVALID_PARAMS and "Unsupported(value='elicitation')" in str(refused.value)
