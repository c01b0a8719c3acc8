"""The gateway's tool service, independent of any HTTP or MCP framework.

Both front ends — the SDK's handlers (``gateway.server``) and the lean hot path
(``gateway.hotpath``) — go through this one module, so a tool is looked up, validated,
called and shaped for the client's protocol era in exactly one way.
"""

from __future__ import annotations

from typing import Any, Final

import msgspec
import structlog
from mcp_types.version import MODERN_PROTOCOL_VERSIONS

from gateway.calls import ToolCaller
from gateway.catalogue import Catalogue, CatalogueEntry, CataloguePage
from gateway.errors import BusDisconnected, CallFailed, UnknownTool, WorkerFailed
from gateway.events import EventRelay
from schemas.codec import DecodeError, decode, encode
from schemas.validation import argument_problem
from schemas.wire import UNSET, CallToolResult, TextContent, ToolDescriptor

log = structlog.get_logger(__name__)

UNKNOWN_TOOL_HINT: Final = "tools/list shows the tools this gateway serves"


def is_modern(protocol_version: str) -> bool:
    """True for the stateless 2026-07-28 era, where any JSON may be structured output."""
    return protocol_version in MODERN_PROTOCOL_VERSIONS


def tool_json(descriptor: ToolDescriptor, *, modern: bool) -> dict[str, Any]:
    """The MCP ``Tool`` object of a descriptor, as a client of the given era may see it."""
    tool: dict[str, Any] = {"name": descriptor.name, "inputSchema": descriptor.input_schema}
    if descriptor.description:
        tool["description"] = descriptor.description
    output_schema = descriptor.output_schema
    # 2025-era clients reject the whole tools/list over one non-object outputSchema.
    if output_schema is not None and (modern or output_schema.get("type") == "object"):
        tool["outputSchema"] = output_schema
    if not modern:
        # Any tool may run as a 2025 task (gateway.tasks); 2026-07-28 has no such field (the
        # tasks extension lets the server decide per call).
        tool["execution"] = {"taskSupport": "optional"}
    return tool


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
        # name -> (descriptor, 2025-era Tool JSON, 2026-era Tool JSON); rebuilt when the descriptor changes.
        self._tools: dict[str, tuple[ToolDescriptor, dict[str, Any], dict[str, Any]]] = {}

    def page(self, cursor: str | None) -> CataloguePage:
        """One page of the catalogue.

        Raises:
            InvalidCursor: the cursor did not come from this catalogue.
        """
        return self.catalogue.page(cursor, self.page_size)

    def tool(self, entry: CatalogueEntry, *, modern: bool) -> dict[str, Any]:
        """The era-shaped ``Tool`` JSON of a catalogue entry (cached per descriptor)."""
        cached = self._tools.get(entry.name)
        if cached is None or cached[0] is not entry.descriptor:
            descriptor = entry.descriptor
            cached = (descriptor, tool_json(descriptor, modern=False), tool_json(descriptor, modern=True))
            self._tools[entry.name] = cached
            if len(self._tools) > 2 * len(self.catalogue) + 64:
                self._tools = {k: v for k, v in self._tools.items() if k in self.catalogue}
        return cached[2] if modern else cached[1]

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
