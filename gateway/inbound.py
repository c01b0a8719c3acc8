"""One reading of a POST to the MCP endpoint: the typed request every layer of the gateway decides on.

The front door (``gateway.front_door``) parses each POST body here, once. Authentication's
neighbours — policy, task access, rate limits, session ownership, the audit trail — the lean hot
path (``gateway.hotpath``) and the hand-over to the mcp SDK all read the same ``Inbound``; none
parses the body again. The SDK is handed ``Inbound.canonical`` — the JSON *we* decoded, encoded
again — never the client's bytes, so it cannot read anything other than what was judged.

What this parser accepts, decided here and nowhere else (each case has a test in
tests/gateway/test_inbound.py, and a differential one against the SDK's parsers):

- **strict JSON** (msgspec): ``NaN``, ``Infinity`` and numbers that overflow a double (``1e400``)
  are a parse error (-32700); Python's ``json`` and pydantic would read them as floats.
- **integers**: exact, up to Python's 4300-digit limit (beyond: -32700), re-encoded exactly.
- **duplicate keys**: the last one wins, as in every JSON parser the SDK uses; since the SDK
  gets our re-encoding, which holds each key once, every layer sees the same value.
- **escaped names** (``"na\\u006de"``): decoded once, so policy sees the tool the worker runs.
- **nesting** deeper than ``MAX_DEPTH``: -32700 (a 10^5-deep body never reaches a recursive
  parser's limit: msgspec stops at ~1000 with a RecursionError, caught here too).
- **a byte-order mark** or any non-UTF-8 byte: -32700 (RFC 8259 §8.1: a BOM is not JSON text).
- **the media type** (``check_content_type``): ``application/json``, with no charset but UTF-8;
  anything else is 415 before the body is read.
- **batches** (a top-level array): -32600; MCP dropped JSON-RPC batching in 2025-06-18 and the
  SDK serves none in either era.
- **a ``tools/call`` request** names its tool with a string (else -32602), so every layer
  knows the tool of every call it lets through; likewise ``resources/read``, ``subscribe`` and
  ``unsubscribe`` their ``uri``, ``prompts/get`` its ``name``, and ``completion/complete`` its
  ``ref`` (``SurfaceTarget``), which policy judges.
- **the envelope**: one object with ``"jsonrpc": "2.0"``; a request (``method`` + ``id``, a
  string or a non-boolean integer), a notification (``method``, no ``id``) or a response
  (``id`` + ``result``/``error``); ``params``, when present, an object. Anything else: -32600.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Final, Literal

import msgspec
from mcp.shared.inbound import decode_header_value
from mcp_types import CLIENT_CAPABILITIES_META_KEY, HEADER_MISMATCH
from mcp_types.version import HANDSHAKE_PROTOCOL_VERSIONS

from schemas.codec import encode

PARSE_ERROR: Final = -32700
INVALID_REQUEST: Final = -32600
INVALID_PARAMS: Final = -32602
MAX_DEPTH: Final = 64
"""Deepest nesting of arrays and objects accepted, envelope included (the SDK's 2025-era parser,
pydantic-core, stops at 200; a tool's arguments rarely go past a dozen)."""
MAX_RESOURCE_SUBSCRIPTIONS: Final = 1024
"""URIs one 2025 session may subscribe to (``gateway.resources``), and one 2026 listen may name:
each is judged by policy here and held as long as its stream stays open."""
TASKS_EXTENSION: Final = "io.modelcontextprotocol/tasks"
"""The 2026-07-28 tasks extension's identifier."""
TOOLS_CALL: Final = "tools/call"
INITIALIZE: Final = "initialize"
RESOURCE_METHODS: Final = frozenset({"resources/read", "resources/subscribe", "resources/unsubscribe"})
"""Methods that name one resource by ``params.uri``."""
MODERN_RESOURCE_METHODS: Final = frozenset({"resources/read"})
"""Those of them 2026-07-28 keeps: it removed ``resources/subscribe`` and ``unsubscribe`` (the SDK
answers them 404 -32601, so they are not judged here)."""
PROMPTS_GET: Final = "prompts/get"
COMPLETE: Final = "completion/complete"
LISTEN: Final = "subscriptions/listen"

INBOUND_KEY: Final = "toolbus.inbound"
"""Where the front door leaves a POST's ``Inbound`` in the ASGI scope (for the hot path)."""

_decode = msgspec.json.Decoder().decode

Kind = Literal["request", "notification", "response"]


class ParseRejected(Exception):
    """Raised when a POST body is not one JSON-RPC message this gateway serves; ``code`` says which
    error, ``status`` the HTTP status (400, or 415 for a body that is not declared JSON)."""

    def __init__(self, code: int, message: str, status: int = 400, request_id: Any = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.status = status
        self.request_id = request_id
        """The refused request's id, when the body was read far enough to know it."""


JSON_MEDIA_TYPE: Final = "application/json"


def check_content_type(content_type: str | None) -> None:
    """A POST body must be declared ``application/json`` (UTF-8, the only charset it may name).

    One decision for every path: the SDK's 2025 transport answers 415 to anything but that media
    type, while its transport-security check — all the hot path and the 2026 path apply — accepts
    any type that merely *starts* with it (``application/jsonx``). A ``text/plain`` POST is also
    what a browser page may send cross-origin without a preflight.

    Raises:
        ParseRejected: another media type, a charset other than UTF-8, or none (415, -32600).
    """
    if content_type is not None:
        media_type, *parameters = content_type.split(";")
        if media_type.strip().lower() == JSON_MEDIA_TYPE and all(_utf8_parameter(p) for p in parameters):
            return
    raise ParseRejected(INVALID_REQUEST, "Unsupported Media Type: Content-Type must be application/json", 415)


def _utf8_parameter(parameter: str) -> bool:
    name, _, value = parameter.partition("=")
    return name.strip().lower() != "charset" or value.strip().strip('"').lower() in ("utf-8", "utf8")


@dataclass(slots=True)
class Inbound:
    """One POST to the MCP endpoint, as every layer reads it."""

    message: dict[str, Any]
    """The decoded JSON-RPC message (never mutated)."""
    kind: Kind
    method: str | None
    params: dict[str, Any] | None
    modern: bool
    """2026-07-28 (stateless) era: the ``MCP-Protocol-Version`` header names a non-handshake version,
    exactly as the SDK's session manager routes it."""
    protocol_version: str | None
    """The ``MCP-Protocol-Version`` header as sent."""
    session_id: str | None
    """The ``Mcp-Session-Id`` header (2025 era)."""
    _canonical: bytes | None = field(default=None, repr=False)

    @property
    def id(self) -> Any:
        """The JSON-RPC id (``None`` for a notification)."""
        return self.message.get("id")

    @property
    def tool(self) -> str | None:
        """The tool a ``tools/call`` names (``None`` for anything else, or a name that is not a string)."""
        if self.method != TOOLS_CALL or self.params is None:
            return None
        name = self.params.get("name")
        return name if type(name) is str else None

    @property
    def surface_targets(self) -> tuple[SurfaceTarget, ...]:
        """The resources, template or prompt a request names (``resources/read``, ``subscribe``,
        ``unsubscribe``: ``uri``; ``prompts/get``: ``name``; ``completion/complete``: its ``ref``;
        ``subscriptions/listen``: its ``resourceSubscriptions``); none for other methods.
        ``parse`` made sure these are strings."""
        params = self.params
        if params is None or self.kind != "request":
            return ()
        if self.method in (MODERN_RESOURCE_METHODS if self.modern else RESOURCE_METHODS):
            return (SurfaceTarget("resource", params["uri"]),)
        if self.method == PROMPTS_GET:
            return (SurfaceTarget("prompt", params["name"]),)
        if self.method == COMPLETE:
            ref = params["ref"]
            if ref["type"] == "ref/prompt":
                return (SurfaceTarget("prompt", ref["name"]),)
            return (SurfaceTarget("template", ref["uri"]),)
        if self.method == LISTEN:
            return tuple(SurfaceTarget("resource", uri) for uri in _listened_uris(params) or ())
        return ()

    @property
    def meta(self) -> dict[str, Any] | None:
        """``params._meta`` when it is an object."""
        meta = self.params.get("_meta") if self.params is not None else None
        return meta if type(meta) is dict else None

    @property
    def creates_task(self) -> bool:
        """A ``tools/call`` this gateway serves as a task (``creates_task``)."""
        return self.method == TOOLS_CALL and creates_task(self.params, modern=self.modern)

    @property
    def asks_for_task(self) -> bool:
        """A ``tools/call`` in either era's task form, whatever its era: what a ``tasks = false``
        rule refuses, so no mismatch between header and body can slip a task past it."""
        if self.method != TOOLS_CALL or self.params is None:
            return False
        return self.params.get("task") is not None or declares_tasks(self.meta)

    @property
    def uses_tasks(self) -> bool:
        """Creates a task, or reads, lists, updates or cancels one (``tasks/*``)."""
        return self.asks_for_task or (self.method is not None and self.method.startswith("tasks/"))

    @property
    def opens_session(self) -> bool:
        """A 2025-era ``initialize`` without a session: the SDK would open a session for it."""
        return self.method == INITIALIZE and not self.modern and self.session_id is None

    @property
    def canonical(self) -> bytes:
        """The message encoded again: what the SDK is handed instead of the client's bytes."""
        if self._canonical is None:
            self._canonical = encode(self.message)
        return self._canonical


TASK_ID_METHODS: Final = frozenset({"tasks/get", "tasks/update", "tasks/cancel"})
"""2026-07-28 task methods whose ``Mcp-Name`` header mirrors ``params.taskId`` (the tasks extension;
the SDK's own check, ``NAME_BEARING_METHODS``, covers tools/call, prompts/get and resources/read)."""


def check_task_name(inbound: Inbound, names: list[str]) -> None:
    """A 2026 ``tasks/get|update|cancel`` must name its task in exactly one ``Mcp-Name`` header.

    ``names`` are the request's ``Mcp-Name`` values. A header that is missing, repeated or names
    another task than the body would let a router and this gateway act on different tasks.

    Raises:
        ParseRejected: -32020 (HTTP 400), as the SDK answers its own routing-header mismatches.
    """
    if not inbound.modern or inbound.kind != "request" or inbound.method not in TASK_ID_METHODS:
        return
    task_id = (inbound.params or {}).get("taskId")
    if not isinstance(task_id, str):
        return  # the handler refuses the params (-32602)
    if len(names) != 1 or decode_header_value(names[0]) != task_id:
        raise ParseRejected(
            HEADER_MISMATCH,
            "Mcp-Name header does not match the request body's 'taskId' parameter",
            request_id=inbound.message.get("id"),
        )


@dataclass(frozen=True, slots=True)
class SurfaceTarget:
    """What a resources, prompts or completion request names, for policy (``gateway.front_door``)."""

    kind: Literal["resource", "template", "prompt"]
    """``resource``: a URI; ``template``: a URI template (completion); ``prompt``: a prompt name."""
    name: str


def _surface_problem(method: str, params: dict[str, Any] | None, modern: bool) -> str | None:
    """Why a resources, prompts or completion request does not name its target with a string."""
    params = params or {}
    if modern and method in RESOURCE_METHODS and method not in MODERN_RESOURCE_METHODS:
        return None
    if method == LISTEN:
        uris = _listened_uris(params)
        if uris is not None and not (type(uris) is list and all(type(uri) is str for uri in uris)):
            return "subscriptions/listen: notifications.resourceSubscriptions must be a list of URIs (strings)"
        if uris is not None and len(uris) > MAX_RESOURCE_SUBSCRIPTIONS:
            return f"subscriptions/listen: at most {MAX_RESOURCE_SUBSCRIPTIONS} resourceSubscriptions"
        return None
    if method in RESOURCE_METHODS:
        return None if type(params.get("uri")) is str else f"{method} needs the resource's uri, a string"
    if method == PROMPTS_GET:
        return None if type(params.get("name")) is str else "prompts/get needs the prompt's name, a string"
    if method == COMPLETE:
        ref = params.get("ref")
        if type(ref) is dict:
            if ref.get("type") == "ref/prompt" and type(ref.get("name")) is str:
                return None
            if ref.get("type") == "ref/resource" and type(ref.get("uri")) is str:
                return None
        return "completion/complete needs a ref: {type: ref/prompt, name} or {type: ref/resource, uri}"
    return None


def _listened_uris(params: dict[str, Any]) -> Any:
    """``params.notifications.resourceSubscriptions`` of a ``subscriptions/listen`` (None: absent)."""
    notifications = params.get("notifications")
    return notifications.get("resourceSubscriptions") if type(notifications) is dict else None


def creates_task(params: dict[str, Any] | None, *, modern: bool) -> bool:
    """Whether a ``tools/call`` with these params becomes a task: the one rule, for both eras.

    2025-11-25: ``params.task`` is present. 2026-07-28: ``params._meta`` declares the tasks
    extension in the client's capabilities (the server decides; toolbus always makes a task).
    """
    if params is None:
        return False
    return declares_tasks(params.get("_meta")) if modern else params.get("task") is not None


def declares_tasks(meta: Any) -> bool:
    """True when a request's ``_meta`` declares the 2026 tasks extension in its client capabilities.

    On the hot path for every 2026 call: plain ``dict`` checks, as an ``isinstance`` against
    ``Mapping`` costs a quarter of a microsecond each.
    """
    if type(meta) is not dict:
        return False
    capabilities = meta.get(CLIENT_CAPABILITIES_META_KEY)
    if type(capabilities) is not dict:
        return False
    extensions = capabilities.get("extensions")
    return type(extensions) is dict and TASKS_EXTENSION in extensions


def parse(body: bytes, protocol_version: str | None, session_id: str | None) -> Inbound:
    """The one reading of a POST body (with its era and session headers).

    Raises:
        ParseRejected: not JSON this gateway accepts (-32700) or not one JSON-RPC message (-32600).
    """
    try:
        decoded = _decode(body)
    except (msgspec.DecodeError, RecursionError):
        # DecodeError covers malformed JSON, NaN/Infinity, overflowing numbers and bad UTF-8
        # (a BOM included); RecursionError, nesting beyond msgspec's own limit.
        raise ParseRejected(PARSE_ERROR, "Parse error") from None
    if (body.count(b"[") + body.count(b"{")) > MAX_DEPTH and _too_deep(decoded):
        raise ParseRejected(PARSE_ERROR, f"Parse error: JSON nested deeper than {MAX_DEPTH} levels")
    if type(decoded) is list:
        raise ParseRejected(INVALID_REQUEST, "Invalid Request: JSON-RPC batches are not supported")
    if type(decoded) is not dict or decoded.get("jsonrpc") != "2.0":
        raise ParseRejected(INVALID_REQUEST, "Invalid Request: not a JSON-RPC 2.0 message")
    kind = _kind(decoded)
    method = decoded.get("method")
    params = decoded.get("params")
    if params is not None and type(params) is not dict:
        raise ParseRejected(INVALID_REQUEST, "Invalid Request: params must be an object")
    if method == TOOLS_CALL and kind == "request" and type((params or {}).get("name")) is not str:
        # Decided here so every layer knows the tool of every call it lets through.
        raise ParseRejected(INVALID_PARAMS, "Invalid params: tools/call needs the tool's name, a string")
    modern = protocol_version is not None and protocol_version not in HANDSHAKE_PROTOCOL_VERSIONS
    if kind == "request" and type(method) is str:
        # Decided here too, so policy knows the resource or prompt of every request it lets through.
        problem = _surface_problem(method, params, modern)
        if problem is not None:
            raise ParseRejected(INVALID_PARAMS, f"Invalid params: {problem}")
    return Inbound(decoded, kind, method, params, modern, protocol_version, session_id)


def _kind(message: dict[str, Any]) -> Kind:
    """Request, notification or response, by which members are present (JSON-RPC 2.0 §4, §5).

    Raises:
        ParseRejected: none of the three shapes.
    """
    method = message.get("method")
    has_id = "id" in message
    if has_id:
        request_id = message["id"]
        if not (type(request_id) is str or type(request_id) is int or (request_id is None and method is None)):
            raise ParseRejected(INVALID_REQUEST, "Invalid Request: id must be a string or an integer")
    if type(method) is str:
        return "request" if has_id else "notification"
    if method is None and has_id and (("result" in message) != ("error" in message)):
        return "response"
    raise ParseRejected(INVALID_REQUEST, "Invalid Request: not a request, notification or response")


def _too_deep(value: Any) -> bool:
    """Whether a decoded value nests arrays/objects deeper than ``MAX_DEPTH`` (iterative: no recursion)."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > MAX_DEPTH:
            return True
        if type(node) is dict:
            stack.extend((child, depth + 1) for child in node.values() if type(child) in (dict, list))
        elif type(node) is list:
            stack.extend((child, depth + 1) for child in node if type(child) in (dict, list))
    return False
