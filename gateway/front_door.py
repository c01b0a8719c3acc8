"""The front door: every HTTP request to the MCP endpoint passes here before MCP sees it.

In order:
1. **Protected-resource metadata** (RFC 9728) is served at ``/.well-known/oauth-protected-resource``
   and its path-suffixed forms (for the configured resource's path and the gateway's own path).
2. **Authentication** (``gateway.auth``): no or bad credentials → 401 with
   ``WWW-Authenticate: Bearer resource_metadata="…", scope="…"`` (plus ``error="invalid_token"``
   and a description when a credential was sent); a token without the endpoint's required scopes
   → 403 ``error="insufficient_scope"``; keys unreachable → 503. The principal goes into the ASGI
   scope (``gateway.principals``) for everything behind.
3. **Authorization** of ``tools/call`` (``gateway.policy``): a tool the principal may not use →
   403 ``insufficient_scope`` naming the scopes that would grant it; a task (``params.task``, a
   ``tasks/*`` method) from a principal without task access → 403.
4. **Rate limits** (``gateway.ratelimit``) on ``tools/call``: per principal and per (principal,
   tool), shared by every replica → 429 with ``Retry-After``.
Each refusal is one audit event (``on_refusal``). Other paths (``/healthz``, ``/readyz``,
``/metrics``) pass untouched.

A POST body is read here once, within the endpoint's size limit (413 beyond it, as the SDK
answers), and replayed as one message to the app behind, which serves it as if read itself.
Only when a decision needs the method or the tool is the body parsed.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any, Final, Protocol

import msgspec
import structlog
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway.auth import (
    API_KEY_HEADER,
    Authenticator,
    AuthFailure,
    metadata_path,
    metadata_url,
    protected_resource_metadata,
)
from gateway.policy import Policy
from gateway.principals import ANONYMOUS, SCOPE_KEY, Principal
from gateway.ratelimit import retry_after_header
from schemas.config import AuthSettings

log = structlog.get_logger(__name__)

_JSON: Final = (b"content-type", b"application/json")
_TOOLS_CALL: Final = "tools/call"
_CREDENTIAL_HEADERS: Final = frozenset({b"authorization", API_KEY_HEADER.encode()})


class RateLimit(Protocol):
    """What the front door asks of a rate limiter (``gateway.ratelimit``)."""

    async def check(self, principal: str, tool: str | None) -> float | None:
        """``None`` when the request may go on, else seconds until one would be allowed."""
        ...


@dataclass(frozen=True, slots=True)
class Refusal:
    """One request the front door turned away: what the client is told and the audit trail records."""

    reason: str
    """``missing_token``, ``invalid_token``, ``expired``, … (``gateway.auth.AuthFailure``),
    ``forbidden_tool``, ``forbidden_tasks`` or ``rate_limited``."""
    status: int
    principal: str | None
    """Who was refused: the verified subject, or what a failed credential claimed."""
    method: str | None = None
    tool: str | None = None
    remote: str | None = None
    description: str = ""
    scope: str = ""
    """For a 403: the scopes that would allow the request."""
    retry_after_s: float | None = None
    """For a 429: when to try again."""
    auth_method: str | None = None
    """How the refused principal authenticated (``jwt``, ``api-key``), when it did."""

    @property
    def error(self) -> str | None:
        """The RFC 6750 ``error`` code of a 401/403/503: none when no credential was sent."""
        if self.reason == "missing_token":
            return None
        return "insufficient_scope" if self.status == 403 else "invalid_token"


OnRefusal = Callable[[Refusal], None]


class _Envelope(msgspec.Struct):
    """The parts of a JSON-RPC message a decision needs (the rest is not decoded)."""

    method: str | None = None
    params: dict[str, Any] | None = None


_decode_one = msgspec.json.Decoder(_Envelope).decode
_decode_many = msgspec.json.Decoder(list[_Envelope]).decode


class FrontDoor:
    """ASGI middleware in front of the gateway app (the hot path or the Starlette app)."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        path: str,
        max_body_bytes: int,
        auth: AuthSettings | None,
        rate_limit: RateLimit | None = None,
        on_refusal: OnRefusal | None = None,
    ) -> None:
        self.app = app
        self._path = path
        self._max_body_bytes = max_body_bytes
        self._auth = auth
        self._authenticator = Authenticator(auth) if auth is not None else None
        self.policy = Policy(auth.policy if auth is not None else None)
        self.rate_limit = rate_limit
        self.on_refusal = on_refusal
        self._metadata: bytes | None = None
        self._metadata_paths: frozenset[str] = frozenset()
        if auth is not None:
            self._metadata = json.dumps(protected_resource_metadata(auth)).encode()
            root = "/.well-known/oauth-protected-resource"
            self._metadata_paths = frozenset({root, metadata_path(auth.resource), root + path})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope["path"]
        if path != self._path:
            if self._metadata is not None and path in self._metadata_paths and scope["method"] == "GET":
                await _respond(send, 200, self._metadata, [_JSON, (b"cache-control", b"max-age=3600")])
                return
            await self.app(scope, receive, send)
            return
        principal = ANONYMOUS
        if self._authenticator is not None:
            try:
                principal = await self._authenticator.authenticate(_credential_headers(scope))
            except AuthFailure as failure:
                await self._refuse_auth(scope, send, failure)
                return
            scope[SCOPE_KEY] = principal
        if scope["method"] != "POST" or (not self.policy.restricts and self.rate_limit is None):
            await self.app(scope, receive, send)
            return
        body = await self._read_body(receive, send)
        if body is None:
            return
        refusal = await self._judge(principal, body)
        if refusal is not None:
            await self._refuse(scope, send, replace(refusal, auth_method=principal.method))
            return
        await self.app(scope, _replay(body, receive), send)

    async def _read_body(self, receive: Receive, send: Send) -> bytes | None:
        """The whole body, or ``None`` once a 413 (over the limit) has been sent."""
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return None  # the client went away
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self._max_body_bytes:
                await _respond(send, 413, b"Request body too large", [(b"content-type", b"text/plain")])
                return None
            chunks.append(chunk)
            if not message.get("more_body"):
                return chunks[0] if len(chunks) == 1 else b"".join(chunks)

    async def _judge(self, principal: Principal, body: bytes) -> Refusal | None:
        """Why this POST must be refused (policy, then rate limits), or ``None``."""
        try:
            envelopes = _decode_many(body) if body.lstrip()[:1] == b"[" else [_decode_one(body)]
        except msgspec.DecodeError:
            envelopes = []  # not ours to judge: the app behind answers malformed JSON-RPC
        grant = self.policy.grant(principal) if self.policy.restricts else None
        for envelope in envelopes:
            method = envelope.method
            tool = _tool_of(envelope)
            if grant is not None:
                if method == _TOOLS_CALL and tool is not None and not grant.allows(tool):
                    scopes = self.policy.scopes_granting(tool)
                    return Refusal(
                        "forbidden_tool",
                        403,
                        principal.subject,
                        method,
                        tool,
                        description=f"not allowed to call tool {tool!r}",
                        scope=" ".join(scopes),
                    )
                if not grant.tasks and _is_task_request(method, envelope.params):
                    return Refusal(
                        "forbidden_tasks", 403, principal.subject, method, tool, description="not allowed to use tasks"
                    )
            if self.rate_limit is not None and method == _TOOLS_CALL:
                retry_after_s = await self.rate_limit.check(principal.subject, tool)
                if retry_after_s is not None:
                    return Refusal(
                        "rate_limited",
                        429,
                        principal.subject,
                        method,
                        tool,
                        description=f"too many calls; retry in {retry_after_header(retry_after_s)} s",
                        retry_after_s=retry_after_s,
                    )
        return None

    async def _refuse_auth(self, scope: Scope, send: Send, failure: AuthFailure) -> None:
        refusal = Refusal(
            failure.reason,
            failure.status,
            failure.subject,
            description=failure.description,
            scope=" ".join(sorted(self._authenticator.required_scopes)) if self._authenticator else "",
        )
        await self._refuse(scope, send, refusal)

    async def _refuse(self, scope: Scope, send: Send, refusal: Refusal) -> None:
        client = scope.get("client")
        refusal = replace(refusal, remote=f"{client[0]}:{client[1]}" if client else None)
        if self.on_refusal is not None:
            self.on_refusal(refusal)
        log.info(
            "request refused",
            reason=refusal.reason,
            status=refusal.status,
            principal=refusal.principal,
            tool=refusal.tool,
            remote=refusal.remote,
        )
        headers: list[tuple[bytes, bytes]] = [_JSON]
        if refusal.status == 429:
            headers.append((b"retry-after", retry_after_header(refusal.retry_after_s or 1).encode()))
            body = {"error": "rate_limited", "error_description": refusal.description}
        else:
            headers.append((b"www-authenticate", self._challenge(refusal).encode("latin-1")))
            body = {"error": refusal.error or "unauthorized", "error_description": refusal.description}
        await _respond(send, refusal.status, json.dumps(body).encode(), headers)

    def _challenge(self, refusal: Refusal) -> str:
        """``WWW-Authenticate`` (RFC 6750 §3, MCP authorization): metadata URL, scope, and why."""
        if self._auth is None:  # a policy refusal without authentication cannot happen; be safe
            return "Bearer"
        parts = [f'Bearer resource_metadata="{metadata_url(self._auth.resource)}"']
        scope = refusal.scope
        if scope:
            parts.append(f'scope="{scope}"')
        if refusal.error:
            parts.append(f'error="{refusal.error}"')
            parts.append(f'error_description="{_quoted(refusal.description)}"')
        return ", ".join(parts)


def _quoted(text: str) -> str:
    """Text safe inside an auth-param quoted string (no quotes or backslashes, ASCII only)."""
    return text.replace("\\", "").replace('"', "'").encode("ascii", "replace").decode()


def _credential_headers(scope: Scope) -> dict[str, str]:
    """The request's ``authorization`` and ``x-api-key`` headers: all that authentication reads."""
    return {
        name.decode("latin-1"): value.decode("latin-1")
        for raw, value in scope["headers"]
        if (name := raw.lower()) in _CREDENTIAL_HEADERS
    }


def _tool_of(envelope: _Envelope) -> str | None:
    if envelope.method != _TOOLS_CALL or envelope.params is None:
        return None
    name = envelope.params.get("name")
    return name if isinstance(name, str) else None


def _is_task_request(method: str | None, params: dict[str, Any] | None) -> bool:
    """A task-augmented ``tools/call`` or any ``tasks/*`` request."""
    if method is None:
        return False
    if method.startswith("tasks/"):
        return True
    return method == _TOOLS_CALL and params is not None and params.get("task") is not None


def _replay(body: bytes, receive: Receive) -> Receive:
    """A ``receive`` that yields the whole body once, then whatever the connection says next."""
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if sent:
            return await receive()
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    return replay


async def _respond(send: Send, status: int, body: bytes, headers: list[tuple[bytes, bytes]]) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [*headers, (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})
