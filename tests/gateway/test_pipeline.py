"""Issue 13's holes, each reproduced through a real deployment and shown to fail closed, in both eras.

Real parts: nats-server with JetStream, the registry, a worker serving the testkit component,
gateways over HTTP (uvicorn) with authentication, a policy and rate limits, raw HTTP for the
exact bytes an attacker sends (tests/gateway/raw_mcp.py) and the mcp SDK's client where a real
client's view is the point. The principals: the API key ``key:ci-bot`` (kit_greet only, no tasks),
the token ``dave`` (no tools, no tasks), ``alice`` with ``kit:math`` (kit_add, kit_divide).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import time
from typing import Any

import httpx2
import jwt
import pytest
from mcp.shared.exceptions import MCPError
from nats.js.kv import KeyValue

from gateway.inbound import TASKS_EXTENSION
from schemas.wire import CallToolResult, TextContent, ToolDescriptor
from tests.conftest import eventually
from tests.gateway.auth_kit import API_KEY, POLICY, Issuer, client
from tests.gateway.odd_json import ODD_BODIES
from tests.gateway.raw_mcp import ERAS, LEGACY, MODERN, RawMcp, jsonrpc_error, open_session
from tests.gateway.responders import TaskSystem, put_tools, refusals_told, result_reply, spying

TASKS_META = {"io.modelcontextprotocol/clientCapabilities": {"extensions": {TASKS_EXTENSION: {}}}}


async def tasks_of(task_system: TaskSystem, principal: str) -> list[str]:
    """Ids of the tasks ``principal`` owns (the task store's own listing)."""
    records, _ = await task_system.store.list(principal=principal)
    return [record.task_id for record in records]


# -- 1. a number the SDK reads and the old front door could not: never unjudged ----------------------


@pytest.mark.parametrize("era", ERAS)
@pytest.mark.parametrize("number", ["1e400", "NaN", "Infinity", "-1e400"])
async def test_a_non_finite_number_is_a_parse_error_not_a_way_around_policy(
    secured: Any, task_system: TaskSystem, era: str, number: str
) -> None:
    gateway = await secured(policy=POLICY, rate_limits={"per_tool": {"requests": 1, "per_s": 600}})
    raw = RawMcp(gateway.url, era, API_KEY)
    trick = {"_meta": {"x": "TRICK"}}
    async with spying(task_system, "kit_divide") as forbidden, spying(task_system, "kit_greet") as allowed:
        for params in (trick, {**trick, "task": {"ttl": 1000}}):
            body = raw.call_body("kit_divide", {"a": 1, "b": 2}, **params).replace(b'"TRICK"', number.encode())
            response = await raw.post(body, tool="kit_divide")
            assert response.status_code == 400 and jsonrpc_error(response) == -32700, response.text
        # Past a limit of one call: the tricked calls are refused, never counted as allowed.
        assert (await raw.call("kit_greet", {"name": "x"})).status_code == 200
        for _ in range(5):
            body = raw.call_body("kit_greet", {"name": "x"}, **trick).replace(b'"TRICK"', number.encode())
            response = await raw.post(body, tool="kit_greet")
            assert response.status_code == 400 and jsonrpc_error(response) == -32700, response.text
        assert (await raw.call("kit_greet", {"name": "x"})).status_code == 429
    assert forbidden == []
    assert len(allowed) == 1
    assert await tasks_of(task_system, "key:ci-bot") == []
    # Refusals alike are one event and then a count (gateway.audit_trail.Refusals): end the window now.
    trail = gateway.state.audit
    assert trail is not None
    trail.refusals.flush()
    await refusals_told(task_system.nc, task_system.subjects, "malformed_request", "key:ci-bot", 7)


# -- 2. a task in either era's form is refused by tasks = false ------------------------------------


@pytest.mark.parametrize("era", ERAS)
@pytest.mark.parametrize("form", ["2025 params.task", "2026 extension in _meta"])
async def test_tasks_false_refuses_a_task_in_either_form_and_either_era(
    secured: Any, task_system: TaskSystem, era: str, form: str
) -> None:
    gateway = await secured(policy=POLICY)
    raw = RawMcp(gateway.url, era, API_KEY)
    params: dict[str, Any] = {"task": {"ttl": 1000}} if form.startswith("2025") else {"_meta": TASKS_META}
    async with spying(task_system, "kit_greet") as seen:
        response = await raw.call("kit_greet", {"name": "x"}, **params)
    assert response.status_code == 403, response.text
    assert response.json()["error_description"] == "not allowed to use tasks"
    assert seen == []
    assert await tasks_of(task_system, "key:ci-bot") == []
    # tasks/* too, in its era's form.
    listing = json.dumps({"jsonrpc": "2.0", "id": 2, "method": "tasks/list", "params": {}}).encode()
    assert (await raw.post(listing, method="tasks/list")).status_code == 403


async def test_a_2026_client_with_the_tasks_extension_gets_a_task_when_allowed(secured: Any, issuer: Issuer) -> None:
    gateway = await secured(policy=POLICY)
    raw = RawMcp(gateway.url, MODERN, issuer.token(sub="alice", scope="mcp:tools kit:math"))
    response = await raw.call("kit_add", {"a": 1, "b": 2}, _meta=TASKS_META)
    assert response.status_code == 200, response.text
    assert '"resultType":"task"' in response.text.replace(" ", "")


# -- 3. principals cannot collide ---------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["legacy", "auto"])
async def test_a_token_whose_sub_names_an_api_key_is_not_that_key(
    secured: Any, issuer: Issuer, task_system: TaskSystem, mode: str
) -> None:
    gateway = await secured(policy=[*POLICY, {"subjects": ["key:ci-bot"], "tools": ["kit_burn"]}])
    impostor = issuer.token(sub="key:ci-bot")
    async with client(gateway.url, impostor, mode=mode) as mcp:
        assert (await mcp.list_tools()).tools == []  # none of the key's grants
        with pytest.raises(MCPError):
            await mcp.call_tool("kit_greet", {"name": "x"})
    async with client(gateway.url, API_KEY, mode=mode) as mcp:
        assert {t.name for t in (await mcp.list_tools()).tools} == {"kit_greet", "kit_burn"}
    # The key's tasks are not the impostor's, even where everyone may use tasks (no policy).
    open_gateway = await secured()
    record = await task_system.store.submit("kit_greet", {"name": "x"}, principal="key:ci-bot")
    get = json.dumps({"jsonrpc": "2.0", "id": 3, "method": "tasks/get", "params": {"taskId": record.task_id}})
    as_impostor = await RawMcp(open_gateway.url, LEGACY, impostor).post(get.encode(), method="tasks/get")
    assert as_impostor.status_code == 200 and jsonrpc_error(as_impostor) is not None, as_impostor.text
    as_key = await RawMcp(open_gateway.url, LEGACY, API_KEY).post(get.encode(), method="tasks/get")
    assert jsonrpc_error(as_key) is None and record.task_id in as_key.text, as_key.text
    assert record.task_id not in await tasks_of(task_system, f"jwt:{issuer_of(impostor)}#key:ci-bot")


def issuer_of(token: str) -> str:
    return str(jwt.decode(token, options={"verify_signature": False})["iss"])


async def test_policy_subject_globs_match_within_their_namespace(secured: Any, issuer: Issuer) -> None:
    policy = [
        {"subjects": ["key:ci-*"], "tools": ["kit_greet"]},
        {"subjects": ["jwt:bob"], "tools": ["kit_add"]},
        {"subjects": ["carol"], "tools": ["kit_divide"]},  # the form older configurations use: a token's sub
    ]
    gateway = await secured(policy=policy)
    seen: dict[str, set[str]] = {}
    for who, credential in {
        "key": API_KEY,
        "bob": issuer.token(sub="bob"),
        "carol": issuer.token(sub="carol"),
        "a token named like the key": issuer.token(sub="ci-bot"),
        "a token named key:ci-bot": issuer.token(sub="key:ci-bot"),
    }.items():
        async with client(gateway.url, credential) as mcp:
            seen[who] = {t.name for t in (await mcp.list_tools()).tools}
    assert seen == {
        "key": {"kit_greet"},
        "bob": {"kit_add"},
        "carol": {"kit_divide"},
        "a token named like the key": set(),
        "a token named key:ci-bot": set(),
    }


# -- 4. sessions belong to their principal; per-principal caps --------------------------------------


async def test_another_principal_gets_404_for_every_verb_on_a_session(
    secured: Any, issuer: Issuer, task_system: TaskSystem
) -> None:
    gateway = await secured()
    alice, bob = issuer.token(sub="alice"), issuer.token(sub="bob")
    opened = await open_session(gateway.url, alice)
    session_id = opened.headers["mcp-session-id"]
    base = {"Accept": "application/json, text/event-stream", "Mcp-Session-Id": session_id}
    legacy = {**base, "Mcp-Protocol-Version": LEGACY, "Content-Type": "application/json"}
    tools_list = {"jsonrpc": "2.0", "id": 5, "method": "tools/list"}  # served by the hot path
    ping = {"jsonrpc": "2.0", "id": 6, "method": "ping"}  # served by the SDK
    async with httpx2.AsyncClient(timeout=10) as http:
        as_bob = {"Authorization": f"Bearer {bob}"}
        for body in (tools_list, ping):
            response = await http.post(gateway.url, json=body, headers={**legacy, **as_bob})
            assert response.status_code == 404 and response.json()["error"]["message"] == "Session not found"
        # A 2026 request naming the session is refused alike (the id is not bob's to name).
        modern = {**as_bob, "Mcp-Protocol-Version": MODERN, "Mcp-Method": "tools/list"}
        assert (await http.post(gateway.url, json=tools_list, headers={**base, **modern})).status_code == 404
        assert (await http.get(gateway.url, headers={**base, **as_bob})).status_code == 404
        # Naming bob's own session beside alice's: the SDK would serve the first, so neither is read.
        bobs = (await open_session(gateway.url, bob)).headers["mcp-session-id"]
        twice = [
            ("Accept", "application/json, text/event-stream"),
            ("Content-Type", "application/json"),
            ("Authorization", f"Bearer {bob}"),
            ("Mcp-Protocol-Version", LEGACY),
            ("Mcp-Session-Id", session_id),
            ("Mcp-Session-Id", bobs),
        ]
        doubled = await http.post(gateway.url, json=ping, headers=twice)
        assert doubled.status_code == 400 and doubled.json()["error"]["code"] == -32600, doubled.text
        versions = [*twice[:3], ("Mcp-Protocol-Version", LEGACY), ("Mcp-Protocol-Version", MODERN)]
        initialize = {"jsonrpc": "2.0", "id": 9, "method": "initialize", "params": {}}
        assert (await http.post(gateway.url, json=initialize, headers=versions)).status_code == 400
        assert (await http.delete(gateway.url, headers={**base, **as_bob})).status_code == 404
        # The owner's session is untouched: its requests, on both paths, and its DELETE.
        as_alice = {"Authorization": f"Bearer {alice}"}
        for body in (tools_list, ping):
            response = await http.post(gateway.url, json=body, headers={**legacy, **as_alice})
            assert response.status_code == 200, response.text
        assert (await http.delete(gateway.url, headers={**base, **as_alice})).status_code == 200
    # Each attempt is on the audit trail, as bob's: alike ones as one event and then their count.
    trail = gateway.state.audit
    assert trail is not None
    trail.refusals.flush()
    await refusals_told(task_system.nc, task_system.subjects, "foreign_session", f"jwt:{issuer_of(bob)}#bob", 5)


async def test_one_principal_cannot_hold_every_connection_open(secured: Any, issuer: Issuer) -> None:
    # GET streams (and tasks/result, subscriptions/listen) wait for as long as the client likes;
    # each holds one of the connections everyone shares. Past its share a principal gets 429.
    gateway = await secured(gateway={"max_waiting_per_principal": 2})
    alice, bob = issuer.token(sub="alice"), issuer.token(sub="bob")

    def stream_headers(token: str, session_id: str) -> dict[str, str]:
        return {
            "Accept": "text/event-stream",
            "Authorization": f"Bearer {token}",
            "Mcp-Protocol-Version": LEGACY,
            "Mcp-Session-Id": session_id,
        }

    sessions = [(await open_session(gateway.url, alice)).headers["mcp-session-id"] for _ in range(4)]
    bobs = (await open_session(gateway.url, bob)).headers["mcp-session-id"]
    async with contextlib.AsyncExitStack() as streams, httpx2.AsyncClient(timeout=10) as http:
        for session_id in sessions[:2]:
            held = await streams.enter_async_context(
                http.stream("GET", gateway.url, headers=stream_headers(alice, session_id))
            )
            assert held.status_code == 200
        refused = await http.get(gateway.url, headers=stream_headers(alice, sessions[2]))
        assert refused.status_code == 429 and refused.json()["error"] == "too_many_waiting", refused.text
        assert refused.headers["retry-after"] == "1"
        # Another principal's share is untouched.
        async with http.stream("GET", gateway.url, headers=stream_headers(bob, bobs)) as bobs_stream:
            assert bobs_stream.status_code == 200
    # Once alice's streams are closed, her share is free again.

    async def served_again() -> bool:
        async with httpx2.AsyncClient(timeout=10) as http:
            async with http.stream("GET", gateway.url, headers=stream_headers(alice, sessions[3])) as again:
                return again.status_code == 200

    await eventually(served_again, timeout_s=10, what="alice's share never came back")


async def test_one_principal_cannot_fill_the_session_table(secured: Any, issuer: Issuer) -> None:
    gateway = await secured(gateway={"max_sessions_per_principal": 3, "initializes_per_minute": 5})
    alice, bob = issuer.token(sub="alice"), issuer.token(sub="bob")
    opened = [await open_session(gateway.url, alice) for _ in range(3)]
    assert [r.status_code for r in opened] == [200, 200, 200]
    refused = await open_session(gateway.url, alice)
    assert refused.status_code == 429 and refused.json()["error"] == "too_many_sessions"
    assert (await open_session(gateway.url, bob)).status_code == 200  # others are not shut out
    # Closing one frees a place...
    async with httpx2.AsyncClient(timeout=10) as http:
        session = {"Mcp-Session-Id": opened[0].headers["mcp-session-id"], "Authorization": f"Bearer {alice}"}
        assert (await http.delete(gateway.url, headers=session)).status_code == 200
    assert (await open_session(gateway.url, alice)).status_code == 200
    # ...but not the rate: alice has sent 5 initialize requests this minute.
    async with httpx2.AsyncClient(timeout=10) as http:
        session = {"Mcp-Session-Id": opened[1].headers["mcp-session-id"], "Authorization": f"Bearer {alice}"}
        assert (await http.delete(gateway.url, headers=session)).status_code == 200
    too_fast = await open_session(gateway.url, alice)
    assert too_fast.status_code == 429 and "initialize requests in a minute" in too_fast.json()["error_description"]


# -- 6. deep JSON and slow clients ---------------------------------------------------------------------


@pytest.mark.parametrize("era", ERAS)
@pytest.mark.parametrize("hot_path", [True, False])
async def test_deep_json_is_a_parse_error_and_the_gateway_serves_on(
    secured: Any, issuer: Issuer, era: str, hot_path: bool
) -> None:
    gateway = await secured(gateway={"hot_path": hot_path})
    raw = RawMcp(gateway.url, era, issuer.token())
    for levels in (10**5, 10**3, 65):
        response = await raw.post(
            ODD_BODIES["100000-deep"].replace(b"[" * 10**5, b"[" * levels).replace(b"]" * 10**5, b"]" * levels),
            tool="kit_add",
        )
        assert response.status_code == 400 and jsonrpc_error(response) == -32700, (levels, response.text)
    assert (await raw.call("kit_add", {"a": 1, "b": 2})).status_code == 200


def raw_socket(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.settimeout(10)
    return sock


async def closed_within(sock: socket.socket, seconds: float) -> tuple[float, bytes]:
    """How long until the server closes ``sock`` (and what it said before), failing after ``seconds``."""
    started = time.monotonic()
    received = b""
    loop = asyncio.get_running_loop()
    while True:
        try:
            chunk = await loop.run_in_executor(None, sock.recv, 65536)
        except ConnectionResetError:
            chunk = b""  # closed with our unread bytes in its buffer: the kernel resets instead
        if not chunk:
            took = time.monotonic() - started
            assert took < seconds, f"open for {took:.1f} s"
            return took, received
        received += chunk


async def test_slow_or_flooding_clients_are_dropped_and_a_short_body_gets_400(start_gateway: Any) -> None:
    gateway = await start_gateway(header_timeout_s=0.5, body_timeout_s=0.5)
    with contextlib.ExitStack() as sockets:
        # Connects and says nothing.
        silent = sockets.enter_context(raw_socket(gateway.port))
        await closed_within(silent, 3)
        # Trickles its headers, a byte at a time, never finishing.
        trickler = sockets.enter_context(raw_socket(gateway.port))
        trickler.sendall(b"POST /mcp HTTP/1.1\r\nHost: 127.0.0.1\r\n")

        async def trickle() -> None:
            for byte in b"X-Slow: " + b"a" * 100:
                try:
                    trickler.send(bytes([byte]))
                except OSError:
                    return
                await asyncio.sleep(0.05)

        dripping = asyncio.create_task(trickle())
        await closed_within(trickler, 3)
        dripping.cancel()
        # A body shorter than its Content-Length: 400 within the body timeout, then the connection closes.
        short = sockets.enter_context(raw_socket(gateway.port))
        head = (
            b"POST /mcp HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            b"Accept: application/json, text/event-stream\r\nContent-Length: 100\r\n\r\n"
        )
        short.sendall(head + b'{"jsonrpc":')
        _, answer = await closed_within(short, 3)
        assert answer.startswith(b"HTTP/1.1 400"), answer
        assert b"-32600" in answer and b"Request body incomplete" in answer
        # Headers past max_header_bytes (uvicorn's parser alone took 10 MB of them): 431, then closed
        # at once (this gateway allows the default 10 s for headers, so only the size can end it).
        flooded = await start_gateway(max_header_bytes=16 * 1024)
        flood = sockets.enter_context(raw_socket(flooded.port))
        flood.sendall(b"POST /mcp HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        try:
            for n in range(200):
                flood.sendall(b"X-Flood-%d: %s\r\n" % (n, b"a" * 4000))
        except OSError:
            pass  # closed while we were still sending: what should happen
        _, answer = await closed_within(flood, 3)
        # The 431 is written before the close, but a reset (our unsent headers) may overtake it.
        assert answer == b"" or answer.startswith(b"HTTP/1.1 431"), answer
    # The gateway serves everyone else meanwhile.
    assert (await open_session(gateway.url)).status_code == 200


async def test_connections_beyond_the_cap_get_503_and_the_gateway_serves_on(start_gateway: Any) -> None:
    # Idle connections hold a file descriptor each until the header deadline; past max_connections
    # a request is answered 503 at once instead of the process running out of descriptors.
    gateway = await start_gateway(max_connections=3)
    with contextlib.ExitStack() as sockets:
        for _ in range(3):
            sockets.enter_context(raw_socket(gateway.port))
        await eventually(
            lambda: _status_of_initialize(gateway.url, 503),
            timeout_s=5,
            what="a request past the connection cap was not refused with 503",
        )
    assert (await open_session(gateway.url)).status_code == 200


async def _status_of_initialize(url: str, expected: int) -> bool:
    return (await open_session(url)).status_code == expected


# -- the corpus, through a deployment: no odd body reaches a tool it may not, or passes a limit -------


@pytest.mark.parametrize("era", ERAS)
@pytest.mark.parametrize("hot_path", [True, False])
async def test_no_odd_body_reaches_a_forbidden_tool_or_passes_a_rate_limit(
    secured: Any, task_system: TaskSystem, era: str, hot_path: bool
) -> None:
    """Differential, end to end: every body of the corpus (tests/gateway/test_inbound.py) sent as the
    API key, which may call kit_greet once per window and nothing else, through whichever layer
    serves it (the hot path or the SDK). Whatever each answer is, the workers hear no call of
    kit_add or kit_divide, no second call of kit_greet, and no task is made."""
    gateway = await secured(
        gateway={"hot_path": hot_path}, policy=POLICY, rate_limits={"per_tool": {"requests": 1, "per_s": 600}}
    )
    raw = RawMcp(gateway.url, era, API_KEY)
    greet_bodies = {f"{case} (kit_greet)": body.replace(b"kit_add", b"kit_greet") for case, body in ODD_BODIES.items()}
    async with (
        spying(task_system, "kit_add") as added,
        spying(task_system, "kit_divide") as divided,
        spying(task_system, "kit_greet") as greeted,
    ):
        assert (await raw.call("kit_greet", {"name": "x"})).status_code == 200  # the window's one call
        for case, body in {**ODD_BODIES, **greet_bodies}.items():
            response = await raw.post(body, tool="kit_greet" if "kit_greet" in case else "kit_add")
            assert response.status_code != 500, (case, response.text)
            assert "Traceback" not in response.text, case
    assert added == [] and divided == [], [m.subject for m in added + divided]
    assert len(greeted) == 1
    assert await tasks_of(task_system, "key:ci-bot") == []


# -- 5. a 2026 call of a tool with x-mcp-header parameters is checked as the SDK checks it ------------

REGION = ToolDescriptor(
    name="region_echo",
    description="Echo, with the region mirrored in a header.",
    input_schema={
        "type": "object",
        "properties": {"region": {"type": "string", "x-mcp-header": "Region"}, "n": {"type": "integer"}},
        "required": ["region"],
    },
)


@pytest.mark.parametrize("hot_path", [True, False])
async def test_a_missing_or_mismatched_mcp_param_header_is_refused_on_every_path(
    kv: KeyValue, worker: Any, start_gateway: Any, hot_path: bool
) -> None:
    await put_tools(kv, REGION)
    scripted = await worker("region_echo", result_reply(CallToolResult(content=[TextContent(text="ok")])))
    gateway = await start_gateway(hot_path=hot_path)
    await eventually(lambda: gateway.state.catalogue.get("region_echo") is not None)
    raw = RawMcp(gateway.url, MODERN)
    body = raw.call_body("region_echo", {"region": "eu-west", "n": 1})
    for header in ({}, {"Mcp-Param-Region": "us-east"}, {"Mcp-Param-Region": "=?base64?SGVsbG8?="}):
        response = await raw.post(body, tool="region_echo", **header)
        assert response.status_code == 400 and jsonrpc_error(response) == -32020, (header, response.text)
    assert scripted.messages == []
    response = await raw.post(body, tool="region_echo", **{"Mcp-Param-Region": "eu-west"})
    assert response.status_code == 200 and jsonrpc_error(response) is None, response.text
    assert len(scripted.messages) == 1
    if hot_path:
        assert gateway.hot.served == 0  # every one of them went to the SDK's check
