"""Error codes that travel on the bus, and the exceptions of the schemas package.

The code table is the wire contract: codes are stable, never reused, and unique (``@enum.unique``
refuses a duplicate at import; tests/schemas/test_errors.py checks the table). The gateway maps
each code onto a JSON-RPC error.
"""

from __future__ import annotations

import enum
from typing import Final


@enum.unique
class ErrorCode(enum.IntEnum):
    """Stable numeric codes of typed error replies (``ErrorReply``) on the bus."""

    BAD_REQUEST = 1000
    """The request body is not a JSON object (malformed JSON, wrong top-level type)."""
    UNKNOWN_TOOL = 1001
    """No tool of that name is in the catalogue."""
    NO_WORKER = 1002
    """The tool exists but no live worker serves it right now (retryable)."""
    OVERLOADED = 1003
    """Every worker serving the tool is at capacity (retryable)."""
    CANCELLED = 1004
    """The caller cancelled the call."""
    DEADLINE_EXCEEDED = 1005
    """The call's deadline passed before it finished."""
    PAYLOAD_TOO_LARGE = 1006
    """A body is over ``[nats] max_payload_bytes`` where no ``isError`` result can say so (a task
    request, a resource read), or could not be stored as a claim check (``bus.payloads``)."""
    RELEASE_REJECTED = 1007
    """A publish, rollback, retire or deprecate that cannot be done; the message says why."""
    TASK_NOT_FOUND = 1008
    """No task with that id is visible to the caller."""
    TASK_STATE = 1009
    """The task is not in a state that allows the request (e.g. cancelling a finished task)."""
    FORBIDDEN = 1010
    """The caller may not do this: e.g. it claims a principal no gateway vouched for."""
    MISSING_CAPABILITY = 1011
    """The tool requires client capabilities its caller did not declare (``ErrorBody.capabilities``)."""
    NOT_FOUND = 1012
    """No resource has that URI (a component's ``read`` said so, or no component claims it)."""
    INVALID_PARAMS = 1013
    """A prompt or completion refused its arguments (the guest's own message)."""
    INTERNAL = 1099
    """A bug on our side; the message says where."""

    @property
    def retryable(self) -> bool:
        """True for failures that a later attempt may not hit."""
        return self in _RETRYABLE


_RETRYABLE = frozenset({ErrorCode.NO_WORKER, ErrorCode.OVERLOADED})

# -- call outcomes: how the gateway and the workers label a finished call (metrics, logs, audit) --
OK: Final = "ok"
"""The tool answered with a result."""
TOOL_ERROR: Final = "tool_error"
"""The tool answered with ``isError: true`` (its own error, a trap, a limit)."""
INVALID_ARGUMENTS: Final = "invalid_arguments"
"""The arguments did not fit the tool's schema (answered without running the guest)."""
CANCELLED: Final = "cancelled"
"""Its client cancelled or abandoned the call."""


def failed_outcome(code: ErrorCode) -> str:
    """The outcome of a call that failed with a typed error: ``no_worker``, ``deadline_exceeded``…"""
    return code.name.lower()


class SchemasError(Exception):
    """Base of the exceptions raised by the schemas package."""


class ConfigError(SchemasError):
    """Raised when a config file cannot be read or breaks a rule; the message names the file and field."""


class WitTypeError(SchemasError):
    """Raised when a WIT type has no JSON mapping (resources, futures, streams)."""


class ArgumentError(SchemasError):
    """Raised when tool arguments do not fit the tool's parameters; the message names the field.

    ``path`` is the JSON path of the offending value (``["item", "tags", 2]``).
    """

    def __init__(self, message: str, path: tuple[str | int, ...] = ()) -> None:
        super().__init__(message)
        self.path = path
