"""What authentication costs on the hot path: the same request through the gateway's ASGI app
with auth off, and with each way of authenticating, measured in the same run.

The request is a stateless 2026-07-28 ``tools/list`` (10 tools), served by the lean hot path
(``gateway.hotpath``) without NATS, so the figures are the gateway's own work per request and
nothing else: the front door (``gateway.front_door``) parsing the credential, checking it,
and — with a policy — parsing the body and filtering the list. The apps are built by
``gateway.app.build_app`` exactly as deployed; requests go straight into the ASGI callable (no
sockets: HTTP parsing costs the same with or without auth).

Cases:
- **off**: no ``[auth]`` (the baseline; ``toolbus up`` on loopback);
- **api-key**: a static key (one SHA-256 and a dict lookup);
- **jwt**: an RS256 token, verified once and then remembered until it expires (a client sends
  the same token on every request);
- **jwt, every request verified**: the remembered tokens are forgotten before each request —
  the cost of a token seen for the first time (RSA-2048 signature check);
- **jwt + policy**: a ``[[auth.policy]]`` rule, so the body is parsed and the list filtered.

Run: ``.venv/bin/python -m bench.auth_cost``
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import rsa

from bench.tools_list import descriptor
from gateway.app import build_app, gateway_state
from gateway.front_door import FrontDoor
from schemas.config import load_settings

TOOLS = 10
NUMBER = 400
REPEAT = 11
ISSUER = "https://id.bench.test"
RESOURCE = "http://127.0.0.1:3001/mcp"
API_KEY = "tbk_bench_0123456789abcdef0123456789"
_META = {"io.modelcontextprotocol/protocolVersion": "2026-07-28", "io.modelcontextprotocol/clientCapabilities": {}}
BODY = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {"_meta": _META}}).encode()


def _headers(credential: str | None) -> list[tuple[bytes, bytes]]:
    headers = [
        (b"host", b"127.0.0.1:3001"),
        (b"content-type", b"application/json"),
        (b"accept", b"application/json, text/event-stream"),
        (b"mcp-protocol-version", b"2026-07-28"),
        (b"mcp-method", b"tools/list"),
    ]
    if credential is not None:
        headers.append((b"authorization", f"Bearer {credential}".encode()))
    return headers


def _settings(directory: Path, key: rsa.RSAPrivateKey, *, auth: bool, policy: bool = False) -> Any:
    if not auth:
        return load_settings(None)
    jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key()))
    jwks = directory / "jwks.json"
    jwks.write_text(json.dumps({"keys": [{**jwk, "kid": "k1", "alg": "RS256"}]}))
    section: dict[str, Any] = {
        "resource": RESOURCE,
        "oauth": {"issuer": ISSUER, "jwks_file": str(jwks), "required_scopes": ["mcp:tools"]},
        "api_keys": {"bench": {"sha256": hashlib.sha256(API_KEY.encode()).hexdigest(), "scopes": ["mcp:tools"]}},
    }
    if policy:
        section["policy"] = [{"scopes": ["mcp:tools"], "tools": ["bench_tool_*"]}]
    return load_settings(None, auth=section)


async def _per_request_us(app: Any, credential: str | None, before: Callable[[], None] | None = None) -> float:
    """Median µs per request of ``REPEAT`` runs of ``NUMBER`` requests (each must answer 200)."""
    status: list[int] = []

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            status.append(message["status"])

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": BODY, "more_body": False}

    scope = {
        "type": "http",
        "method": "POST",
        "path": "/mcp",
        "raw_path": b"/mcp",
        "query_string": b"",
        "headers": _headers(credential),
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 3001),
        "scheme": "http",
        "http_version": "1.1",
        "root_path": "",
    }
    runs = []
    for _ in range(REPEAT):
        started = time.perf_counter()
        for _ in range(NUMBER):
            if before is not None:
                before()
            await app(dict(scope), receive, send)
        runs.append((time.perf_counter() - started) / NUMBER * 1e6)
    if set(status) != {200}:
        raise RuntimeError(f"the bench request was not answered 200: {sorted(set(status))}")
    return statistics.median(runs)


def _app(settings: Any) -> Any:
    app = build_app(settings)
    gateway_state(app).catalogue.replace(descriptor(i) for i in range(TOOLS))
    return app


async def main() -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    now = int(time.time())
    token = jwt.encode(
        {"iss": ISSUER, "aud": RESOURCE, "sub": "bench", "scope": "mcp:tools", "iat": now, "exp": now + 3600},
        key,
        algorithm="RS256",
        headers={"kid": "k1"},
    )
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        off = _app(_settings(directory, key, auth=False))
        secured = _app(_settings(directory, key, auth=True))
        with_policy = _app(_settings(directory, key, auth=True, policy=True))
        front_door = gateway_state(secured).front_door
        assert isinstance(front_door, FrontDoor)
        forget = front_door._authenticator._verified.clear  # type: ignore[union-attr]
        cases = [
            ("off (baseline)", off, None, None),
            ("api-key", secured, API_KEY, None),
            ("jwt (verified once, remembered)", secured, token, None),
            ("jwt, verified on every request", secured, token, forget),
            ("jwt + policy (body parsed, list filtered)", with_policy, token, None),
        ]
        # Interleave the cases round by round, so machine noise hits them alike.
        results: dict[str, list[float]] = {name: [] for name, *_ in cases}
        for _ in range(3):
            for name, app, credential, before in cases:
                results[name].append(await _per_request_us(app, credential, before))
    baseline = statistics.median(results["off (baseline)"])
    print(f"2026-07-28 tools/list ({TOOLS} tools) through the gateway's ASGI app, µs per request (median):")
    for name, runs in results.items():
        value = statistics.median(runs)
        extra = "" if name.startswith("off") else f"   +{value - baseline:6.1f} µs   x{value / baseline:4.2f}"
        print(f"  {name:44s} {value:7.1f} µs{extra}")


if __name__ == "__main__":
    asyncio.run(main())
