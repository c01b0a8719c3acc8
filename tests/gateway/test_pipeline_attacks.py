"""A hostile tenant against the gateway's request pipeline (issue 13), each attempt kept as a test that fails closed.

The deployment is test_pipeline's: real nats-server, the registry, a worker serving the testkit
component, gateways over HTTP with authentication (JWKS + an API key), the policy of
tests/gateway/auth_kit.py and rate limits. The principals: the API key ``key:ci-bot`` (kit_greet
only, no tasks), the token ``dave`` (no tools, no tasks), ``alice`` with ``kit:math`` (kit_add,
kit_divide). Every attempt asks the same three things: did a forbidden tool run (a spy on its bus
subject), did a refused request cost a rate-limit token or create a task, and is every answer
well formed (no 500, no traceback, a JSON-RPC error where one is due).
"""

from __future__ import annotations

import asyncio
import json
import re
import socket
from typing import Any

import httpx2
import pytest

from tests.conftest import eventually
from tests.gateway.auth_kit import API_KEY, ISSUER, POLICY, Issuer
from tests.gateway.raw_mcp import ACCEPT, ERAS, LEGACY, MODERN, MODERN_META, RawMcp, jsonrpc_error, open_session
from tests.gateway.responders import TaskSystem, spying

FORBIDDEN = "kit_divide"
"""A tool the API key's policy does not grant."""
ALLOWED = "kit_greet"


def envelope(method: str, params: Any = None, request_id: Any = 1, **extra: Any) -> dict[str, Any]:
    message: dict[str, Any] = {"jsonrpc": "2.0", "id": request_id, "method": method, **extra}
    if params is not None:
        message["params"] = params
    return message


def well_formed(response: httpx2.Response) -> None:
    """No 500, and a body that is JSON (or an SSE stream of JSON) — never a traceback."""
    assert response.status_code < 500, response.text
    assert "Traceback" not in response.text, response.text


# -- a. parser differentials ------------------------------------------------------------------------


ODD_IDS = {"-0": b"-0", "1E2": b"1E2", "1.0": b"1.0", "true": b"true", "object": b"{}", "array": b"[]"}


@pytest.mark.parametrize("era", ERAS)
async def test_odd_ids_names_and_methods_never_reach_a_forbidden_tool(
    secured: Any, task_system: TaskSystem, era: str
) -> None:
    gateway = await secured(policy=POLICY, rate_limits={"per_tool": {"requests": 3, "per_s": 600}})
    raw = RawMcp(gateway.url, era, API_KEY)
    meta = {"_meta": MODERN_META} if raw.modern else {}
    bodies: dict[str, bytes] = {}
    for label, request_id in ODD_IDS.items():
        body = json.dumps(envelope("tools/call", {"name": FORBIDDEN, "arguments": {"a": 1, "b": 2}, **meta}, "ID"))
        bodies[f"id {label}"] = body.replace('"ID"', request_id.decode()).encode()
    for label, method in {"case": "Tools/call", "trailing space": "tools/call ", "escaped": "tools\\/call"}.items():
        body = json.dumps(envelope("METHOD", {"name": FORBIDDEN, "arguments": {"a": 1, "b": 2}, **meta}))
        bodies[f"method {label}"] = body.replace('"METHOD"', json.dumps(method).replace("\\\\", "\\")).encode()
    for label, name in {"nul": f"{FORBIDDEN}\u0000", "space": f"{FORBIDDEN} ", "escaped": "kit_\u0064ivide"}.items():
        bodies[f"name {label}"] = json.dumps(envelope("tools/call", {"name": name, "arguments": {}, **meta})).encode()
    bodies["name nested only"] = json.dumps(
        envelope("tools/call", {"arguments": {"name": FORBIDDEN}, "_meta": {**MODERN_META, "name": FORBIDDEN}})
    ).encode()
    bodies["params an array"] = json.dumps(envelope("tools/call", [FORBIDDEN, {"a": 1, "b": 2}])).encode()
    async with spying(task_system, FORBIDDEN) as forbidden:
        for label, body in bodies.items():
            response = await raw.post(body, tool=FORBIDDEN)
            well_formed(response)
            if response.status_code == 200:
                assert jsonrpc_error(response) is not None, (label, response.text)
        # A name beside the envelope's params is nobody's: the call is the allowed tool's.
        beside = {**envelope("tools/call", {"name": ALLOWED, "arguments": {"name": "x"}, **meta}), "name": FORBIDDEN}
        response = await raw.post(json.dumps(beside).encode(), tool=ALLOWED)
        assert response.status_code == 200 and jsonrpc_error(response) is None, response.text
    assert forbidden == []
    # None of the others spent one of the tool's three calls (refused before the limit).
    for _ in range(2):
        assert (await raw.call(ALLOWED, {"name": "x"})).status_code == 200
    assert (await raw.call(ALLOWED, {"name": "x"})).status_code == 429


ODD_ENCODINGS = {
    "utf-16 with a BOM": lambda body: body.decode().encode("utf-16"),
    "utf-16-le": lambda body: body.decode().encode("utf-16-le"),
    "utf-32": lambda body: body.decode().encode("utf-32"),
    "gzip": lambda body: __import__("gzip").compress(body),
    "empty": lambda body: b"",
    "whitespace": lambda body: b" \r\n\t ",
}


@pytest.mark.parametrize("era", ERAS)
async def test_encodings_and_content_types_are_refused_not_decoded_differently(
    secured: Any, task_system: TaskSystem, era: str
) -> None:
    gateway = await secured(policy=POLICY)
    raw = RawMcp(gateway.url, era, API_KEY)
    body = raw.call_body(FORBIDDEN, {"a": 1, "b": 2})
    async with spying(task_system, FORBIDDEN) as forbidden:
        for label, encoded in ODD_ENCODINGS.items():
            extra = {"Content-Encoding": "gzip"} if label == "gzip" else {}
            response = await raw.post(encoded(body), tool=FORBIDDEN, **extra)
            assert response.status_code == 400 and jsonrpc_error(response) == -32700, (label, response.text)
        # The media type is decided once, before the body is read: application/json (UTF-8) only.
        # The SDK's 2025 transport answers 415 to application/jsonx while its transport-security
        # check (the hot path's and the 2026 path's) let it through; text/plain is what a browser
        # page may send cross-origin without a preflight.
        allowed = raw.call_body(ALLOWED, {"name": "x"})
        async with spying(task_system, ALLOWED) as served:
            for body_sent in (body, allowed):
                for content_type in (
                    "application/json; charset=utf-16",
                    "text/plain",
                    "application/jsonx",
                    "application/x-www-form-urlencoded",
                    "",
                ):
                    response = await raw.post(body_sent, tool=FORBIDDEN, **{"Content-Type": content_type})
                    assert response.status_code == 415 and jsonrpc_error(response) == -32600, (
                        content_type,
                        response.text,
                    )
            async with httpx2.AsyncClient(timeout=10) as http:
                headers = [*(await raw.headers(tool=ALLOWED)).items(), ("Content-Type", "text/plain")]
                response = await http.post(gateway.url, content=allowed, headers=headers)
                assert response.status_code == 400 and jsonrpc_error(response) == -32600, response.text
            for content_type in (
                "Application/JSON",
                "application/json; charset=UTF-8",
                'application/json;charset="utf-8"',
            ):
                response = await raw.post(allowed, tool=ALLOWED, **{"Content-Type": content_type})
                assert response.status_code == 200 and jsonrpc_error(response) is None, (content_type, response.text)
        assert len(served) == 3
    assert forbidden == []


# -- b. the era switch and the routing headers ------------------------------------------------------


async def test_routing_headers_that_disagree_with_the_body_never_reach_a_forbidden_tool(
    secured: Any, task_system: TaskSystem
) -> None:
    gateway = await secured(policy=POLICY)
    modern = RawMcp(gateway.url, MODERN, API_KEY)
    legacy = RawMcp(gateway.url, LEGACY, API_KEY)
    forbidden_call = modern.call_body(FORBIDDEN, {"a": 1, "b": 2})
    allowed_call = modern.call_body(ALLOWED, {"name": "x"})
    async with spying(task_system, FORBIDDEN) as forbidden:
        # Mcp-Name names the allowed tool, the body the forbidden one: the body is judged.
        assert (await modern.post(forbidden_call, tool=ALLOWED)).status_code == 403
        # Mcp-Method says tools/list: the body is still a call of the forbidden tool.
        assert (await modern.post(forbidden_call, method="tools/list")).status_code == 403
        # The other way round: an allowed body under a forbidden Mcp-Name is the SDK's mismatch.
        mismatch = await modern.post(allowed_call, tool=FORBIDDEN)
        assert mismatch.status_code == 400 and jsonrpc_error(mismatch) == -32020, mismatch.text
        # A 2025 session's request sent with the 2026 _meta, or a 2026 header over a 2025 body.
        assert (await legacy.post(forbidden_call, tool=FORBIDDEN)).status_code == 403
        legacy_body = legacy.call_body(FORBIDDEN, {"a": 1, "b": 2})
        assert (await modern.post(legacy_body, tool=FORBIDDEN)).status_code == 403
        # A 2026 request that also names the caller's own 2025 session.
        session = await legacy.headers()
        response = await modern.post(forbidden_call, tool=FORBIDDEN, **{"Mcp-Session-Id": session["Mcp-Session-Id"]})
        assert response.status_code == 403
        # Repeated Mcp-Name / Mcp-Method lines: the SDK reads one of them, so none may be judged alone.
        async with httpx2.AsyncClient(timeout=10) as http:
            base = [(k, v) for k, v in (await modern.headers()).items() if k not in ("Mcp-Method", "Mcp-Name")]
            for extra in (
                [("Mcp-Method", "tools/call"), ("Mcp-Name", ALLOWED), ("Mcp-Name", FORBIDDEN)],
                [("Mcp-Method", "tools/list"), ("Mcp-Method", "tools/call"), ("Mcp-Name", ALLOWED)],
            ):
                for body in (allowed_call, forbidden_call):
                    response = await http.post(gateway.url, content=body, headers=[*base, *extra])
                    well_formed(response)
                    assert response.status_code >= 400, response.text
    assert forbidden == []


# -- c. principals and credentials ------------------------------------------------------------------


async def test_two_credentials_in_one_request_are_refused(
    secured: Any, issuer: Issuer, task_system: TaskSystem
) -> None:
    """RFC 6750 §2: a client uses one method to send its token. Two credentials (two headers, or the
    same header twice) leave which one was judged to the reader — a proxy in front may read another."""
    gateway = await secured(policy=POLICY)
    dave, alice = issuer.token(sub="dave"), issuer.token(sub="alice", scope="mcp:tools kit:math")
    body = RawMcp(gateway.url, MODERN).call_body("kit_add", {"a": 1, "b": 2})
    base = [(k, v) for k, v in ACCEPT.items()] + [
        ("Mcp-Protocol-Version", MODERN),
        ("Mcp-Method", "tools/call"),
        ("Mcp-Name", "kit_add"),
    ]
    async with spying(task_system, "kit_add") as seen, httpx2.AsyncClient(timeout=10) as http:
        for credentials in (
            [("Authorization", f"Bearer {dave}"), ("Authorization", f"Bearer {alice}")],
            [("Authorization", f"Bearer {alice}"), ("Authorization", f"Bearer {dave}")],
            [("X-API-Key", API_KEY), ("Authorization", f"Bearer {alice}")],
            [("Authorization", f"Bearer {alice}"), ("X-API-Key", API_KEY)],
            [("X-API-Key", API_KEY), ("X-API-Key", "nonsense")],
        ):
            response = await http.post(gateway.url, content=body, headers=[*base, *credentials])
            assert response.status_code == 400, (credentials[0][0], response.status_code, response.text)
            assert response.json()["error"] == "invalid_request", response.text
        # One credential still works.
        response = await http.post(gateway.url, content=body, headers=[*base, ("Authorization", f"Bearer {alice}")])
        assert response.status_code == 200, response.text
    assert len(seen) == 1


async def test_subjects_with_separators_and_foreign_audiences_stay_in_their_namespace(
    secured: Any, issuer: Issuer, task_system: TaskSystem
) -> None:
    policy = [{"subjects": ["alice"], "tools": ["kit_add"]}, {"subjects": ["*"], "tools": ["kit_greet"]}]
    gateway = await secured(policy=policy)
    record = await task_system.store.submit("kit_add", {"a": 1, "b": 2}, principal=f"jwt:{ISSUER}#alice")
    get = json.dumps(envelope("tasks/get", {"taskId": record.task_id})).encode()
    for sub in ("alice#", "#alice", f"{ISSUER}#alice", "alice\u0000", "ALICE"):
        raw = RawMcp(gateway.url, LEGACY, issuer.token(sub=sub))
        assert (await raw.call("kit_add", {"a": 1, "b": 2})).status_code == 403, sub
        response = await raw.post(get, method="tasks/get")
        assert jsonrpc_error(response) is not None, (sub, response.text)
    # "*" is every token subject, never an API key; a token for another audience is nobody.
    assert (await RawMcp(gateway.url, MODERN, API_KEY).call("kit_greet", {"name": "x"})).status_code == 403
    other = issuer.token(sub="alice", aud="https://elsewhere.example.test/mcp")
    assert (await RawMcp(gateway.url, MODERN, other).call("kit_add", {"a": 1, "b": 2})).status_code == 401


TASKS_META = {"io.modelcontextprotocol/clientCapabilities": {"extensions": {"io.modelcontextprotocol/tasks": {}}}}


@pytest.mark.parametrize("era", ERAS)
async def test_another_principals_task_cannot_be_read_listed_or_cancelled(
    secured: Any, issuer: Issuer, task_system: TaskSystem, era: str
) -> None:
    gateway = await secured()
    alice = f"jwt:{ISSUER}#alice"
    record = await task_system.store.submit("kit_burn", {"iterations": 2_000_000_000}, principal=alice)
    bob = RawMcp(gateway.url, era, issuer.token(sub="bob"))
    meta = {"_meta": {**MODERN_META, **TASKS_META}} if bob.modern else {}
    era_method = "tasks/update" if bob.modern else "tasks/result"
    for method in ("tasks/get", era_method, "tasks/cancel"):
        body = json.dumps(envelope(method, {"taskId": record.task_id, **meta})).encode()
        response = await bob.post(body, method=method, tool=record.task_id)  # Mcp-Name: the task id
        well_formed(response)
        assert jsonrpc_error(response) is not None, (method, response.text)
        assert "TASK_NOT_FOUND" in response.text, (method, response.text)  # as if it did not exist
    listing = await bob.post(json.dumps(envelope("tasks/list", {**meta})).encode(), method="tasks/list")
    well_formed(listing)
    assert record.task_id not in listing.text
    assert (await task_system.store.get(record.task_id, principal=alice)).status != "cancelled"
    await task_system.store.cancel(record.task_id, principal=alice)


async def test_a_cancellation_names_only_the_senders_own_requests(
    secured: Any, issuer: Issuer, task_system: TaskSystem
) -> None:
    """2025: ``notifications/cancelled`` carries only a request id; bob's, on bob's session, with
    the id of alice's call in flight, must not stop it. A client's posted JSON-RPC *response*
    (to a server request nobody sent) is accepted and ignored, in both eras."""
    gateway = await secured()
    alice = RawMcp(gateway.url, LEGACY, issuer.token(sub="alice"))
    bob = RawMcp(gateway.url, LEGACY, issuer.token(sub="bob"))
    call = json.dumps(envelope("tools/call", {"name": "kit_burn", "arguments": {"iterations": 300_000_000}}, 77))
    await alice.headers()
    await bob.headers()
    async with spying(task_system, "kit_burn") as started:
        running = asyncio.ensure_future(alice.post(call.encode(), tool="kit_burn"))
        await eventually(lambda: asyncio.sleep(0, result=started or None), timeout_s=10, what="alice's call")
        cancel = envelope("notifications/cancelled", {"requestId": 77, "reason": "bob says so"})
        del cancel["id"]
        assert (await bob.post(json.dumps(cancel).encode(), method="notifications/cancelled")).status_code == 202
        answer = await running
    assert answer.status_code == 200 and jsonrpc_error(answer) is None, answer.text
    for raw in (bob, RawMcp(gateway.url, MODERN, issuer.token(sub="bob"))):
        for response_message in (
            {"jsonrpc": "2.0", "id": 77, "result": {}},
            {"jsonrpc": "2.0", "id": "x", "error": {"code": -1, "message": "no"}},
            {"jsonrpc": "2.0", "id": None, "error": {"code": -1, "message": "no"}},
        ):
            response = await raw.post(json.dumps(response_message).encode(), method="tools/list")
            well_formed(response)


# -- d. sessions -------------------------------------------------------------------------------------


async def test_sessions_cannot_be_borrowed_by_header_case_or_multiplied_by_reinitialising(
    secured: Any, issuer: Issuer
) -> None:
    gateway = await secured(gateway={"max_sessions_per_principal": 1, "initializes_per_minute": 100})
    alice, bob = issuer.token(sub="alice"), issuer.token(sub="bob")
    opened = await open_session(gateway.url, alice)
    session_id = opened.headers["mcp-session-id"]
    initialize = envelope("initialize", {"protocolVersion": LEGACY, "capabilities": {}, "clientInfo": INFO})
    async with httpx2.AsyncClient(timeout=10) as http:
        for name in ("MCP-SESSION-ID", "mcp-session-id", "Mcp-Session-ID"):
            headers = {**ACCEPT, "Authorization": f"Bearer {bob}", "Mcp-Protocol-Version": LEGACY, name: session_id}
            response = await http.post(gateway.url, json=envelope("ping"), headers=headers)
            assert response.status_code == 404, (name, response.text)
        # Re-initialising inside one's own session opens no second one; nor does naming an unknown id.
        mine = {**ACCEPT, "Authorization": f"Bearer {alice}", "Mcp-Protocol-Version": LEGACY}
        for _ in range(3):
            response = await http.post(gateway.url, json=initialize, headers={**mine, "Mcp-Session-Id": session_id})
            well_formed(response)
            assert response.headers.get("mcp-session-id") in (None, session_id)
        unknown = await http.post(gateway.url, json=initialize, headers={**mine, "Mcp-Session-Id": "f" * 32})
        assert unknown.status_code == 404, unknown.text
        # A GET or DELETE with no session id opens nothing either.
        assert (await http.get(gateway.url, headers=mine)).status_code == 400
        assert (await http.delete(gateway.url, headers=mine)).status_code == 400
    refused = await open_session(gateway.url, alice)
    assert refused.status_code == 429 and refused.json()["error"] == "too_many_sessions"
    assert (await open_session(gateway.url, bob)).status_code == 200


INFO = {"name": "attacker", "version": "1"}


# -- e. rate limits: a flood of refused bodies is limited too ------------------------------------------


@pytest.mark.parametrize("era", ERAS)
async def test_a_flood_of_malformed_bodies_hits_the_per_principal_limit(
    secured: Any, task_system: TaskSystem, era: str
) -> None:
    gateway = await secured(policy=POLICY, rate_limits={"per_principal": {"requests": 5, "per_s": 600}})
    raw = RawMcp(gateway.url, era, API_KEY)
    await raw.headers()  # a 2025 session opened first: initialize is not a call
    statuses = []
    for body in (b"{", b"[]", b"\xef\xbb\xbf{}", b'{"jsonrpc":"2.0","id":1,"method":"x","params":[]}') * 2:
        response = await raw.post(body)
        well_formed(response)
        statuses.append(response.status_code)
    assert statuses == [400] * 5 + [429] * 3, statuses
    assert (await raw.call(ALLOWED, {"name": "x"})).status_code == 429


# -- f./g. raw HTTP: framing tricks, sizes, pipelining; never a 500 -----------------------------------


def exchange(port: int, data: bytes, *, until: bytes = b"", timeout_s: float = 10) -> bytes:
    """Send ``data`` on a fresh connection and read until ``until`` has been seen (or the server closes)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout_s) as sock:
        sock.sendall(data)
        received = b""
        while not until or until not in received:
            try:
                chunk = sock.recv(65536)
            except (ConnectionResetError, TimeoutError):
                break
            if not chunk:
                break
            received += chunk
        return received


def request(body: bytes, *, key: str = API_KEY, extra: bytes = b"", length: bool = True) -> bytes:
    head = (
        b"POST /mcp HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        b"Accept: application/json, text/event-stream\r\nMcp-Protocol-Version: 2026-07-28\r\n"
        b"Mcp-Method: tools/call\r\nMcp-Name: kit_divide\r\nAuthorization: Bearer " + key.encode() + b"\r\n" + extra
    )
    return head + (b"Content-Length: %d\r\n" % len(body) if length else b"") + b"\r\n" + body


async def test_framing_tricks_sizes_and_pipelining_fail_closed(secured: Any, task_system: TaskSystem) -> None:
    gateway = await secured(policy=POLICY, gateway={"max_body_bytes": 4096, "body_timeout_s": 2})
    body = RawMcp(gateway.url, MODERN).call_body(FORBIDDEN, {"a": 1, "b": 2})
    port = gateway.port
    loop = asyncio.get_running_loop()

    async def send(data: bytes, until: bytes = b"\r\n\r\n") -> bytes:
        return await loop.run_in_executor(None, lambda: exchange(port, data, until=until))

    async with spying(task_system, FORBIDDEN) as forbidden:
        # Two Content-Lengths, or Content-Length beside chunked: the parser refuses the framing.
        for extra in (b"Content-Length: 5\r\n", b"Transfer-Encoding: chunked\r\n"):
            answer = await send(request(body, extra=extra))
            assert answer.startswith(b"HTTP/1.1 400") or answer == b"", answer[:200]
        # Chunked, in odd pieces with an extension and a trailer: one body, judged as any other.
        chunked = b"".join(
            b"%x;ext=1\r\n%s\r\n" % (len(body[i : i + 7]), body[i : i + 7]) for i in range(0, len(body), 7)
        )
        answer = await send(
            request(chunked + b"0\r\nX-Trailer: 1\r\n\r\n", extra=b"Transfer-Encoding: chunked\r\n", length=False)
        )
        assert answer.startswith(b"HTTP/1.1 403"), answer[:200]
        # At the size limit the body is judged; one byte past it is 413, also when the client
        # waits for a 100 Continue (nothing is read for it).
        padded = body[:-1] + b',"pad":"' + b"x" * (4096 - len(body) - 9) + b'"}'
        assert len(padded) == 4096
        assert (await send(request(padded), until=b"}}")).startswith(b"HTTP/1.1 403")
        over = padded[:-2] + b'x"}'
        assert (await send(request(over))).startswith(b"HTTP/1.1 413")
        expecting = request(over, extra=b"Expect: 100-continue\r\n")
        answer = await send(expecting[: expecting.index(b"\r\n\r\n") + 4])
        assert answer.startswith(b"HTTP/1.1 100") or answer.startswith(b"HTTP/1.1 413"), answer[:200]
        # Pipelined: three requests in one write, each answered, in order, each judged on its own.
        allowed = RawMcp(gateway.url, MODERN).call_body(ALLOWED, {"name": "x"})
        pipelined = request(body) + request(b"{") + request(allowed).replace(b"kit_divide", ALLOWED.encode())
        answer = await send(pipelined, until=b'"text":"x"')
        statuses = re.findall(rb"HTTP/1\.1 (\d{3}) ", answer)
        assert statuses == [b"403", b"400", b"200"], answer
    assert forbidden == []


async def test_odd_verbs_paths_and_header_bytes_never_yield_a_500(secured: Any, issuer: Issuer) -> None:
    gateway = await secured(policy=POLICY)
    alice = issuer.token(sub="alice")
    session_id = (await open_session(gateway.url, alice)).headers["mcp-session-id"]
    as_alice = {**ACCEPT, "Authorization": f"Bearer {alice}", "Mcp-Protocol-Version": LEGACY}
    async with httpx2.AsyncClient(timeout=10) as http:
        for verb in ("PUT", "PATCH", "OPTIONS", "HEAD", "TRACE"):
            for headers in (as_alice, {**as_alice, "Mcp-Session-Id": session_id}):
                well_formed(await http.request(verb, gateway.url, headers=headers))
        for url in (gateway.url + "/", gateway.url + "?x=1", gateway.url.replace("/mcp", "/MCP")):
            well_formed(await http.post(url, json=envelope("ping"), headers=as_alice))
        for value in (b"\xff\xfe", b"x" * 4000, b"../../etc", b"a b"):
            headers = [*as_alice.items(), ("Mcp-Session-Id", value)]
            well_formed(await http.post(gateway.url, json=envelope("ping"), headers=headers))
            headers = [*as_alice.items(), ("Mcp-Protocol-Version", value)]
            well_formed(await http.post(gateway.url, json=envelope("ping"), headers=headers))
        headers = [*as_alice.items(), ("Authorization", b"Bearer \xff\xfe")]
        well_formed(await http.post(gateway.url, json=envelope("ping"), headers=headers[1:]))
        # A GET stream while one is open on the same session is the SDK's 409, not a crash.
        get = {**as_alice, "Mcp-Session-Id": session_id}
        async with http.stream("GET", gateway.url, headers=get) as first:
            assert first.status_code == 200
            second = await http.get(gateway.url, headers=get)
            well_formed(second)
            assert second.status_code == 409, second.text
