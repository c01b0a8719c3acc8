"""The front door: every HTTP request to the MCP endpoint passes here, and every decision about it is made here.

In order:
1. **Protected-resource metadata** (RFC 9728) is served at ``/.well-known/oauth-protected-resource``
   and its path-suffixed forms (for the configured resource's path and the gateway's own path).
2. **Authentication** (``gateway.auth``): no or bad credentials → 401 with
   ``WWW-Authenticate: Bearer resource_metadata="…", scope="…"`` (plus ``error="invalid_token"``
   and a description when a credential was sent); a token without the endpoint's required scopes
   → 403 ``error="insufficient_scope"``; keys unreachable → 503. The principal goes into the ASGI
   scope (``gateway.principals``) for everything behind.
3. **Session ownership** (``gateway.sessions``): a request naming a 2025 session another
   principal opened → 404 ``Session not found``, for every verb.
4. **One reading of the body** (``gateway.inbound``): a POST declared anything but
   ``application/json`` is refused (415) unread; a POST body is read once, within the
   endpoint's size limit (413 beyond it, as the SDK answers; its deadline is the connection's,
   ``gateway.connections``), and parsed once; a body the parser refuses is
   answered with its JSON-RPC error (-32700, -32600, -32602) here and goes no further; so is a
   2026 ``tasks/get|update|cancel`` whose ``Mcp-Name`` is missing, repeated or names another task
   than ``params.taskId`` (-32020, ``inbound.check_task_name``; the SDK checks the other methods').
5. **Authorization** (``gateway.policy``) from that reading: a tool the principal may not use →
   403 ``insufficient_scope`` naming the scopes that would grant it; a resource, template or
   prompt it may not use (``resources/read``, ``subscribe``, ``unsubscribe``, ``prompts/get``,
   ``completion/complete``), or one nobody serves → 403; a task (either era's form,
   or a ``tasks/*`` method) from a principal without task access → 403.
6. **Session caps**: an ``initialize`` opening a session beyond the principal's open-session or
   per-minute share → 429.
7. **Waiting requests** (``max_waiting_per_principal``): a GET stream, ``subscriptions/listen``
   or ``tasks/result`` beyond the principal's share of requests held open → 429.
8. **Rate limits** (``gateway.ratelimit``) on ``tools/call`` (and ``resources/read``, ``prompts/get``,
   ``completion/complete``, per principal only): per principal and per (principal,
   tool), shared by every replica → 429 with ``Retry-After``. A request refused as malformed
   (step 4, or a repeated routing header) counts against the per-principal limit too.
Each refusal is one audit event (``on_refusal``). What passes goes on with its ``Inbound`` in the
scope (``INBOUND_KEY``) for the hot path, and with the *canonical* body — the reading, encoded
again — for the SDK, which so parses exactly what was judged. Other paths (``/healthz``,
``/readyz``, ``/metrics``) pass untouched.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any, Final, Protocol

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
from gateway.inbound import (
    INBOUND_KEY,
    INVALID_REQUEST,
    TOOLS_CALL,
    Inbound,
    ParseRejected,
    check_content_type,
    check_task_name,
    parse,
)
from gateway.policy import Policy
from gateway.principals import ANONYMOUS, SCOPE_KEY, Principal
from gateway.ratelimit import retry_after_header
from gateway.sessions import SessionOwners
from gateway.surface_mirror import SurfaceMirror
from schemas.codec import encode
from schemas.config import AuthSettings

log = structlog.get_logger(__name__)

_JSON: Final = (b"content-type", b"application/json")
_VERSION_HEADER: Final = b"mcp-protocol-version"
_SESSION_HEADER: Final = b"mcp-session-id"
_NAME_HEADER: Final = b"mcp-name"
_CONTENT_TYPE_HEADER: Final = b"content-type"
_ROUTING_HEADERS: Final = {
    _VERSION_HEADER: "MCP-Protocol-Version",
    _SESSION_HEADER: "Mcp-Session-Id",
    _CONTENT_TYPE_HEADER: "Content-Type",
}
_CREDENTIAL_HEADERS: Final = frozenset({b"authorization", API_KEY_HEADER.encode()})
_RUNS_A_GUEST: Final = frozenset({TOOLS_CALL, "resources/read", "prompts/get", "completion/complete"})
"""Methods rate limits count: each runs a guest on a worker."""
_WAITING_METHODS: Final = frozenset({"tasks/result", "subscriptions/listen"})
"""POSTs answered only when something happens (a task ends, a list changes), not when computed."""


class RateLimitCheck(Protocol):
    """What the front door asks of a rate limiter (``gateway.ratelimit``)."""

    async def check(self, principal: str, tool: str | None) -> float | None:
        """``None`` when the request may go on, else seconds until one would be allowed."""
        ...


@dataclass(frozen=True, slots=True)
class Refusal:
    """One request the front door turned away: what the client is told and the audit trail records."""

    reason: str
    """``missing_token``, ``invalid_token``, ``expired``, … (``gateway.auth.AuthFailure``),
    ``forbidden_tool``, ``forbidden_tasks``, ``rate_limited``, ``too_many_sessions``,
    ``foreign_session`` (another principal's session id), ``too_many_waiting`` (requests held
    open) or ``malformed_request`` (the body)."""
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
        """The RFC 6750 ``error`` code of a 400/401/403/503: none when no credential was sent."""
        if self.reason == "missing_token":
            return None
        if self.status == 400:
            return "invalid_request"
        return "insufficient_scope" if self.status == 403 else "invalid_token"


OnRefusal = Callable[[Refusal], None]


class FrontDoor:
    """ASGI middleware in front of the gateway app (the hot path or the Starlette app)."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        path: str,
        max_body_bytes: int,
        auth: AuthSettings | None,
        sessions: SessionOwners,
        rate_limit: RateLimitCheck | None = None,
        on_refusal: OnRefusal | None = None,
        max_waiting_per_principal: int | None = None,
        surfaces: SurfaceMirror | None = None,
    ) -> None:
        self.app = app
        self.surfaces = surfaces if surfaces is not None else SurfaceMirror()
        """Who serves each resource URI and template: what policy judges a resource request by."""
        self._path = path
        self._max_body_bytes = max_body_bytes
        self._auth = auth
        self._authenticator = Authenticator(auth) if auth is not None else None
        self.policy = Policy(auth.policy if auth is not None else None)
        self.sessions = sessions
        self.rate_limit = rate_limit
        self.on_refusal = on_refusal
        self._max_waiting = max_waiting_per_principal
        self._waiting: dict[str, int] = {}
        """Principal → its requests held open now (only those that wait: see ``_WAITING_METHODS``)."""
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
        try:
            protocol_version, session_id, content_type = _routing_headers(scope)
        except ParseRejected as rejected:
            await self._reject_malformed(scope, send, principal, rejected)
            return
        if session_id is not None:
            owner = self.sessions.owner(session_id)
            if owner is not None and owner != principal.subject:
                # Word for word the SDK's answer for a session that does not exist.
                self._record(scope, Refusal("foreign_session", 404, principal.subject, auth_method=principal.method))
                await _respond(send, 404, _SESSION_NOT_FOUND, [_JSON])
                return
        if scope["method"] != "POST":
            if scope["method"] == "GET":  # the 2025 era's stream: held open for as long as the client likes
                await self._waited(scope, receive, send, principal, None)
            else:
                await self.app(scope, receive, send)
            return
        try:
            check_content_type(content_type)
        except ParseRejected as rejected:
            await self._reject_malformed(scope, send, principal, rejected)
            return
        body = await self._read_body(receive, send)
        if body is None:
            return
        try:
            inbound = parse(body, protocol_version, session_id)
            check_task_name(inbound, [v.decode("latin-1") for k, v in scope["headers"] if k == _NAME_HEADER])
        except ParseRejected as rejected:
            await self._reject_malformed(scope, send, principal, rejected)
            return
        refusal = await self._judge(principal, inbound)
        if refusal is not None:
            await self._refuse(scope, send, replace(refusal, auth_method=principal.method))
            return
        scope[INBOUND_KEY] = inbound
        if inbound.opens_session:
            send = self._binding_session(send, principal.subject)
        if inbound.method in _WAITING_METHODS:
            await self._waited(scope, _replay(inbound, receive), send, principal, inbound.method)
        else:
            await self.app(scope, _replay(inbound, receive), send)

    async def _waited(
        self, scope: Scope, receive: Receive, send: Send, principal: Principal, method: str | None
    ) -> None:
        """Serve a request that waits (a stream, a result not there yet), counted against the
        principal's share of requests held open; 429 past it."""
        if self._max_waiting is None:
            await self.app(scope, receive, send)
            return
        subject = principal.subject
        held = self._waiting.get(subject, 0)
        if held >= self._max_waiting:
            description = f"{held} requests held open already; close one first"
            refusal = Refusal("too_many_waiting", 429, subject, method, description=description, retry_after_s=1.0)
            await self._refuse(scope, send, replace(refusal, auth_method=principal.method))
            return
        self._waiting[subject] = held + 1
        try:
            await self.app(scope, receive, send)
        finally:
            left = self._waiting[subject] - 1
            if left:
                self._waiting[subject] = left
            else:
                del self._waiting[subject]

    async def _read_body(self, receive: Receive, send: Send) -> bytes | None:
        """The whole body, or ``None`` once it has been refused (413 over the limit) or the client left.

        A body that never completes is the connection's to end (``gateway.connections``: 400 after
        ``body_timeout_s``); ``receive`` then says the client disconnected.
        """
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return None  # the client went away (or was timed out)
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self._max_body_bytes:
                await _respond(send, 413, b"Request body too large", [(b"content-type", b"text/plain")])
                return None
            chunks.append(chunk)
            if not message.get("more_body"):
                return chunks[0] if len(chunks) == 1 else b"".join(chunks)

    async def _judge(self, principal: Principal, inbound: Inbound) -> Refusal | None:
        """Why this POST must be refused (policy, tasks, sessions, then rate limits), or ``None``."""
        method = inbound.method
        tool = inbound.tool
        if self.policy.restricts:
            grant = self.policy.grant(principal)
            if tool is not None and not grant.allows(tool):
                return Refusal(
                    "forbidden_tool",
                    403,
                    principal.subject,
                    method,
                    tool,
                    description=f"not allowed to call tool {tool!r}",
                    scope=" ".join(self.policy.scopes_granting(tool)),
                )
            for target in inbound.surface_targets:
                if grant.allows_surface(target.kind, target.name, self.surfaces):
                    continue
                return Refusal(
                    "forbidden_" + target.kind,
                    403,
                    principal.subject,
                    method,
                    target.name if target.kind == "prompt" else None,
                    description=f"not allowed to use {target.kind} {target.name[:200]!r}",
                )
            if not grant.tasks and inbound.uses_tasks:
                return Refusal(
                    "forbidden_tasks", 403, principal.subject, method, tool, description="not allowed to use tasks"
                )
        if inbound.opens_session:
            refused = self.sessions.admit(principal.subject)
            if refused is not None:
                return Refusal("too_many_sessions", 429, principal.subject, method, description=refused)
        if self.rate_limit is not None and method in _RUNS_A_GUEST and inbound.kind == "request":
            # A read, get or completion runs a guest like a call: it counts against per_principal.
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

    def _binding_session(self, send: Send, principal: str) -> Send:
        """``send`` that binds the session an ``initialize`` answer opens to ``principal``."""

        async def binding(message: Message) -> None:
            if message["type"] == "http.response.start" and message["status"] < 400:
                for name, value in message.get("headers", ()):
                    if name.lower() == _SESSION_HEADER:
                        self.sessions.bind(value.decode("latin-1"), principal)
            await send(message)

        return binding

    async def _refuse_auth(self, scope: Scope, send: Send, failure: AuthFailure) -> None:
        refusal = Refusal(
            failure.reason,
            failure.status,
            failure.subject,
            description=failure.description,
            scope=" ".join(sorted(self._authenticator.required_scopes)) if self._authenticator else "",
        )
        await self._refuse(scope, send, refusal)

    async def _reject_malformed(self, scope: Scope, send: Send, principal: Principal, rejected: ParseRejected) -> None:
        """Answer a request the parser refused with its JSON-RPC error (an audit event too).

        A refused body still cost a read, a parse and an audit event: it counts against the
        principal's ``per_principal`` limit like a call, so a flood of them ends in 429s.
        """
        if self.rate_limit is not None:
            retry_after_s = await self.rate_limit.check(principal.subject, None)
            if retry_after_s is not None:
                refusal = Refusal(
                    "rate_limited",
                    429,
                    principal.subject,
                    description=f"too many requests; retry in {retry_after_header(retry_after_s)} s",
                    retry_after_s=retry_after_s,
                    auth_method=principal.method,
                )
                await self._refuse(scope, send, refusal)
                return
        malformed = Refusal(
            "malformed_request",
            rejected.status,
            principal.subject,
            description=rejected.message,
            auth_method=principal.method,
        )
        self._record(scope, malformed)
        body = _jsonrpc_error(rejected.request_id, rejected.code, rejected.message)
        await _respond(send, rejected.status, body, [_JSON])

    def _record(self, scope: Scope, refusal: Refusal) -> Refusal:
        """Log a refusal and put it on the audit trail; the refusal with its remote address."""
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
        return refusal

    async def _refuse(self, scope: Scope, send: Send, refusal: Refusal) -> None:
        refusal = self._record(scope, refusal)
        headers: list[tuple[bytes, bytes]] = [_JSON]
        if refusal.status == 429:
            headers.append((b"retry-after", retry_after_header(refusal.retry_after_s or 1).encode()))
            body = {"error": refusal.reason, "error_description": refusal.description}
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
    """The request's ``authorization`` or ``x-api-key`` header: all that authentication reads.

    At most one credential line (RFC 6750 §2: one method per request): of two — the same header
    twice, or both headers — a reader of the other one (a proxy's log, its rate limit) would see
    another principal than the one judged here.

    Raises:
        AuthFailure: more than one credential header (400 ``invalid_request``).
    """
    found: dict[str, str] = {}
    for raw, value in scope["headers"]:
        name = raw.lower()
        if name in _CREDENTIAL_HEADERS:
            if found:
                raise AuthFailure("invalid_request", _TWO_CREDENTIALS, 400)
            found[name.decode("latin-1")] = value.decode("latin-1")
    return found


_TWO_CREDENTIALS: Final = "send one credential: a single Authorization or X-API-Key header"


def _routing_headers(scope: Scope) -> tuple[str | None, str | None, str | None]:
    """``MCP-Protocol-Version``, ``Mcp-Session-Id`` and ``Content-Type``, each at most once.

    The SDK reads the *first* of a repeated header (Starlette's ``headers.get``); a reader of the
    last could judge one session, era or media type while the SDK serves another. So none may repeat.

    Raises:
        ParseRejected: one of them is sent twice.
    """
    found: dict[bytes, str] = {}
    for name, value in scope["headers"]:
        if name in _ROUTING_HEADERS:
            if name in found:
                raise ParseRejected(INVALID_REQUEST, f"Invalid Request: {_ROUTING_HEADERS[name]} sent more than once")
            found[name] = value.decode("latin-1")
    return found.get(_VERSION_HEADER), found.get(_SESSION_HEADER), found.get(_CONTENT_TYPE_HEADER)


def _jsonrpc_error(request_id: Any, code: int, message: str) -> bytes:
    return encode({"jsonrpc": "2.0", "id": request_id, "error": {"code": code, "message": message}})


_SESSION_NOT_FOUND: Final = _jsonrpc_error(None, INVALID_REQUEST, "Session not found")


def _replay(inbound: Inbound, receive: Receive) -> Receive:
    """A ``receive`` that yields the canonical body once (encoded only if read), then the connection's messages."""
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if sent:
            return await receive()
        sent = True
        return {"type": "http.request", "body": inbound.canonical, "more_body": False}

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
