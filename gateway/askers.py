"""Asking the MCP client a guest's questions in each era, over the mcp SDK (SDK-free side: ``gateway.questions``).

A worker may answer a call with a *question* instead of a result (``Toolbus-Question``, see
``workers.conversation``): requests (``elicitation/create``, ``sampling/createMessage``,
``roots/list``) its guest waits on. ``gateway.tool_service`` asks the call's ``Asker`` for the
answers and resumes the guest with them (``ToolCaller.resume``), until the call has a result.

- **2025-11-25** (``SessionAsker``): each request goes to the client on the call's own response
  stream (the SDK's ``send_request`` with ``related_request_id``); the client's answer, or its
  error, resumes the guest at once.
- **2026-07-28** (``RoundAsker``): the gateway cannot ask mid-call. Answers the client already
  sent with the call (``inputResponses``) resume the guest; otherwise the round ends with an
  ``input_required`` result whose ``requestState`` (``RoundState``: worker, suspension, request
  id, the pending requests) is sealed by the SDK's ``RequestStateBoundary`` (``gateway.server``)
  under a key every replica derives from ``[nats] principal_key``, bound to the principal, the
  tool and its arguments. The client's retry, on any replica, resumes the same guest.

Either way a client only gets requests for capabilities it declared: the capabilities travel to
the worker (``Toolbus-Can-Ask``), which answers an undeclared one ``unsupported`` itself.
"""

from __future__ import annotations

import hashlib
from typing import Any, Final

import mcp_types as types
from mcp.server.context import ServerRequestContext
from mcp.server.request_state import RequestStateSecurity
from mcp.server.session import ServerSession
from mcp.shared.exceptions import MCPError
from mcp.shared.message import ServerMessageMetadata
from pydantic import BaseModel, ValidationError

from gateway.calls import Question
from gateway.principals import principal_of
from gateway.questions import Asker, InputRequired
from schemas.wire import GuestAnswer

STATE_TTL_S: Final = 600.0
"""How long a 2026-07-28 client may take to answer (a sealed ``requestState`` expires after it).
The guest gives up sooner when ``[worker] ask_timeout_s`` is shorter."""
ANSWER_WAIT_S: Final = STATE_TTL_S
"""How long a 2025-11-25 client may take to answer a guest's request on the call's stream, as
long as a 2026-07-28 client has; then the guest hears ``failed`` and the call ends. No call
timeout applies while a client is asked: without this bound a client that keeps its stream
open and never answers would hold the call (and its connection) for ever."""
_STATE_KEY_CONTEXT: Final = b"toolbus request-state v1\x00"
"""Domain separation: the state key is derived from the principal key, never the key itself."""


def request_state_security(principal_key: str | None) -> RequestStateSecurity:
    """How ``requestState`` is sealed: AES-GCM under a key derived from ``[nats] principal_key``,
    which every gateway replica holds (a retry may reach any of them), bound to the toolbus
    principal of the request. Without a principal key, an ephemeral key: a retry must then reach
    the replica that sealed the state (any other refuses it as invalid)."""
    if principal_key is None:
        security = RequestStateSecurity.ephemeral(ttl=STATE_TTL_S)
    else:
        key = hashlib.sha256(_STATE_KEY_CONTEXT + principal_key.encode()).hexdigest()
        security = RequestStateSecurity(keys=[key], ttl=STATE_TTL_S)
    security.bind_principal = bind_principal
    return security


def bind_principal(ctx: ServerRequestContext[Any, Any]) -> str:
    """The principal a ``requestState`` is bound to: who the gateway authenticated (``anonymous``
    without ``[auth]``), so another principal's retry is refused."""
    return principal_of(ctx).subject


REQUEST_TYPES: Final[dict[str, tuple[type[BaseModel], type[BaseModel]]]] = {
    "elicitation/create": (types.ElicitRequest, types.ElicitResult),
    "sampling/createMessage": (types.CreateMessageRequest, types.CreateMessageResult),
    "roots/list": (types.ListRootsRequest, types.ListRootsResult),
}
"""Each request a guest may send: its SDK request model and the result model of its answer."""


def capabilities_of(declared: types.ClientCapabilities | None) -> frozenset[str]:
    """The names (``elicitation``, ``sampling``, ``roots``; ``elicitation.url``,
    ``sampling.tools``, ``sampling.context`` for what some requests need) of the client
    capabilities declared."""
    if declared is None:
        return frozenset()
    names = ("elicitation", "sampling", "roots")
    declared_names = {name for name in names if getattr(declared, name, None) is not None}
    # Modes a guest's request may need beyond its method's capability (``capability_needed``).
    if declared.elicitation is not None and declared.elicitation.url is not None:
        declared_names.add("elicitation.url")
    if declared.sampling is not None:
        if declared.sampling.tools is not None:
            declared_names.add("sampling.tools")
        if declared.sampling.context is not None:
            declared_names.add("sampling.context")
    return frozenset(declared_names)


def client_requests(question: Question) -> dict[str, Any] | GuestAnswer:
    """The question's requests as SDK models, or the ``failed`` answer naming one that is not a valid MCP request."""
    typed: dict[str, Any] = {}
    for key, request in question.requests.items():
        kinds = REQUEST_TYPES.get(request.get("method", ""))
        if kinds is None:
            return failed(question, f"request {key!r}: {request.get('method')!r} is not a request a guest may send")
        try:
            typed[key] = kinds[0].model_validate(request)
        except ValidationError as exc:
            return failed(question, f"request {key!r} is not a valid {request['method']}: {_first_error(exc)}")
    return typed


def failed(question: Question, message: str) -> GuestAnswer:
    return GuestAnswer(question.suspension, error="failed", message=message)


def _first_error(exc: ValidationError) -> str:
    error = exc.errors()[0]
    where = ".".join(str(part) for part in error.get("loc", ()))
    return f"{where}: {error.get('msg', 'invalid')}" if where else str(error.get("msg", "invalid"))


def as_json(model: BaseModel) -> Any:
    return model.model_dump(by_alias=True, mode="json", exclude_none=True)


class SessionAsker(Asker):
    """2025-11-25: ask the client on the call's own stream, one request after another."""

    def __init__(
        self, session: ServerSession, request_id: types.RequestId | None, capabilities: frozenset[str]
    ) -> None:
        self._session = session
        self._request_id = request_id
        # Without a stream to send on (or a request to relate to) nothing can be asked.
        self.capabilities = capabilities if session.can_send_request and request_id is not None else frozenset()

    async def answer(self, question: Question) -> GuestAnswer:
        typed = client_requests(question)
        if isinstance(typed, GuestAnswer):
            return typed
        answers: dict[str, Any] = {}
        metadata = ServerMessageMetadata(related_request_id=self._request_id)
        for key, request in typed.items():
            result_type = REQUEST_TYPES[request.method][1]
            try:
                result = await self._session.send_request(
                    request, result_type, request_read_timeout_seconds=ANSWER_WAIT_S, metadata=metadata
                )
            except MCPError as exc:
                return failed(question, f"the client answered {request.method} with error {exc.code}: {exc}")
            except ValidationError as exc:
                return failed(question, f"the client's answer to {request.method} is not valid: {_first_error(exc)}")
            answers[key] = as_json(result)
        return GuestAnswer(question.suspension, answers)


class RoundAsker(Asker):
    """2026-07-28: answer from the ``inputResponses`` the client sent with this round, or end the round."""

    def __init__(self, capabilities: frozenset[str], responses: dict[str, Any]) -> None:
        self.capabilities = capabilities
        self._responses = dict(responses)

    async def answer(self, question: Question) -> GuestAnswer:
        typed = client_requests(question)
        if isinstance(typed, GuestAnswer):
            return typed
        if question.requests.keys() <= self._responses.keys():
            # Each response answers one question: a later question under the same key is asked anew.
            return GuestAnswer(question.suspension, {key: self._responses.pop(key) for key in question.requests})
        raise InputRequired(question, typed)
