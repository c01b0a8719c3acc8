"""Requests a guest sends its MCP client: the ``toolbus:mcp/client`` host interface.

A guest that imports it (``schemas/wit/toolbus-mcp/mcp.wit``) can ask the client's user
(``elicit``), the client's model (``sample``), the client's roots (``list-roots``), or several at
once (``ask``). Each function blocks the guest's thread until the answer arrives: how it travels
(a question reply and a resume request on the bus) is the call's ``CallContext.asker``, set by the
worker for calls whose caller can relay questions (``workers.conversation``), or a ``Replay``
for a durable task or a prompt, whose guest is re-run with its answers instead of waiting
(``workers.sandbox.replay``). A call without one (the load-time trial instantiation, a plain NATS
caller) gets ``unsupported`` at once, never a hang. Linked into every component's linker: it
grants nothing, it only asks the caller, who decides.
"""

from __future__ import annotations

from typing import Any, Final

from wasmtime import component as wc

from schemas.codec import DecodeError, decode_json, encode
from workers.sandbox.call_context import AskFailed, current

CLIENT_INTERFACE: Final = "toolbus:mcp/client@0.1.0"
CLIENT_INTERFACE_UNVERSIONED: Final = "toolbus:mcp/client"
CAPABILITY_OF: Final = {
    "elicitation/create": "elicitation",
    "sampling/createMessage": "sampling",
    "roots/list": "roots",
}
"""The client requests a guest may send, and the client capability each needs."""
URL_ELICITATION: Final = "elicitation.url"
"""The capability an ``elicitation/create`` in URL mode needs (``elicitation.url`` declared): a
client that declared only form elicitation must never be sent a link to open."""
SAMPLING_TOOLS: Final = "sampling.tools"
"""What a ``sampling/createMessage`` with ``tools`` or ``toolChoice`` needs (the spec: MUST NOT otherwise)."""
SAMPLING_CONTEXT: Final = "sampling.context"
"""What a ``sampling/createMessage`` asking for ``includeContext`` other than ``none`` needs."""


def capability_needed(request: dict[str, Any]) -> str:
    """The client capability one request (``{"method", "params"}``) needs: the plain one of its
    method, or the sub-capability its params call for, which the client must have declared too."""
    method, params = request["method"], request.get("params") or {}
    if method == "elicitation/create" and params.get("mode") == "url":
        return URL_ELICITATION
    if method == "sampling/createMessage":
        if "tools" in params or "toolChoice" in params:
            return SAMPLING_TOOLS
        if params.get("includeContext") not in (None, "none"):
            return SAMPLING_CONTEXT
    return CAPABILITY_OF[method]


MAX_REQUESTS: Final = 16
"""Requests one question may hold."""
NO_ASKER: Final = "tasks"
"""The ``unsupported`` text when a run has no asker at all (a task or prompt gets a ``Replay``,
and a plain NATS caller declares no capability: it is told which one)."""


def imports_client(imports: list[str]) -> bool:
    """True when a component's imports include ``toolbus:mcp/client`` (its tools may ask)."""
    return any(name.split("@", 1)[0] == CLIENT_INTERFACE_UNVERSIONED for name in imports)


def ask(requests: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Send ``requests`` (key → ``{"method", "params"}``) for the call on this thread; block for the answers.

    Raises:
        AskFailed: no answer (unsupported, timed out, cancelled, failed).
    """
    context = current()
    if context is None or context.asker is None:
        raise AskFailed("unsupported", NO_ASKER)
    return context.asker(requests)


def _error(exc: AskFailed) -> wc.Variant:
    if exc.kind in ("timed-out", "cancelled"):
        return wc.Variant(exc.kind)
    return wc.Variant(exc.kind, exc.message)


def _one(key: str, method: str, params: dict[str, Any]) -> Any:
    try:
        answers = ask({key: {"method": method, "params": params}})
    except AskFailed as exc:
        return _error(exc)
    return encode(answers[key]).decode()


def _json_object(text: str, what: str) -> dict[str, Any]:
    try:
        value = decode_json(text.encode())
    except DecodeError as exc:
        raise AskFailed("failed", f"{what} is not JSON: {exc}") from None
    if not isinstance(value, dict):
        raise AskFailed("failed", f"{what} must be a JSON object")
    return value


def _elicit(_store: Any, message: str, requested_schema: str) -> Any:
    try:
        schema = _json_object(requested_schema, "requested-schema")
    except AskFailed as exc:
        return _error(exc)
    return _one("elicitation", "elicitation/create", {"message": message, "requestedSchema": schema})


def _sample(_store: Any, params: str) -> Any:
    try:
        parsed = _json_object(params, "params")
    except AskFailed as exc:
        return _error(exc)
    return _one("sampling", "sampling/createMessage", parsed)


def _list_roots(_store: Any) -> Any:
    return _one("roots", "roots/list", {})


def parse_requests(pairs: list[tuple[str, str]]) -> dict[str, dict[str, Any]]:
    """The question an ``ask`` call holds, checked: known methods, object params, unique keys.

    Raises:
        AskFailed: ``failed`` with the reason.
    """
    if not pairs:
        raise AskFailed("failed", "ask needs at least one request")
    if len(pairs) > MAX_REQUESTS:
        raise AskFailed("failed", f"ask takes at most {MAX_REQUESTS} requests at once")
    requests: dict[str, dict[str, Any]] = {}
    for key, text in pairs:
        if not key or key in requests:
            raise AskFailed("failed", f"request keys must be non-empty and unique ({key!r})")
        request = _json_object(text, f"request {key!r}")
        method, params = request.get("method"), request.get("params", {})
        if method not in CAPABILITY_OF:
            raise AskFailed("failed", f"request {key!r}: method must be one of {', '.join(CAPABILITY_OF)}")
        if not isinstance(params, dict):
            raise AskFailed("failed", f"request {key!r}: params must be a JSON object")
        requests[key] = {"method": method, "params": params}
    return requests


def _ask(_store: Any, pairs: list[tuple[str, str]]) -> Any:
    try:
        answers = ask(parse_requests(list(pairs)))
    except AskFailed as exc:
        return _error(exc)
    return [(key, encode(value).decode()) for key, value in answers.items()]


class _Required(Exception):
    """Ends the guest (a trap) when ``require`` finds a capability missing."""


def _require(_store: Any, capabilities: list[str]) -> None:
    context = current()
    declared = frozenset() if context is None else context.capabilities
    missing = tuple(sorted(set(capabilities) - declared))
    if missing:
        if context is not None:
            context.missing_capabilities = missing
        raise _Required(f"the client did not declare {', '.join(missing)}")


def link_client(linker: Any) -> None:
    """Define ``toolbus:mcp/client`` in a component linker."""
    with linker.root() as root, root.add_instance(CLIENT_INTERFACE) as instance:
        instance.add_func("elicit", _elicit)
        instance.add_func("sample", _sample)
        instance.add_func("list-roots", _list_roots)
        instance.add_func("ask", _ask)
        instance.add_func("require", _require)
