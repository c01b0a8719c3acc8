"""The MCP side of the gateway, on the SDK's low-level ``Server``.

``tools/list`` reads the in-memory catalogue; ``tools/call`` validates the arguments, then sends
one NATS request through ``ToolCaller``. Results are shaped for the protocol version the client
negotiated (``ctx.protocol_version``): 2025-era clients only accept objects as ``outputSchema``
and ``structuredContent``, 2026-07-28 clients accept any JSON.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from importlib.metadata import PackageNotFoundError, version
from typing import Any, Final

import mcp_types as types
import structlog
from mcp.server.context import CallNext, HandlerResult, ServerRequestContext
from mcp.server.lowlevel import Server
from mcp.server.streamable_http_manager import StreamableHTTPSessionManager
from mcp.server.transport_security import TransportSecuritySettings
from mcp.shared.exceptions import MCPError
from mcp_types.version import MODERN_PROTOCOL_VERSIONS
from pydantic import ValidationError
from starlette.requests import Request

from gateway.calls import ToolCaller
from gateway.catalogue import Catalogue, CatalogueEntry
from gateway.errors import INTERNAL_ERROR, INVALID_PARAMS, CallFailed, InvalidCursor, to_jsonrpc
from schemas.config import GatewaySettings
from schemas.validation import argument_problem
from schemas.wire import ToolDescriptor

log = structlog.get_logger(__name__)

SERVER_NAME: Final = "toolbus"

LOOPBACK_HOSTS: Final = ("127.0.0.1", "localhost", "[::1]")
"""Hosts always accepted by the DNS-rebinding check (with or without a port)."""


def _package_version() -> str:
    try:
        return version("toolbus")
    except PackageNotFoundError:  # running from a source tree that is not installed
        return "0"


def is_modern(protocol_version: str) -> bool:
    """True for the stateless 2026-07-28 era, where any JSON may be structured output."""
    return protocol_version in MODERN_PROTOCOL_VERSIONS


def transport_security(settings: GatewaySettings) -> TransportSecuritySettings:
    """DNS-rebinding protection: loopback plus the configured hosts and origins, always on."""
    hosts = [h for base in LOOPBACK_HOSTS for h in (base, f"{base}:*")]
    origins = [o for base in LOOPBACK_HOSTS for o in (f"http://{base}", f"http://{base}:*")]
    return TransportSecuritySettings(
        enable_dns_rebinding_protection=True,
        allowed_hosts=[*hosts, *settings.allowed_hosts],
        allowed_origins=[*origins, *settings.allowed_origins],
    )


def tool_for(descriptor: ToolDescriptor, *, modern: bool) -> types.Tool:
    """The MCP ``Tool`` of a descriptor as a client of the given era may see it."""
    output_schema = descriptor.output_schema
    if not modern and output_schema is not None and output_schema.get("type") != "object":
        # 2025-era clients reject the whole tools/list over one non-object outputSchema.
        output_schema = None
    return types.Tool(
        name=descriptor.name,
        description=descriptor.description or None,
        input_schema=descriptor.input_schema,
        output_schema=output_schema,
    )


def downgrade_result(result: types.CallToolResult) -> types.CallToolResult:
    """A result a 2025-era client accepts: ``structuredContent`` only when it is an object."""
    structured = result.structured_content
    if structured is None or isinstance(structured, dict):
        return result
    # The value stays readable as text; the spec asks tools to mirror structured output there anyway.
    content = result.content or [types.TextContent(text=json.dumps(structured))]
    return result.model_copy(update={"structured_content": None, "content": content})


def invalid_arguments(tool: str, problem: str) -> types.CallToolResult:
    """The tool-execution error for arguments that do not fit the schema (a model can correct itself)."""
    return types.CallToolResult(
        content=[types.TextContent(text=f"invalid arguments for tool {tool!r}: {problem}")], is_error=True
    )


def mcp_error(exc: CallFailed) -> MCPError:
    """The SDK exception that carries a failed call's JSON-RPC error to the client."""
    error = to_jsonrpc(exc)
    return MCPError(error.code, error.message, error.data)


class ToolFrontend:
    """The ``tools/list`` and ``tools/call`` handlers over a catalogue and a ``ToolCaller``.

    ``caller`` is attached once NATS is connected (the app's lifespan does it).
    """

    def __init__(self, catalogue: Catalogue, *, page_size: int, caller: ToolCaller | None = None) -> None:
        self.catalogue = catalogue
        self.page_size = page_size
        self.caller = caller
        # name -> (descriptor, 2025-era Tool, 2026-era Tool); rebuilt when the descriptor changes.
        self._tools: dict[str, tuple[ToolDescriptor, types.Tool, types.Tool]] = {}

    def _tool(self, entry: CatalogueEntry, modern: bool) -> types.Tool:
        cached = self._tools.get(entry.name)
        if cached is None or cached[0] is not entry.descriptor:
            descriptor = entry.descriptor
            cached = (descriptor, tool_for(descriptor, modern=False), tool_for(descriptor, modern=True))
            self._tools[entry.name] = cached
        return cached[2] if modern else cached[1]

    def input_schema(self, name: str) -> Mapping[str, Any] | None:
        """Schema lookup for the SDK's ``Mcp-Param-*`` header check (avoids a tools/list per call)."""
        return self.catalogue.input_schema(name)

    async def list_tools(
        self, ctx: ServerRequestContext[Any, Any], params: types.PaginatedRequestParams | None
    ) -> types.ListToolsResult:
        """``tools/list``: one page of the catalogue."""
        try:
            page = self.catalogue.page(params.cursor if params else None, self.page_size)
        except InvalidCursor as exc:
            raise MCPError(INVALID_PARAMS, str(exc)) from None
        if len(self._tools) > 2 * len(self.catalogue) + 64:
            self._tools = {k: v for k, v in self._tools.items() if k in self.catalogue}
        modern = is_modern(ctx.protocol_version)
        return types.ListToolsResult(
            tools=[self._tool(entry, modern) for entry in page.entries], next_cursor=page.next_cursor
        )

    async def call_tool(
        self, ctx: ServerRequestContext[Any, Any], params: types.CallToolRequestParams
    ) -> types.CallToolResult:
        """``tools/call``: validate, forward over NATS, shape the worker's result for the client's era."""
        name = params.name
        entry = self.catalogue.get(name)
        if entry is None:
            raise MCPError(
                INVALID_PARAMS, f"unknown tool {name!r}; tools/list shows the tools this gateway serves", {"tool": name}
            )
        arguments = params.arguments if params.arguments is not None else {}
        problem = argument_problem(entry.validator, arguments)
        if problem is not None:
            return invalid_arguments(name, problem)
        if self.caller is None:
            raise MCPError(INTERNAL_ERROR, "the gateway is still starting; retry in a moment")
        protocol_version = ctx.protocol_version
        request = ctx.request
        traceparent = request.headers.get("traceparent") if isinstance(request, Request) else None
        try:
            data = await self.caller.call(name, arguments, era=protocol_version, traceparent=traceparent)
        except CallFailed as exc:
            log.info("call failed", tool=name, reason=exc.code.name, detail=exc.detail or exc.message)
            raise mcp_error(exc) from None
        try:
            result = types.CallToolResult.model_validate_json(data)
        except ValidationError:
            log.warning("worker reply is not a CallToolResult", tool=name, reply=data[:200])
            raise MCPError(
                INTERNAL_ERROR, f"the worker for tool {name!r} sent a reply that is not an MCP CallToolResult"
            ) from None
        return result if is_modern(protocol_version) else downgrade_result(result)


async def hide_internal_errors(ctx: ServerRequestContext[Any, Any], call_next: CallNext) -> HandlerResult:
    """The outermost handler: a bug becomes a plain INTERNAL_ERROR, never a traceback on the wire.

    Without it the SDK's 2025-era dispatcher answers ``code: 0`` with ``str(exc)`` as the message.
    """
    try:
        return await call_next(ctx)
    except (MCPError, ValidationError):
        raise  # already JSON-RPC errors (the SDK maps ValidationError to INVALID_PARAMS)
    except Exception:
        log.exception("request handler failed", method=ctx.method)
        raise MCPError(INTERNAL_ERROR, "internal error in the gateway; see the gateway's logs") from None


def build_server(frontend: ToolFrontend) -> Server[Any]:
    """The low-level MCP server with the tool handlers and nothing else."""
    server: Server[Any] = Server(
        SERVER_NAME,
        version=_package_version(),
        description="WebAssembly components as MCP tools, on NATS",
        get_tool_input_schema=frontend.input_schema,
        on_list_tools=frontend.list_tools,
        on_call_tool=frontend.call_tool,
    )
    # Innermost of the chain, so the SDK's tracing middleware still sees the mapped error.
    server.middleware.append(hide_internal_errors)
    return server


def build_session_manager(server: Server[Any], settings: GatewaySettings) -> StreamableHTTPSessionManager:
    """Streamable HTTP for both eras on one URL: stateful sessions for 2025, stateless 2026-07-28."""
    return StreamableHTTPSessionManager(
        app=server,
        stateless=False,
        json_response=False,
        security_settings=transport_security(settings),
    )
