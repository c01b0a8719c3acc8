"""Attacks on the hot path's memory of header values that passed the SDK's transport checks.

``gateway.hotpath`` runs the SDK's transport checks (content type, DNS-rebinding Host and Origin,
Accept) once per distinct (Content-Type, Host, Origin, Accept) values and remembers those that
passed. An attacker picks header values to reuse a verdict made for other values (another
request, another era, another session), or varies them to grow the gateway's memory. Every test
is against a real gateway (uvicorn, the SDK's session manager) over real HTTP.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Any

import httpx2
import pytest
from nats.js.kv import KeyValue

from gateway.hotpath import HotPath
from tests.gateway.auth_kit import API_KEY, POLICY
from tests.gateway.odd_json import ODD_BODIES
from tests.gateway.raw_mcp import ERAS, RawMcp
from tests.gateway.responders import ADD, RunningGateway, TaskSystem, put_tools, spying
from tests.gateway.test_gateway_http import ACCEPT, MODERN_META, initialize, modern_headers

StartGateway = Callable[..., Awaitable[RunningGateway]]
LIST = {"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {"_meta": MODERN_META}}
LEGACY_LIST = {"jsonrpc": "2.0", "id": 2, "method": "tools/list", "params": {}}
GOOD_ORIGIN = "http://localhost:6274"
EVIL_ORIGIN = "http://evil.example"


@pytest.fixture
async def gateway(start_gateway: StartGateway, kv: KeyValue) -> RunningGateway:
    await put_tools(kv, ADD)
    return await start_gateway()


async def raw_post(gateway: RunningGateway, headers: list[tuple[str, str]]) -> int:
    """POST ``LIST`` with exactly these header lines; the response's status."""
    body = json.dumps(LIST).encode()
    lines = [f"POST {gateway.settings.gateway.path} HTTP/1.1", *(f"{k}: {v}" for k, v in headers)]
    lines += ["Content-Type: application/json", f"Content-Length: {len(body)}", "Connection: close"]
    reader, writer = await asyncio.open_connection("127.0.0.1", gateway.port)
    try:
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode() + body)
        status_line = await reader.readline()
    finally:
        writer.close()
    return int(status_line.split()[1])


def remembered_bytes(path: HotPath) -> int:
    return sum(len(v or "") for values in path._transport_passed for v in values)


async def test_a_remembered_content_type_lets_no_other_pass(gateway: RunningGateway) -> None:
    async with httpx2.AsyncClient() as http:
        good = {**modern_headers("tools/list"), "Content-Type": "application/json"}
        for _ in range(2):
            assert (await http.post(gateway.url, headers=good, json=LIST)).status_code == 200
        for content_type in ("text/plain", "application/jsonx-but-not", "multipart/form-data"):
            bad = {**good, "Content-Type": content_type}
            response = await http.post(gateway.url, headers=bad, json=LIST)
            if content_type.startswith("application/json"):
                continue  # the SDK's own check is a prefix match: the same verdict either way
            assert response.status_code in (400, 415), (content_type, response.text)


async def test_a_remembered_host_lets_no_other_pass(gateway: RunningGateway) -> None:
    async with httpx2.AsyncClient() as http:
        good = modern_headers("tools/list")
        for _ in range(2):
            assert (await http.post(gateway.url, headers=good, json=LIST)).status_code == 200
        for host in ("evil.example", "127.0.0.1.evil.example", "localhost.evil.example:80"):
            response = await http.post(gateway.url, headers={**good, "Host": host}, json=LIST)
            assert response.status_code == 421, (host, response.status_code)
    # Two Host lines (an HTTP client refuses to send them: raw bytes), the first foreign, the
    # second the remembered one: refused, whichever the server reads.
    status = await raw_post(gateway, [("Host", "evil.example"), ("Host", f"127.0.0.1:{gateway.port}"), *good.items()])
    assert status in (400, 421), status


async def test_a_repeated_origin_in_another_case_is_checked_as_the_sdk_reads_it(gateway: RunningGateway) -> None:
    good = {**modern_headers("tools/list"), "Origin": GOOD_ORIGIN}
    async with httpx2.AsyncClient() as http:
        for _ in range(2):
            assert (await http.post(gateway.url, headers=good, json=LIST)).status_code == 200
        # The remembered Origin last, a foreign one first under another spelling of the name.
        repeated = [*((k, v) for k, v in good.items() if k != "Origin")]
        repeated += [("oRiGiN", EVIL_ORIGIN), ("Origin", GOOD_ORIGIN)]
        assert (await http.post(gateway.url, headers=repeated, json=LIST)).status_code == 403


async def test_a_verdict_remembered_in_one_era_passes_nothing_in_the_other(gateway: RunningGateway) -> None:
    async with httpx2.AsyncClient() as http:
        session_id = await initialize(http, gateway.url)
        legacy = {"Accept": ACCEPT, "Mcp-Session-Id": session_id, "MCP-Protocol-Version": "2025-11-25"}
        modern = {**modern_headers("tools/list"), "Origin": GOOD_ORIGIN}
        # Remembered from the modern era, then tried with a foreign Origin in the 2025 era.
        assert (await http.post(gateway.url, headers=modern, json=LIST)).status_code == 200
        foreign = {**legacy, "Origin": EVIL_ORIGIN}
        assert (await http.post(gateway.url, headers=foreign, json=LEGACY_LIST)).status_code == 403
        # Remembered from the 2025 era (with its session), then sent without a session: the SDK
        # answers, as it would have, and a made-up session is not served either.
        assert (await http.post(gateway.url, headers=legacy, json=LEGACY_LIST)).status_code == 200
        no_session = {k: v for k, v in legacy.items() if k != "Mcp-Session-Id"}
        assert (await http.post(gateway.url, headers=no_session, json=LEGACY_LIST)).status_code == 400
        made_up = {**legacy, "Mcp-Session-Id": "f" * 32}
        assert (await http.post(gateway.url, headers=made_up, json=LEGACY_LIST)).status_code == 404
        # And a 2025 request with the remembered values but without the SSE type in Accept is
        # refused as the SDK refuses it (406), in both eras.
        json_only = {**legacy, "Accept": "application/json"}
        assert (await http.post(gateway.url, headers=json_only, json=LEGACY_LIST)).status_code == 406
        json_only = {**modern, "Accept": "application/json"}
        assert (await http.post(gateway.url, headers=json_only, json=LIST)).status_code == 406


async def test_varied_accept_values_keep_the_memory_bounded(gateway: RunningGateway) -> None:
    path = gateway.hot
    async with httpx2.AsyncClient() as http:
        for i in range(1100):
            headers = modern_headers("tools/list", Accept=f"{ACCEPT}, x/y{i}")
            assert (await http.post(gateway.url, headers=headers, json=LIST)).status_code == 200
            assert len(path._transport_passed) <= 1024
        # Emptied once full: what passed before is checked afresh, and still passes.
        assert (await http.post(gateway.url, headers=modern_headers("tools/list"), json=LIST)).status_code == 200


async def test_huge_header_values_are_not_remembered(gateway: RunningGateway) -> None:
    """Each remembered entry is as large as the client made its headers (up to ``max_header_bytes``,
    64 KiB): 1024 of them would pin ~64 MiB of a client's choosing. Values that long are checked
    afresh instead (no real client sends them), so what is remembered stays small."""
    path = gateway.hot
    async with httpx2.AsyncClient() as http:
        for i in range(8):
            accept = f"{ACCEPT}, x/{i}{'y' * 60_000}"
            response = await http.post(gateway.url, headers=modern_headers("tools/list", Accept=accept), json=LIST)
            assert response.status_code == 200
    assert remembered_bytes(path) < 8 * 1024


@pytest.mark.parametrize("era", ERAS)
async def test_a_verdict_remembered_for_one_principal_passes_no_credential_and_no_policy(
    secured: Any, task_system: TaskSystem, era: str
) -> None:
    """The remembered verdicts are transport checks only: who calls, and what it may call, are
    judged afresh for every request. Primed by the API key's allowed call, the same transport
    headers with no credential, a wrong key, or the key calling a tool its policy forbids (also
    with odd JSON naming it) reach no worker."""
    gateway = await secured(gateway={"hot_path": True}, policy=POLICY)
    owner = RawMcp(gateway.url, era, API_KEY)
    async with spying(task_system, "kit_add") as added, spying(task_system, "kit_greet") as greeted:
        assert (await owner.call("kit_greet", {"name": "x"})).status_code == 200  # remembered now
        assert gateway.hot._transport_passed, "the allowed call left no verdict to reuse"
        primed = await owner.headers("tools/call", "kit_greet")
        body = owner.call_body("kit_greet", {"name": "y"})
        async with httpx2.AsyncClient(timeout=30) as http:
            for credential in (None, "Bearer tbk_not_a_key_0000000000000000000000", f"Basic {API_KEY}"):
                headers = {k: v for k, v in primed.items() if k != "Authorization"}
                if credential is not None:
                    headers["Authorization"] = credential
                response = await http.post(gateway.url, content=body, headers=headers)
                assert response.status_code == 401, (credential, response.status_code)
        odd = ODD_BODIES["duplicate name, forbidden first"].replace(b"kit_divide", b"kit_add")
        for forbidden in (owner.call_body("kit_add", {"a": 1, "b": 2}), odd):
            response = await owner.post(forbidden, tool="kit_add")
            assert response.status_code != 500 and "Traceback" not in response.text
    assert added == [], [m.subject for m in added]
    assert len(greeted) == 1  # the owner's one allowed call, nothing from the others
