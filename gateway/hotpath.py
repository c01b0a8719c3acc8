"""The lean hot path: ``tools/call`` and ``tools/list`` answered without the SDK's per-request machinery.

Profiling showed the mcp SDK spends most of a call in its own plumbing (task groups, memory
streams, pydantic round trips, SSE framing). This ASGI layer serves the two hot methods
directly — stateless 2026-07-28 requests, and 2025-era requests on a session the SDK already
established — and hands everything else to the SDK.

**Defined by inclusion**: it serves exactly the requests it fully validates, and nothing else.
It reads the front door's one parse of the body (``gateway.inbound.Inbound``, never the bytes)
and serves a request only when all of these hold:
- a JSON-RPC request (not a notification or a response) for ``tools/call`` or ``tools/list``;
- the SDK's own transport checks pass (``TransportSecurityMiddleware``, ``check_accept_headers``);
- its params are known keys of the right types, with no progress token and no log level
  (so no ``requestState`` or ``inputResponses``), for a tool whose guest cannot ask its client
  (``ToolDescriptor.asks``: questions are relayed by the SDK path, ``gateway.askers``);
- 2026-07-28: ``Mcp-Method`` names a hot method, no ``Mcp-Param-*`` header, no duplicated
  routing header, no task requested, a tool whose schema declares no ``x-mcp-header`` (the SDK
  checks those headers against the body: 400 / -32020), and ``classify_inbound_request`` accepts
  the envelope;
- 2025-11-25: a live session (whose owner the front door has checked) that asked for no logs.
Anything else — other methods, notifications, every rejection, progress and logs to relay, tasks
(``gateway.task_frontend``) — is handed to the SDK with the canonical body, so the SDK produces every
rejection itself. Results go through the same ``ToolService`` as the SDK handlers. The SDK's
private names this needs are in ``gateway.sdk_adapter``.
The one visible difference: a 2025-era answer is ``application/json`` where the SDK's
session transport would frame the same JSON-RPC message as an SSE event. The 2025-11-25
transport lets the server choose either, and every client must accept both.

Cancelling a call served here stops its worker as it does on the SDK path (``gateway.calls``
publishes the cancel message when the call is cancelled):
- 2025 era: a ``notifications/cancelled`` for it (which still goes on to the SDK, for its 202)
  interrupts the call; it is answered ``-32800 Request cancelled``, as the SDK's transport does.
- either era: a client that closes the connection before its JSON answer interrupts the call.
  Noticing that means reading the request's ``receive`` while the call runs, so a watcher
  task starts only for calls still running one to two ticks of ``DISCONNECT_TICK_S`` later;
  a quick call costs a dict entry (a timer per call would cost more: ~2.5 µs on uvloop).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Final

import mcp_types as types
import msgspec
import structlog
from mcp.server.lowlevel import Server
from mcp.server.streamable_http import (
    REQUEST_CANCELLED,
    StreamableHTTPServerTransport,
    check_accept_headers,
)
from mcp.server.streamable_http_manager import StreamableHTTPSessionManager
from mcp.server.transport_security import (
    TransportSecurityMiddleware,
    TransportSecuritySettings,
)
from mcp.shared.inbound import (
    ERROR_CODE_HTTP_STATUS,
    X_MCP_HEADER_KEY,
    InboundLadderRejection,
    classify_inbound_request,
    find_duplicated_routing_header,
)
from mcp_types import LOG_LEVEL_META_KEY, SERVER_INFO_META_KEY
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway.errors import INVALID_PARAMS, CallFailed, InvalidCursor, to_jsonrpc
from gateway.inbound import INBOUND_KEY, Inbound
from gateway.principals import Principal, principal_in
from gateway.sdk_adapter import hand_to_session_manager, holding_session, session_transport
from gateway.tool_service import ToolService
from gateway.tracing import TRACEPARENT_HTTP_HEADER, client_traceparent
from gateway.views import view_in
from schemas.codec import encode
from schemas.wire import UNSET, CallToolResult, Content

log = structlog.get_logger(__name__)

HOT_METHODS: Final = frozenset({"tools/call", "tools/list"})
_CALL_PARAMS: Final = frozenset({"name", "arguments", "_meta"})
_LIST_PARAMS: Final = frozenset({"cursor", "_meta"})
_MCP_PARAM_PREFIX: Final = "mcp-param-"
_PROGRESS_TOKEN: Final = "progressToken"
_CANCELLED: Final = "notifications/cancelled"
DISCONNECT_TICK_S: Final = 0.02
"""A call still running after one to two of these ticks gets watched for its client disconnecting.
At 50 ms a 2026 client cancelling a young call waited up to ~100 ms for its guest to stop (bench
`cancel`, p90 100.1 ms); at 20 ms the wait is at most ~40 ms plus the worker's 10 ms epoch tick,
and the ticker still wakes only while calls are in flight."""
_JSON_HEADERS: Final = [(b"content-type", b"application/json")]

_LIST_CACHE_DEFAULTS: Final = types.ListToolsResult(tools=[]).model_dump(
    by_alias=True, mode="json", include={"ttl_ms", "cache_scope"}
)
"""``ttlMs``/``cacheScope`` the SDK's result model fills in when no cache hint is configured."""

Respond = Callable[[int, bytes], Awaitable[None]]


class _ModernCallResult(msgspec.Struct, rename="camel"):
    """A 2026-07-28 ``CallToolResult`` on the wire: the worker's result plus the envelope fields."""

    content: list[Content]
    structured_content: Any | msgspec.UnsetType = UNSET
    is_error: bool = False
    result_type: str = "complete"
    meta: dict[str, Any] = msgspec.field(name="_meta", default_factory=dict)


def _plain_params(method: str, params: Mapping[str, Any]) -> bool:
    """Params the hot path can serve as the SDK would: known keys, right types, no progress
    token, and for a call no log level (2026-07-28 asks for logs per request in ``_meta``)."""
    meta = params.get("_meta")
    if meta is not None and (not isinstance(meta, dict) or _PROGRESS_TOKEN in meta):
        return False
    if method == "tools/call":
        arguments = params.get("arguments")
        return (
            params.keys() <= _CALL_PARAMS
            and isinstance(params.get("name"), str)
            and (arguments is None or isinstance(arguments, dict))
            and (meta is None or LOG_LEVEL_META_KEY not in meta)
        )
    cursor = params.get("cursor")
    return params.keys() <= _LIST_PARAMS and (cursor is None or isinstance(cursor, str))


class _ParamHeaders:
    """Which tools declare ``x-mcp-header`` parameters (2026 calls of those go to the SDK, which checks
    the ``Mcp-Param-*`` headers against the body: 400 / -32020 when one is missing or differs).

    Any mention of the annotation counts, valid or not: erring towards the SDK costs only speed.
    Decided once per tool and schema (a new version of the tool brings a new schema object).
    """

    def __init__(self, input_schema: Callable[[str], Any]) -> None:
        self._input_schema = input_schema
        self._decided: dict[str, tuple[Any, bool]] = {}

    def declared(self, tool: str) -> bool:
        schema = self._input_schema(tool)
        known = self._decided.get(tool)
        if known is not None and known[0] is schema:
            return known[1]
        declared = schema is not None and X_MCP_HEADER_KEY.encode() in encode(schema)
        if len(self._decided) >= _DECIDED_LIMIT:
            self._decided.clear()
        self._decided[tool] = (schema, declared)
        return declared


_DECIDED_LIMIT: Final = 100_000
_TRANSPORT_PASSED_LIMIT: Final = 1024
"""Distinct header values remembered as passing: a client varying them only costs the checks again."""
_TRANSPORT_PASSED_CHARS: Final = 1024
"""The longest (Content-Type, Host, Origin, Accept) values, together, that are remembered. Each entry
is as large as its client made those headers (up to ``max_header_bytes``, 64 KiB): unbounded, 1024
entries would pin ~64 MiB of a client's choosing. No real client sends values that long; theirs are
checked each time."""


class _Flight:
    """A call in flight on the hot path, which its client may cancel or abandon.

    ``interrupt`` cancels the task serving it (``gateway.calls`` then publishes the cancel for
    the worker); the task tells that cancellation from any other by ``reason``.
    """

    __slots__ = ("_generation", "_receive", "_watcher", "done", "reason", "task")

    def __init__(self, receive: Receive, generation: dict[_Flight, None]) -> None:
        task = asyncio.current_task()
        assert task is not None
        self.task = task
        self.reason: str | None = None
        self.done = False
        self._receive = receive
        self._watcher: asyncio.Task[None] | None = None
        self._generation = generation
        generation[self] = None

    def interrupt(self, reason: str) -> None:
        if self.reason is None and not self.done:
            self.reason = reason
            self.task.cancel()

    def end(self) -> None:
        self.done = True
        self._generation.pop(self, None)
        if self._watcher is not None:
            self._watcher.cancel()

    def watch(self) -> None:
        """Start noticing the client disconnecting (from now until ``end``)."""
        if not self.done and self._watcher is None:
            self._watcher = asyncio.get_running_loop().create_task(self._await_disconnect())

    async def _await_disconnect(self) -> None:
        # The body has been read, so the next message is the disconnect (or never comes).
        while (await self._receive())["type"] != "http.disconnect":
            pass
        self.interrupt("disconnect")


class _Watchman:
    """Starts disconnect watchers for the calls that outlive a tick, one task for all of them.

    Calls join the young generation; each tick watches the previous generation's calls still
    running (aged one to two ticks), and the young become the previous. The task ends when no
    call is left and starts again with the next.
    """

    def __init__(self, tick_s: float = DISCONNECT_TICK_S) -> None:
        self._tick_s = tick_s
        self._young: dict[_Flight, None] = {}
        self._aging: dict[_Flight, None] = {}
        self._task: asyncio.Task[None] | None = None

    def flight(self, receive: Receive) -> _Flight:
        """A call begins: the task serving it is the current one."""
        flight = _Flight(receive, self._young)
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run())
        return flight

    async def _run(self) -> None:
        try:
            while self._young or self._aging:
                await asyncio.sleep(self._tick_s)
                aging, self._aging, self._young = self._aging, self._young, {}
                for flight in aging:
                    flight.watch()
        finally:
            self._task = None


class HotPath:
    """ASGI app in front of the gateway: hot MCP requests here, everything else to ``app``."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        service: ToolService,
        server: Server[Any],
        session_manager: StreamableHTTPSessionManager,
        security: TransportSecuritySettings,
        path: str,
        log_levels: Mapping[str, str] | None = None,
    ) -> None:
        self.app = app
        """The app that serves everything else (the gateway's Starlette app)."""
        self._service = service
        self._server = server
        # The server's identity is fixed at construction; the stamp is encoded, never mutated.
        self._stamp = {SERVER_INFO_META_KEY: server.server_info_stamp}
        self._manager = session_manager
        self._security = TransportSecurityMiddleware(security)
        self._path = path
        self._log_levels: Mapping[str, str] = {} if log_levels is None else log_levels
        """2025-era sessions whose client set a log level: their calls go to the SDK, which relays logs."""
        self._watchman = _Watchman()
        self._flights: dict[tuple[str, Any], _Flight] = {}
        """2025-era calls in flight here, by (session id, JSON-RPC id), for ``notifications/cancelled``."""
        self.interrupted = 0
        """Calls served here that their client cancelled or abandoned."""
        self.served = 0
        """Requests answered here."""
        self.handed_over = 0
        """Hot-endpoint POSTs replayed to the SDK (rejections, progress, other methods)."""
        self._param_headers = _ParamHeaders(service.catalogue.input_schema)
        self._transport_passed: set[tuple[str | None, ...]] = set()
        """(Content-Type, Host, Origin, Accept) values that passed the SDK's transport checks (DNS
        rebinding, content type, Accept): those read nothing else, and their settings are fixed, so
        the same values pass again. A refusal is never remembered; it is made afresh each time."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST" and scope["path"] == self._path:
            inbound = scope.get(INBOUND_KEY)
            if not isinstance(inbound, Inbound):
                await self.app(scope, receive, send)  # not read by a front door: the SDK's own endpoint
                return
            if not await self._serve(scope, inbound, receive, send):
                self.handed_over += 1
                # Straight to the session manager: the front door has applied the body limit, and
                # ``receive`` yields the canonical body (gateway.front_door).
                await hand_to_session_manager(self._manager, scope, receive, send)
        else:
            await self.app(scope, receive, send)

    async def _serve(self, scope: Scope, inbound: Inbound, receive: Receive, send: Send) -> bool:
        """Serve the request if it is one the hot path fully validates; ``False`` hands it to the SDK."""
        method = inbound.method
        if inbound.kind != "request" or method not in HOT_METHODS:
            if inbound.method == _CANCELLED and inbound.kind == "notification" and inbound.session_id is not None:
                self._cancel_flight(inbound)
            return False
        # Decoded once: the pairs keep repeated lines (for the duplicated-routing-header check),
        # the dict serves every lookup.
        pairs = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in scope["headers"]]
        headers = dict(pairs)
        # No name repeated (uvicorn lower-cases names): the first copy of each, which the SDK's
        # checks read, is the one ``headers`` holds, and no routing header is duplicated.
        single = len(headers) == len(pairs)
        modern = inbound.modern
        if modern and headers.get("mcp-method") not in HOT_METHODS:
            return False
        transport = None if modern or inbound.session_id is None else self._session(inbound.session_id)
        if not modern and transport is None:
            return False  # no session, or one the SDK must answer for (404)
        checked = (headers.get("content-type"), headers.get("host"), headers.get("origin"), headers.get("accept"))
        if not single or checked not in self._transport_passed:
            request = Request(scope)
            refusal = await self._security.validate_request(request, is_post=True)
            if refusal is not None:
                await refusal(scope, _nothing, send)
                return True
            has_json, has_sse = check_accept_headers(request)
            if not (has_json and has_sse):
                return False  # the SDK answers 406 (its session manager streams SSE, so it needs both)
            if single and sum(len(value) for value in checked if value is not None) <= _TRANSPORT_PASSED_CHARS:
                if len(self._transport_passed) >= _TRANSPORT_PASSED_LIMIT:
                    self._transport_passed.clear()
                self._transport_passed.add(checked)
        params: dict[str, Any] = inbound.params or {}
        if not _plain_params(method, params):
            return False
        decoded = inbound.message
        if method == "tools/call" and self._service.catalogue.sdk_only(params["name"]):
            return False  # task support, client capabilities, a guest that asks: the SDK path's
        if modern:
            if any(k.startswith(_MCP_PARAM_PREFIX) for k in headers) or (
                not single and find_duplicated_routing_header(pairs)
            ):
                return False
            if inbound.creates_task:
                return False  # the client takes tasks: this call becomes one (gateway.task_frontend)
            if method == "tools/call" and self._param_headers.declared(params["name"]):
                return False  # the SDK checks the tool's Mcp-Param-* headers (400 / -32020)
            verdict = classify_inbound_request(decoded, headers=headers)
            if isinstance(verdict, InboundLadderRejection):
                return False
            era = verdict.protocol_version
        else:
            assert transport is not None
            if method == "tools/call" and transport.mcp_session_id in self._log_levels:
                return False  # the client wants logs: the SDK streams them
            era = inbound.protocol_version or ""

        async def respond(status: int, body: bytes) -> None:
            # With its length given, uvicorn writes the body as is; without, it frames it chunked.
            extra = [(b"content-length", str(len(body)).encode())]
            if transport is not None:
                extra.append((b"mcp-session-id", transport.mcp_session_id.encode()))  # type: ignore[union-attr]
            await send({"type": "http.response.start", "status": status, "headers": [*_JSON_HEADERS, *extra]})
            await send({"type": "http.response.body", "body": body})

        view = view_in(scope)
        if transport is None:
            await self._answer(decoded, params, era, modern, headers, principal_in(scope), view, receive, respond)
            return True
        # A 2025 client cancels with a notification naming the call: its calls are kept findable.
        key = (transport.mcp_session_id or "", decoded["id"])
        with holding_session(transport):
            await self._answer(decoded, params, era, modern, headers, principal_in(scope), view, receive, respond, key)
        return True

    def _cancel_flight(self, inbound: Inbound) -> None:
        """Interrupt the call a 2025 ``notifications/cancelled`` names, if this path serves it."""
        params = inbound.params
        request_id = params.get("requestId") if params is not None else None
        if type(request_id) is str or type(request_id) is int:
            flight = self._flights.get((inbound.session_id or "", request_id))
            if flight is not None:
                flight.interrupt("cancelled")

    def _session(self, session_id: str) -> StreamableHTTPServerTransport | None:
        """The live 2025 session named by the request (its owner was checked by the front door)."""
        return session_transport(self._manager, session_id)

    async def _answer(
        self,
        decoded: dict[str, Any],
        params: dict[str, Any],
        era: str,
        modern: bool,
        headers: Mapping[str, str],
        principal: Principal,
        view: str | None,
        receive: Receive,
        respond: Respond,
        flight_key: tuple[str, Any] | None = None,
    ) -> None:
        """Serve the request; a call is in flight under ``flight_key`` (2025 sessions) until answered."""
        request_id = decoded["id"]
        self.served += 1
        try:
            if decoded["method"] == "tools/call":
                flight = self._watchman.flight(receive)
                if flight_key is not None:
                    self._flights[flight_key] = flight  # a reused id: the newer call is the one to cancel
                try:
                    call = await self._service.call(
                        params["name"],
                        params.get("arguments"),
                        era=era,
                        principal=principal,
                        traceparent=client_traceparent(headers.get(TRACEPARENT_HTTP_HEADER), params.get("_meta")),
                        view=view,
                    )
                except asyncio.CancelledError:
                    if flight.reason is None:
                        raise  # not ours: shutdown
                    flight.task.uncancel()
                    self.interrupted += 1
                    if flight.reason == "cancelled":
                        # What the SDK's 2025 transport answers a cancelled request with.
                        await self._error(request_id, REQUEST_CANCELLED, "Request cancelled", None, modern, respond)
                    return  # disconnected: nobody to answer
                finally:
                    flight.end()
                    if flight_key is not None and self._flights.get(flight_key) is flight:
                        del self._flights[flight_key]
                result: Any = self._modern_call(call) if modern else call
            else:
                result = self._list(params.get("cursor"), modern, principal, view)
        except CallFailed as exc:
            error = to_jsonrpc(exc)
            await self._error(request_id, error.code, error.message, error.data, modern, respond)
            return
        except InvalidCursor as exc:
            await self._error(request_id, INVALID_PARAMS, str(exc), None, modern, respond)
            return
        await respond(200, encode({"jsonrpc": "2.0", "id": request_id, "result": result}))

    def _modern_call(self, call: CallToolResult) -> _ModernCallResult:
        return _ModernCallResult(
            content=call.content,
            structured_content=call.structured_content,
            is_error=call.is_error,
            meta=self._stamp,
        )

    def _list(self, cursor: str | None, modern: bool, principal: Principal, view: str | None) -> dict[str, Any]:
        page = self._service.page(cursor, principal, view)
        entries = page.entries
        tools = [e.modern_tool for e in entries] if modern else [e.legacy_tool for e in entries]
        result: dict[str, Any] = {"tools": tools}
        if page.next_cursor is not None:
            result["nextCursor"] = page.next_cursor
        if modern:
            # What the SDK's result serialisation adds in this era: cache hints, resultType, serverInfo.
            hint = self._server.cache_hints.get("tools/list")
            result.update({"ttlMs": hint.ttl_ms, "cacheScope": hint.scope} if hint else _LIST_CACHE_DEFAULTS)
            result["resultType"] = "complete"
            result["_meta"] = self._stamp
        return result

    @staticmethod
    async def _error(request_id: Any, code: int, message: str, data: Any, modern: bool, respond: Respond) -> None:
        error: dict[str, Any] = {"code": code, "message": message}
        if data is not None:
            error["data"] = data
        # The 2026 transport maps error codes to HTTP statuses; 2025 answers always say 200.
        status = ERROR_CODE_HTTP_STATUS.get(code, 200) if modern else 200
        await respond(status, encode({"jsonrpc": "2.0", "id": request_id, "error": error}))


async def _nothing() -> Message:
    return {"type": "http.disconnect"}
