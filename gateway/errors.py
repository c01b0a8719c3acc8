"""Exceptions of the gateway, and the one table that turns them into JSON-RPC errors.

A failed tool call is a ``CallFailed`` carrying a bus ``ErrorCode``; ``JSONRPC_ERRORS`` maps each
code onto a JSON-RPC error code. This module knows nothing of the mcp SDK, so a lean HTTP path
can produce byte-identical errors.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Final

from schemas.errors import ErrorCode

INVALID_PARAMS: Final = -32602
INTERNAL_ERROR: Final = -32603
NO_WORKER: Final = -32010
OVERLOADED: Final = -32011
DEADLINE_EXCEEDED: Final = -32012
CANCELLED: Final = -32013
PAYLOAD_TOO_LARGE: Final = -32014
MISSING_REQUIRED_CLIENT_CAPABILITY: Final = -32021
"""The spec's own code (2026-07-28; HTTP 400): a request needs client capabilities not declared."""
# Our codes live in -32003..-32019, the band the 2026-07-28 spec leaves to implementations:
# -32000/-32001 are the SDK's client-side CONNECTION_CLOSED/REQUEST_TIMEOUT, -32002 is retired,
# -32020 and below are reserved for the spec.

JSONRPC_ERRORS: Final[Mapping[ErrorCode, int]] = MappingProxyType(
    {
        ErrorCode.BAD_REQUEST: INVALID_PARAMS,
        ErrorCode.UNKNOWN_TOOL: INVALID_PARAMS,
        ErrorCode.NO_WORKER: NO_WORKER,
        ErrorCode.OVERLOADED: OVERLOADED,
        ErrorCode.CANCELLED: CANCELLED,
        ErrorCode.DEADLINE_EXCEEDED: DEADLINE_EXCEEDED,
        ErrorCode.PAYLOAD_TOO_LARGE: PAYLOAD_TOO_LARGE,
        # Only release requests get it, never a call; mapped so that every code has a meaning.
        ErrorCode.RELEASE_REJECTED: INVALID_PARAMS,
        ErrorCode.TASK_NOT_FOUND: INVALID_PARAMS,
        ErrorCode.TASK_STATE: INVALID_PARAMS,
        # Only plain-NATS task requests get it (the gateway refuses over HTTP, with a 403).
        ErrorCode.FORBIDDEN: INVALID_PARAMS,
        ErrorCode.MISSING_CAPABILITY: MISSING_REQUIRED_CLIENT_CAPABILITY,
        ErrorCode.NOT_FOUND: INVALID_PARAMS,  # SEP-2164: an unknown resource is -32602 with data.uri
        ErrorCode.INVALID_PARAMS: INVALID_PARAMS,
        ErrorCode.INTERNAL: INTERNAL_ERROR,
    }
)
"""Bus error code → JSON-RPC error code: the whole mapping, in one place."""


class GatewayError(Exception):
    """Base of the exceptions raised by the gateway package."""


class CallFailed(GatewayError):
    """Raised when a tool call fails for a protocol reason; ``code`` says which.

    Each subclass stands for one code; a code without a class of its own is carried by a
    plain ``CallFailed`` made with ``code=`` (see ``call_failed``). ``tool`` names the tool;
    ``detail`` is what the worker (or NATS) said, kept apart from the message a client reads
    so logs can show both.
    """

    code: ErrorCode = ErrorCode.INTERNAL

    def __init__(self, message: str, *, tool: str, detail: str = "", code: ErrorCode | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.tool = tool
        self.detail = detail
        if code is not None:
            self.code = code


class UnknownTool(CallFailed):
    """Raised when no tool of that name is in the catalogue (or a worker says so)."""

    code = ErrorCode.UNKNOWN_TOOL


class BadRequest(CallFailed):
    """Raised when a worker refuses the request itself (not JSON, bad deadline header)."""

    code = ErrorCode.BAD_REQUEST


class NoWorker(CallFailed):
    """Raised when NATS has no responder for the tool's subject, or a worker says none serves it."""

    code = ErrorCode.NO_WORKER


class BusDisconnected(NoWorker):
    """Raised when the gateway is not connected to NATS, so no worker can be reached."""


class Overloaded(CallFailed):
    """Raised when every worker serving the tool is at capacity."""

    code = ErrorCode.OVERLOADED


class Cancelled(CallFailed):
    """Raised when a worker reports that the call was cancelled."""

    code = ErrorCode.CANCELLED


class DeadlineExceeded(CallFailed):
    """Raised when the call's deadline passes before a reply arrives (or a worker says it passed)."""

    code = ErrorCode.DEADLINE_EXCEEDED


class PayloadTooLarge(CallFailed):
    """Raised when a task's arguments are over ``[nats] max_payload_bytes``, or a request (a resume)
    does not fit one message; calls over the cap get an ``isError`` result instead."""

    code = ErrorCode.PAYLOAD_TOO_LARGE


class ReleaseRejected(CallFailed):
    """Raised when a reply carries RELEASE_REJECTED (a release verb's refusal, not a call's)."""

    code = ErrorCode.RELEASE_REJECTED


class WorkerFailed(CallFailed):
    """Raised when a worker reports an internal error or sends a reply that is not a result."""

    code = ErrorCode.INTERNAL


class MissingCapability(CallFailed):
    """Raised when the tool's guest requires client capabilities the client did not declare."""

    code = ErrorCode.MISSING_CAPABILITY

    def __init__(self, message: str, *, tool: str, detail: str = "", capabilities: Sequence[str] = ()) -> None:
        super().__init__(message, tool=tool, detail=detail)
        self.capabilities = tuple(capabilities)


class InvalidCursor(GatewayError):
    """Raised when a ``tools/list`` cursor was not issued by this gateway."""


_BY_CODE: Final[Mapping[ErrorCode, type[CallFailed]]] = MappingProxyType(
    {
        kind.code: kind
        for kind in (
            BadRequest,
            UnknownTool,
            NoWorker,
            Overloaded,
            Cancelled,
            DeadlineExceeded,
            PayloadTooLarge,
            ReleaseRejected,
            WorkerFailed,
        )
    }
)
"""The class that stands for a bus error code (``BusDisconnected`` is a kind of ``NoWorker``, not listed)."""


def call_failed(code: ErrorCode, message: str, *, tool: str, detail: str = "") -> CallFailed:
    """The exception for a bus error code: its own class, or a ``CallFailed`` carrying the code."""
    kind = _BY_CODE.get(code)
    if kind is None:
        return CallFailed(message, tool=tool, detail=detail, code=code)
    return kind(message, tool=tool, detail=detail)


@dataclass(frozen=True, slots=True)
class JsonRpcError:
    """A JSON-RPC error object, free of any SDK type."""

    code: int
    message: str
    data: dict[str, Any]


def to_jsonrpc(exc: CallFailed) -> JsonRpcError:
    """The JSON-RPC error a client sees for a failed call."""
    data: dict[str, Any] = {"reason": exc.code.name, "retryable": exc.code.retryable, "tool": exc.tool}
    if isinstance(exc, MissingCapability):
        # The spec's MissingRequiredClientCapabilityError data: a ClientCapabilities object.
        data["requiredCapabilities"] = {name: {} for name in exc.capabilities}
    return JsonRpcError(code=JSONRPC_ERRORS[exc.code], message=exc.message, data=data)
