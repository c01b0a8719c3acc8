"""The gateway's tool service, independent of any HTTP or MCP framework.

Both front ends — the SDK's handlers (``gateway.server``) and the lean hot path
(``gateway.hotpath``) — go through this one module, so a tool is looked up, validated,
called and shaped for the client's protocol era in exactly one way. What ``tools/list`` shows
of a tool is made once, on its catalogue entry (``gateway.catalogue.tool_json``).
"""

from __future__ import annotations

from typing import Any, Final

import msgspec
import structlog
from mcp_types.version import MODERN_PROTOCOL_VERSIONS

from gateway.calls import ToolCaller
from gateway.catalogue import Catalogue, CataloguePage
from gateway.errors import BusDisconnected, CallFailed, UnknownTool, WorkerFailed
from gateway.events import EventRelay
from schemas.codec import DecodeError, decode, encode
from schemas.validation import argument_problem
from schemas.wire import UNSET, CallToolResult, TextContent

log = structlog.get_logger(__name__)

UNKNOWN_TOOL_HINT: Final = "tools/list shows the tools this gateway serves"


def is_modern(protocol_version: str) -> bool:
    """True for the stateless 2026-07-28 era, where any JSON may be structured output."""
    return protocol_version in MODERN_PROTOCOL_VERSIONS


def downgrade(result: CallToolResult) -> CallToolResult:
    """A result a 2025-era client accepts: ``structuredContent`` only when it is an object."""
    structured = result.structured_content
    if structured is UNSET or isinstance(structured, dict):
        return result
    # The value stays readable as text; the spec asks tools to mirror structured output there anyway.
    content = result.content or [TextContent(encode(structured).decode())]
    return msgspec.structs.replace(result, structured_content=UNSET, content=content)


def invalid_arguments(tool: str, problem: str) -> CallToolResult:
    """The tool-execution error for arguments that do not fit the schema (a model can correct itself)."""
    return CallToolResult(content=[TextContent(f"invalid arguments for tool {tool!r}: {problem}")], is_error=True)


class ToolService:
    """Lists the catalogue and runs calls; ``caller`` is attached once NATS is connected."""

    def __init__(self, catalogue: Catalogue, *, page_size: int, caller: ToolCaller | None = None) -> None:
        self.catalogue = catalogue
        self.page_size = page_size
        self.caller = caller

    def page(self, cursor: str | None) -> CataloguePage:
        """One page of the catalogue.

        Raises:
            InvalidCursor: the cursor did not come from this catalogue.
        """
        return self.catalogue.page(cursor, self.page_size)

    async def call(
        self,
        name: str,
        arguments: Any,
        *,
        era: str,
        traceparent: str | None = None,
        events: EventRelay | None = None,
    ) -> CallToolResult:
        """Validate and run one call; the result is shaped for ``era``; ``events`` hears its progress and logs.

        Raises:
            CallFailed: the tool is unknown, or the call failed on the bus (no worker, deadline…).
        """
        entry = self.catalogue.get(name)
        if entry is None:
            raise UnknownTool(f"unknown tool {name!r}; {UNKNOWN_TOOL_HINT}", tool=name)
        problem = argument_problem(entry.validator, {} if arguments is None else arguments)
        if problem is not None:
            return invalid_arguments(name, problem)
        if self.caller is None:
            raise BusDisconnected("the gateway is still starting; retry in a moment", tool=name)
        try:
            data = await self.caller.call(name, arguments or {}, era=era, traceparent=traceparent, events=events)
        except CallFailed as exc:
            log.info("call failed", tool=name, reason=exc.code.name, detail=exc.detail or exc.message)
            raise
        try:
            result = decode(data, CallToolResult)
        except DecodeError:
            log.warning("worker reply is not a CallToolResult", tool=name, reply=data[:200])
            raise WorkerFailed(
                f"the worker for tool {name!r} sent a reply that is not an MCP CallToolResult", tool=name
            ) from None
        return result if is_modern(era) else downgrade(result)
