"""Authentication kit for gateway tests: the OAuth issuer's half (a JWKS file and signed tokens),
``[auth]`` settings, an API key, a policy, and clients that send credentials (the mcp SDK's, raw HTTP).

The one fake is the OAuth authorization server, which lives outside the machine: its signing keys
are a JWKS file written here and its tokens are signed here with PyJWT, exactly as an issuer would.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx2
import jwt
from cryptography.hazmat.primitives.asymmetric import rsa
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

from tests.gateway.responders import RunningGateway

ISSUER = "https://id.example.test"
RESOURCE = "http://127.0.0.1:3001/mcp"
METADATA_URL = "http://127.0.0.1:3001/.well-known/oauth-protected-resource/mcp"
API_KEY = "tbk_4f9a0c2d7e1b48a6b3c5d9e8f7a6b5c4"
PRINCIPAL_KEY = "a-principal-key-of-enough-length"


class Issuer:
    """The authorization server's half: a signing key published as a JWKS file, and tokens."""

    def __init__(self, directory: Path) -> None:
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.kid = "key-1"
        jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(self.key.public_key()))
        self.jwks_file = directory / "jwks.json"
        self.jwks_file.write_text(json.dumps({"keys": [{**jwk, "kid": self.kid, "use": "sig", "alg": "RS256"}]}))

    def token(
        self, sub: str = "alice", scope: str = "mcp:tools", signing_key: rsa.RSAPrivateKey | None = None, **claims: Any
    ) -> str:
        """A signed access token for this resource; ``claims`` override or add to the defaults."""
        now = int(time.time())
        payload = {"iss": ISSUER, "aud": RESOURCE, "sub": sub, "scope": scope, "iat": now, "exp": now + 300, **claims}
        return jwt.encode(payload, signing_key or self.key, algorithm="RS256", headers={"kid": self.kid})


def auth_settings(issuer: Issuer, **extra: Any) -> dict[str, Any]:
    return {
        "resource": RESOURCE,
        "oauth": {"issuer": ISSUER, "jwks_file": str(issuer.jwks_file), "required_scopes": ["mcp:tools"]},
        "api_keys": {"ci-bot": {"sha256": hashlib.sha256(API_KEY.encode()).hexdigest(), "scopes": ["mcp:tools"]}},
        **extra,
    }


POLICY = [
    {"scopes": ["mcp:tools", "kit:math"], "tools": ["kit_add", "kit_divide"]},
    {"subjects": ["key:*"], "tools": ["kit_greet"], "tasks": False},
    {"claims": {"group": "ops"}, "tools": ["kit_*"]},
]


@contextlib.asynccontextmanager
async def client(
    url: str, credential: str | None, *, mode: str = "auto", api_key_header: bool = False
) -> AsyncIterator[Client]:
    """An mcp SDK client that sends ``credential`` as a bearer token (or as ``X-API-Key``)."""
    headers = {}
    if credential is not None:
        headers = {"X-API-Key": credential} if api_key_header else {"Authorization": f"Bearer {credential}"}
    async with httpx2.AsyncClient(headers=headers, timeout=30) as http:
        transport = streamable_http_client(url, http_client=http)
        async with Client(transport, mode=mode) as mcp:  # type: ignore[arg-type]
            yield mcp


async def post_initialize(url: str, headers: dict[str, str]) -> httpx2.Response:
    body = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "initialize",
        "params": {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}},
    }
    async with httpx2.AsyncClient() as http:
        return await http.post(
            url, json=body, headers={"Accept": "application/json, text/event-stream", **headers}, timeout=10
        )


async def call_status(gateway: RunningGateway, credential: str, tool: str = "kit_add") -> httpx2.Response:
    """One stateless 2026-07-28 ``tools/call`` over raw HTTP (the status and headers are the point)."""
    meta = {"io.modelcontextprotocol/protocolVersion": "2026-07-28", "io.modelcontextprotocol/clientCapabilities": {}}
    body = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "tools/call",
        "params": {"name": tool, "arguments": {"a": 1, "b": 2}, "_meta": meta},
    }
    headers = {
        "Authorization": f"Bearer {credential}",
        "Accept": "application/json, text/event-stream",
        "Mcp-Protocol-Version": "2026-07-28",
        "Mcp-Method": "tools/call",
        "Mcp-Name": tool,
    }
    async with httpx2.AsyncClient() as http:
        return await http.post(gateway.url, json=body, headers=headers, timeout=30)
