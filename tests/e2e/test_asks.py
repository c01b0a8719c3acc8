"""Guests that ask, across two gateway processes: ``toolbus up`` (nats-server, registry, worker,
gateway A) serving the conformance guest, plus gateway B (``toolbus gateway``) on the same config
and principal key, as two replicas behind a load balancer.

- 2025-11-25: the mcp SDK's ``Client`` (``mode="legacy"``) answers the guest's elicitation and
  sampling requests on the call's stream;
- 2026-07-28: the ``input_required`` round is answered by gateway A, and the retry, sent to
  gateway B over raw HTTP (the SDK client cannot change URLs mid-call), resumes the same guest.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import httpx2
import mcp_types as types
import pytest
from mcp import Client

from bus.embedded import free_port
from tests.conftest import eventually
from tests.e2e.conftest import REPO, start_up, stop_up, write_config

PRINCIPAL_KEY = "e2e-asks-principal-key-of-32-chars!"
MODERN = "2026-07-28"
ALL_CAPABILITIES = {"elicitation": {}, "sampling": {}, "roots": {}}


@pytest.fixture(scope="module")
def urls(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    directory = tmp_path_factory.mktemp("asks")
    nats_port, a_port, b_port = free_port(), free_port(), free_port()
    config = write_config(
        directory,
        nats_url=f"nats://127.0.0.1:{nats_port}",
        mcp_port=a_port,
        components=("test",),
        principal_key=PRINCIPAL_KEY,
    )
    process, _ = start_up(config, log_path=directory / "up.log")
    with (directory / "gateway-b.log").open("w") as log:
        gateway_b = subprocess.Popen(
            [sys.executable, "-m", "cli.main", "gateway", "--config", str(config), "--port", str(b_port)],
            cwd=REPO,
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
    a, b = f"http://127.0.0.1:{a_port}/mcp", f"http://127.0.0.1:{b_port}/mcp"
    try:

        async def serving() -> bool:
            assert gateway_b.poll() is None, (directory / "gateway-b.log").read_text()[-3000:]
            try:
                async with Client(b, mode="auto", cache=None) as client:  # type: ignore[call-arg]
                    return "test_elicitation" in {tool.name for tool in (await client.list_tools()).tools}
            except Exception:  # not listening yet
                return False

        asyncio.run(eventually(serving, timeout_s=60, interval_s=0.2))
        yield a, b
    finally:
        gateway_b.send_signal(signal.SIGTERM)
        gateway_b.wait(20)
        assert stop_up(process) == 0, (directory / "up.log").read_text()[-3000:]


async def test_2025_the_sdk_client_answers_the_guest(urls: tuple[str, str]) -> None:
    async def elicit(_ctx: Any, params: types.ElicitRequestParams) -> types.ElicitResult:
        return types.ElicitResult(action="accept", content={"response": params.message.upper()})

    async def sample(_ctx: Any, params: types.CreateMessageRequestParams) -> types.CreateMessageResult:
        return types.CreateMessageResult(
            role="assistant", content=types.TextContent(type="text", text="Paris"), model="m", stop_reason="endTurn"
        )

    async with Client(urls[0], mode="legacy", elicitation_callback=elicit, sampling_callback=sample) as client:  # type: ignore[call-arg]
        elicited = await client.call_tool("test_elicitation", {"message": "hi"})
        sampled = await client.call_tool("test_sampling", {"prompt": "Capital of France?"})
    assert elicited.content[0].text == 'User response: action=accept, content={"response": "HI"}'  # type: ignore[union-attr]
    assert sampled.content[0].text == "LLM response: Paris"  # type: ignore[union-attr]


async def call(url: str, **params: Any) -> dict[str, Any]:
    meta = {
        "io.modelcontextprotocol/protocolVersion": MODERN,
        "io.modelcontextprotocol/clientCapabilities": ALL_CAPABILITIES,
    }
    body = {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {**params, "_meta": meta}}
    headers = {
        "Accept": "application/json, text/event-stream",
        "Mcp-Protocol-Version": MODERN,
        "Mcp-Method": "tools/call",
        "Mcp-Name": params["name"],
    }
    async with httpx2.AsyncClient(timeout=30) as http:
        response = await http.post(url, json=body, headers=headers)
    text = response.text
    if response.headers.get("content-type", "").startswith("text/event-stream"):
        text = [line[5:] for line in text.splitlines() if line.startswith("data:")][-1]
    message: dict[str, Any] = json.loads(text)
    assert "result" in message, message
    return message["result"]  # type: ignore[no-any-return]


async def test_2026_the_retry_on_gateway_b_resumes_the_guest_gateway_a_suspended(urls: tuple[str, str]) -> None:
    a, b = urls
    tool = "test_input_required_result_multi_round"
    r1 = await call(a, name=tool, arguments={})
    assert r1["resultType"] == "input_required" and list(r1["inputRequests"]) == ["step1"]
    step1 = {"step1": {"action": "accept", "content": {"name": "Ada"}}}
    r2 = await call(b, name=tool, arguments={}, requestState=r1["requestState"], inputResponses=step1)
    assert r2["resultType"] == "input_required" and list(r2["inputRequests"]) == ["step2"]
    step2 = {"step2": {"action": "accept", "content": {"color": "teal"}}}
    done = await call(a, name=tool, arguments={}, requestState=r2["requestState"], inputResponses=step2)
    assert done["content"][0]["text"] == "Multi-round complete for Ada who likes teal"
