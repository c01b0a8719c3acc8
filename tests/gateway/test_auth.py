"""Authentication and authorization at the gateway, against a real deployment.

Real parts: nats-server with JetStream, the registry, a worker serving the testkit component,
the gateway over HTTP, and the mcp SDK's client in both eras. The one fake is the OAuth
authorization server (tests/gateway/auth_kit.py); ``secured`` starts gateways (conftest.py).
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx2
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from mcp.shared.exceptions import MCPError

from bus.principal import PrincipalSigner
from bus.subjects import Header
from tests.gateway.auth_kit import (
    API_KEY,
    ISSUER,
    METADATA_URL,
    POLICY,
    PRINCIPAL_KEY,
    RESOURCE,
    Issuer,
    call_status,
    client,
    post_initialize,
)
from tests.gateway.mcp_tasks import create_legacy, legacy_get, legacy_list
from tests.gateway.responders import TaskSystem, audit_events, spying

# -- 401 and 403: the exact headers ---------------------------------------------------------------


async def test_a_request_without_a_token_gets_401_pointing_at_the_metadata(secured: Any) -> None:
    gateway = await secured()
    response = await post_initialize(gateway.url, {})
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == f'Bearer resource_metadata="{METADATA_URL}", scope="mcp:tools"'


@pytest.mark.parametrize(
    ("case", "description"),
    [
        ("bad_signature", "the token's signature does not verify"),
        ("expired", "the token has expired"),
        ("wrong_audience", "the token is not meant for this resource (audience)"),
        ("wrong_issuer", "the token was not issued by the trusted authorization server"),
        ("not_a_jwt", "the bearer token is not a JWT or a known API key"),
    ],
)
async def test_a_bad_token_gets_401_invalid_token(secured: Any, issuer: Issuer, case: str, description: str) -> None:
    gateway = await secured()
    forged_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    token = {
        "bad_signature": lambda: issuer.token(signing_key=forged_key),
        "expired": lambda: issuer.token(exp=int(time.time()) - 3600, iat=int(time.time()) - 7200),
        "wrong_audience": lambda: issuer.token(aud="https://other.example.test/mcp"),
        "wrong_issuer": lambda: issuer.token(iss="https://evil.example.test"),
        "not_a_jwt": lambda: "not-a-token",
    }[case]()
    response = await post_initialize(gateway.url, {"Authorization": f"Bearer {token}"})
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == (
        f'Bearer resource_metadata="{METADATA_URL}", scope="mcp:tools", '
        f'error="invalid_token", error_description="{description}"'
    )
    assert response.json() == {"error": "invalid_token", "error_description": description}


async def test_a_token_without_the_required_scope_gets_403_insufficient_scope(secured: Any, issuer: Issuer) -> None:
    gateway = await secured()
    response = await post_initialize(gateway.url, {"Authorization": f"Bearer {issuer.token(scope='profile')}"})
    assert response.status_code == 403
    assert response.headers["www-authenticate"] == (
        f'Bearer resource_metadata="{METADATA_URL}", scope="mcp:tools", '
        'error="insufficient_scope", error_description="the token lacks the scope mcp:tools"'
    )


async def test_the_protected_resource_metadata_is_served_at_both_well_known_paths(secured: Any) -> None:
    gateway = await secured(scopes_supported=["mcp:tools", "kit:math"], resource_name="toolbus test")
    async with httpx2.AsyncClient() as http:
        for path in ("/.well-known/oauth-protected-resource", "/.well-known/oauth-protected-resource/mcp"):
            response = await http.get(gateway.base_url + path)
            assert response.status_code == 200, path
            assert response.json() == {
                "resource": RESOURCE,
                "authorization_servers": [ISSUER],
                "bearer_methods_supported": ["header"],
                "scopes_supported": ["mcp:tools", "kit:math"],
                "resource_name": "toolbus test",
            }
        # Probes stay open: a load balancer has no token.
        assert (await http.get(gateway.base_url + "/healthz")).status_code == 200


# -- valid credentials: real MCP clients in both eras ---------------------------------------------


@pytest.mark.parametrize("mode", ["legacy", "auto"])
async def test_a_valid_token_lists_and_calls_tools(secured: Any, issuer: Issuer, mode: str) -> None:
    gateway = await secured()
    async with client(gateway.url, issuer.token(), mode=mode) as mcp:
        tools = {t.name for t in (await mcp.list_tools()).tools}
        assert {"kit_add", "kit_greet"} <= tools
        result = await mcp.call_tool("kit_add", {"a": 2, "b": 3})
        assert result.structured_content == {"result": 5} or "5" in json.dumps(result.model_dump(mode="json"))


@pytest.mark.parametrize("api_key_header", [False, True])
async def test_an_api_key_authenticates_as_a_bearer_token_or_x_api_key(secured: Any, api_key_header: bool) -> None:
    gateway = await secured()
    async with client(gateway.url, API_KEY, api_key_header=api_key_header) as mcp:
        result = await mcp.call_tool("kit_add", {"a": 40, "b": 2})
        assert not result.is_error
    response = await post_initialize(gateway.url, {"X-API-Key": API_KEY + "x"})
    assert response.status_code == 401
    assert 'error="invalid_token"' in response.headers["www-authenticate"]


async def test_the_worker_receives_the_principal_signed_by_the_gateway(
    secured: Any, issuer: Issuer, task_system: TaskSystem
) -> None:
    gateway = await secured()
    async with spying(task_system, "kit_add") as seen, client(gateway.url, issuer.token(sub="bob")) as mcp:
        await mcp.call_tool("kit_add", {"a": 1, "b": 1})
    call = seen[-1]
    headers = call.headers or {}
    assert headers[Header.PRINCIPAL] == f"jwt:{ISSUER}#bob"
    signer = PrincipalSigner(PRINCIPAL_KEY)
    assert signer.verified(headers, call.subject, call.data) == f"jwt:{ISSUER}#bob"
    # The signature binds the principal to this request: on another request id, or claiming
    # another principal, it proves nothing (tests/bus/test_principal.py tries the rest).
    assert signer.verified({**headers, Header.REQUEST_ID: "another-request"}, call.subject, call.data) is None
    assert signer.verified({**headers, Header.PRINCIPAL: "admin"}, call.subject, call.data) is None


# -- authorization: what each principal may see and call ------------------------------------------


@pytest.mark.parametrize("mode", ["legacy", "auto"])
async def test_tools_list_shows_each_principal_only_its_tools(secured: Any, issuer: Issuer, mode: str) -> None:
    gateway = await secured(policy=POLICY)
    async with client(gateway.url, issuer.token(sub="alice", scope="mcp:tools kit:math"), mode=mode) as mcp:
        assert {t.name for t in (await mcp.list_tools()).tools} == {"kit_add", "kit_divide"}
    async with client(gateway.url, API_KEY, mode=mode) as mcp:
        assert {t.name for t in (await mcp.list_tools()).tools} == {"kit_greet"}
    async with client(gateway.url, issuer.token(sub="carol", group="ops"), mode=mode) as mcp:
        everything = {t.name for t in (await mcp.list_tools()).tools}
        assert {"kit_add", "kit_greet", "kit_burn", "kit_divide"} <= everything
    async with client(gateway.url, issuer.token(sub="dave"), mode=mode) as mcp:
        assert (await mcp.list_tools()).tools == []


async def test_tools_list_pages_over_the_visible_tools_only(secured: Any, issuer: Issuer) -> None:
    policy = [{"scopes": ["mcp:tools"], "tools": ["kit_add", "kit_greet", "kit_burn"]}]
    gateway = await secured(gateway={"page_size": 1}, policy=policy)
    async with client(gateway.url, issuer.token(), mode="auto") as mcp:
        names: list[str] = []
        cursor = None
        pages = 0
        while True:
            pages += 1
            page = await mcp.list_tools(cursor=cursor)
            names += [t.name for t in page.tools]
            cursor = page.next_cursor
            if cursor is None:
                break
    assert names == ["kit_add", "kit_burn", "kit_greet"]  # in catalogue order, each once
    assert pages == 3


@pytest.mark.parametrize("mode", ["legacy", "auto"])
async def test_calling_a_tool_outside_the_policy_gets_403_with_the_scope_that_grants_it(
    secured: Any, issuer: Issuer, task_system: TaskSystem, mode: str
) -> None:
    gateway = await secured(policy=POLICY)
    token = issuer.token(sub="dave")
    async with spying(task_system, "kit_divide") as seen:
        async with client(gateway.url, token, mode=mode) as mcp:
            with pytest.raises(MCPError):  # the SDK turns any HTTP 4xx into one generic error
                await mcp.call_tool("kit_divide", {"a": 1, "b": 2})
        # Raw HTTP shows the exact answer.
        headers = {
            "Authorization": f"Bearer {token}",
            "Accept": "application/json, text/event-stream",
            "Mcp-Protocol-Version": "2026-07-28",
            "Mcp-Method": "tools/call",
            "Mcp-Name": "kit_divide",
        }
        body = {"jsonrpc": "2.0", "id": 7, "method": "tools/call", "params": {"name": "kit_divide", "arguments": {}}}
        async with httpx2.AsyncClient() as http:
            response = await http.post(gateway.url, json=body, headers=headers)
    assert response.status_code == 403
    assert response.headers["www-authenticate"] == (
        f'Bearer resource_metadata="{METADATA_URL}", scope="mcp:tools kit:math", '
        'error="insufficient_scope", error_description="not allowed to call tool \'kit_divide\'"'
    )
    assert seen == []  # nothing reached the bus


async def test_tasks_belong_to_the_principal_that_created_them(
    secured: Any, issuer: Issuer, task_system: TaskSystem
) -> None:
    gateway = await secured()
    async with client(gateway.url, issuer.token(sub="alice"), mode="legacy") as alice:
        task = await create_legacy(alice, "kit_add", {"a": 1, "b": 2})
        assert (await legacy_get(alice, task.task_id)).task_id == task.task_id
    record = await task_system.store.get(task.task_id)
    assert record.principal == f"jwt:{ISSUER}#alice"
    async with client(gateway.url, issuer.token(sub="mallory"), mode="legacy") as mallory:
        with pytest.raises(MCPError):
            await legacy_get(mallory, task.task_id)
        assert task.task_id not in {t.task_id for t in (await legacy_list(mallory)).tasks}


async def test_a_principal_without_task_access_cannot_create_tasks(secured: Any) -> None:
    gateway = await secured(policy=POLICY)
    headers = {"X-API-Key": API_KEY, "Accept": "application/json, text/event-stream"}
    body = {
        "jsonrpc": "2.0",
        "id": 3,
        "method": "tools/call",
        "params": {"name": "kit_greet", "arguments": {"name": "x"}, "task": {"ttl": 1000}},
    }
    async with httpx2.AsyncClient() as http:
        response = await http.post(gateway.url, json=body, headers=headers)
    assert response.status_code == 403
    assert response.json()["error_description"] == "not allowed to use tasks"


# -- bad input at the front door -------------------------------------------------------------------


@pytest.mark.parametrize("authenticated", [False, True])
async def test_an_oversized_body_gets_413_and_the_gateway_serves_on(
    secured: Any, start_gateway: Any, issuer: Issuer, authenticated: bool
) -> None:
    gateway = await (secured(gateway={"max_body_bytes": 4096}) if authenticated else start_gateway(max_body_bytes=4096))
    headers = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}
    if authenticated:
        headers["Authorization"] = f"Bearer {issuer.token()}"
    big = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "tools/call",
        "params": {"name": "kit_add", "arguments": {"x": "a" * 5000}},
    }
    async with httpx2.AsyncClient() as http:
        response = await http.post(gateway.url, json=big, headers=headers)
        assert response.status_code == 413
        # Streamed without a Content-Length, it is cut off at the limit all the same.
        chunks = [json.dumps(big).encode()[i : i + 1000] for i in range(0, 6000, 1000)]

        async def stream() -> AsyncIterator[bytes]:
            for chunk in chunks:
                yield chunk

        streamed = await http.post(gateway.url, content=stream(), headers=headers)
        assert streamed.status_code == 413
    response = await post_initialize(gateway.url, {k: v for k, v in headers.items() if k == "Authorization"})
    assert response.status_code == 200


async def test_malformed_json_from_an_authenticated_client_gets_the_json_rpc_parse_error(
    secured: Any, issuer: Issuer
) -> None:
    gateway = await secured(policy=POLICY)  # a policy makes the front door read the body too
    headers = {
        "Authorization": f"Bearer {issuer.token()}",
        "Accept": "application/json, text/event-stream",
        "Content-Type": "application/json",
    }
    async with httpx2.AsyncClient() as http:
        response = await http.post(gateway.url, content=b'{"jsonrpc": "2.0", "id": 1, "method": ', headers=headers)
    assert response.status_code == 400
    assert response.json()["error"]["code"] == -32700


# -- rate limits -----------------------------------------------------------------------------------


async def test_calls_over_the_limit_get_429_with_retry_after_across_two_gateways(
    secured: Any, issuer: Issuer, task_system: TaskSystem
) -> None:
    limits = {"per_tool": {"requests": 4, "per_s": 600}, "per_principal": {"requests": 50, "per_s": 600}}
    first, second = await secured(rate_limits=limits), await secured(rate_limits=limits)
    alice, bob = issuer.token(sub="alice"), issuer.token(sub="bob")
    statuses = [(await call_status(gateway, alice)).status_code for gateway in (first, second) * 4]
    # One limit for both replicas: 4 calls of kit_add per window in all (small limits lease one
    # token at a time, so the count is exact), then 429.
    assert statuses.count(200) == 4 and statuses[4:] == [429] * 4, statuses
    refused = await call_status(first, alice)
    assert refused.status_code == 429
    assert 1 <= int(refused.headers["retry-after"]) <= 600
    assert refused.json()["error"] == "rate_limited"
    # Per (principal, tool): another tool, and another principal, still have theirs.
    assert (await call_status(second, alice, "kit_divide")).status_code == 200
    assert (await call_status(first, bob)).status_code == 200
    # A real MCP client is told too (the SDK raises its generic HTTP error).
    async with client(first.url, alice) as mcp:
        with pytest.raises(MCPError):
            await mcp.call_tool("kit_add", {"a": 1, "b": 1})


async def test_every_refusal_is_an_audit_event(secured: Any, issuer: Issuer, task_system: TaskSystem) -> None:
    gateway = await secured(policy=POLICY, rate_limits={"per_tool": {"requests": 1, "per_s": 600}})
    expired = issuer.token(sub="eve", exp=int(time.time()) - 3600, iat=int(time.time()) - 7200)
    assert (await post_initialize(gateway.url, {"Authorization": f"Bearer {expired}"})).status_code == 401
    ops = issuer.token(sub="carol", group="ops")
    assert (await call_status(gateway, ops, "kit_divide")).status_code == 200
    assert (await call_status(gateway, ops, "kit_divide")).status_code == 429
    assert (await call_status(gateway, issuer.token(sub="dave"), "kit_divide")).status_code == 403
    events = await audit_events(task_system.nc, task_system.subjects, "auth", 3)
    by_reason = {body["reason"]: body for _, _, body in events}
    assert by_reason["expired"]["status"] == 401 and by_reason["expired"]["subject"] == "eve"
    assert by_reason["rate_limited"]["subject"] == f"jwt:{ISSUER}#carol"
    assert by_reason["rate_limited"]["tool"] == "kit_divide"
    assert by_reason["rate_limited"]["authMethod"] == "jwt" and by_reason["rate_limited"]["status"] == 429
    assert by_reason["forbidden_tool"]["subject"] == f"jwt:{ISSUER}#dave"
    assert by_reason["forbidden_tool"]["status"] == 403
    assert all(body["remote"].startswith("127.0.0.1:") for _, _, body in events)
