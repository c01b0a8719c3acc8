"""The MCP side of the gateway, on the SDK's low-level ``Server``.

These handlers serve every request the lean hot path (``gateway.hotpath``) hands over: all
methods other than ``tools/call`` and ``tools/list``, and those two whenever a request is
unusual (a rejection to produce, progress or logs to relay, a task to create). Both go through
``gateway.tool_service``; tasks (``tasks/*``, task-augmented ``tools/call``) through ``gateway.task_frontend``.
Tool-list changes reach clients through ``gateway.changes`` (``subscriptions/listen`` and the
2025-era GET stream), both served here.

Progress and logs of a call ride the call's own response stream (SSE): ``notifications/progress``
when the request carried a ``progressToken``, ``notifications/message`` when the client asked
for logs — 2025 era: ``logging/setLevel`` on its session; 2026-07-28: the per-request
``_meta["io.modelcontextprotocol/logLevel"]``. Cancellation (a 2025 ``notifications/cancelled``,
a 2026 client closing its stream) reaches ``call_tool`` as the anyio cancellation, which
``gateway.calls`` turns into a cancel message for the worker.
"""

from __future__ import annotations

from collections.abc import Mapping, MutableMapping
from importlib.metadata import PackageNotFoundError, version
from typing import Any, Final, cast

import mcp_types as types
import msgspec
import structlog
from mcp.server.context import CallNext, HandlerResult, ServerRequestContext
from mcp.server.lowlevel import NotificationOptions, Server
from mcp.server.models import InitializationOptions
from mcp.server.request_state import RequestStateBoundary, RequestStateSecurity
from mcp.server.streamable_http_manager import StreamableHTTPSessionManager
from mcp.server.transport_security import DEFAULT_MAX_REQUEST_BODY_SIZE, TransportSecuritySettings
from mcp.shared.exceptions import MCPError
from pydantic import ValidationError
from starlette.requests import Request

from gateway.askers import RoundAsker, SessionAsker, as_json, capabilities_of
from gateway.boundary import INTERNAL_ERROR_MESSAGE
from gateway.catalogue_mirror import CatalogueEntry
from gateway.changes import ListChanges
from gateway.errors import INTERNAL_ERROR, INVALID_PARAMS, CallFailed, InvalidCursor, to_jsonrpc
from gateway.events import EventRelay
from gateway.inbound import TASKS_EXTENSION
from gateway.principals import principal_of
from gateway.prompts import PromptFrontend
from gateway.questions import InputRequired, RoundState
from gateway.resources import ResourceFrontend
from gateway.sdk_adapter import connection_of
from gateway.task_frontend import LEGACY_TASKS_CAPABILITY, TaskFrontend
from gateway.tool_service import ToolService, is_modern
from gateway.tracing import TRACEPARENT_HTTP_HEADER, client_traceparent
from gateway.views import view_now, view_of
from schemas.config import GatewaySettings

log = structlog.get_logger(__name__)

SERVER_NAME: Final = "toolbus"

LOOPBACK_HOSTS: Final = ("127.0.0.1", "localhost", "[::1]")
"""Hosts always accepted by the DNS-rebinding check (with or without a port)."""


def _package_version() -> str:
    try:
        return version("toolbus")
    except PackageNotFoundError:  # running from a source tree that is not installed
        return "0"


def transport_security(settings: GatewaySettings) -> TransportSecuritySettings:
    """DNS-rebinding protection: loopback plus the configured hosts and origins, always on."""
    hosts = [h for base in LOOPBACK_HOSTS for h in (base, f"{base}:*")]
    origins = [o for base in LOOPBACK_HOSTS for o in (f"http://{base}", f"http://{base}:*")]
    return TransportSecuritySettings(
        enable_dns_rebinding_protection=True,
        allowed_hosts=[*hosts, *settings.allowed_hosts],
        allowed_origins=[*origins, *settings.allowed_origins],
    )


def mcp_error(exc: CallFailed) -> MCPError:
    """The SDK exception that carries a failed call's JSON-RPC error to the client."""
    error = to_jsonrpc(exc)
    return MCPError(error.code, error.message, error.data)


class ToolFrontend:
    """The SDK's ``tools/list``, ``tools/call`` and ``logging/setLevel`` handlers, over ``ToolService``."""

    def __init__(self, service: ToolService) -> None:
        self.service = service
        self.log_levels: dict[str, str] = {}
        """2025-era session id -> the level its client set with ``logging/setLevel``."""

    def input_schema(self, name: str) -> Mapping[str, Any] | None:
        """Schema lookup for the SDK's ``Mcp-Param-*`` header check (avoids a tools/list per call).

        None for a tool unknown on the request's view (``gateway.views.view_now``), as for any unknown tool.
        """
        entry = self.service.entry(name, view_now())
        return None if entry is None else self.service.catalogue.input_schema(name)

    async def list_tools(
        self, ctx: ServerRequestContext[Any, Any], params: types.PaginatedRequestParams | None
    ) -> types.ListToolsResult:
        """``tools/list``: one page of the catalogue."""
        try:
            page = self.service.page(params.cursor if params else None, principal_of(ctx), view_of(ctx))
        except InvalidCursor as exc:
            raise MCPError(INVALID_PARAMS, str(exc)) from None
        modern = is_modern(ctx.protocol_version)
        return types.ListToolsResult(tools=[sdk_tool(e, modern) for e in page.entries], next_cursor=page.next_cursor)

    async def call_tool(
        self, ctx: ServerRequestContext[Any, Any], params: types.CallToolRequestParams
    ) -> types.CallToolResult | types.InputRequiredResult:
        """``tools/call``: validate, forward over NATS, shape the worker's result for the client's era.

        A guest's questions are relayed (``gateway.askers``): 2025-11-25 on the call's stream;
        2026-07-28 as an ``input_required`` result, whose retry (``requestState``, verified by the
        ``RequestStateBoundary`` before this runs, and ``inputResponses``) resumes the guest.
        """
        request = ctx.request
        header = request.headers.get(TRACEPARENT_HTTP_HEADER) if isinstance(request, Request) else None
        traceparent = client_traceparent(header, ctx.meta)
        capabilities = capabilities_of(ctx.session.client_capabilities)
        resume = None
        if is_modern(ctx.protocol_version):
            responses = {key: as_json(value) for key, value in (params.input_responses or {}).items()}
            asker: RoundAsker | SessionAsker = RoundAsker(capabilities, responses)
            if params.request_state is not None:
                try:
                    resume = RoundState.decode(params.request_state)
                except ValueError:
                    raise MCPError(INVALID_PARAMS, "Invalid or expired requestState") from None
        else:
            asker = SessionAsker(ctx.session, ctx.request_id, capabilities)
        try:
            result = await self.service.call(
                params.name,
                params.arguments,
                era=ctx.protocol_version,
                principal=principal_of(ctx),
                traceparent=traceparent,
                events=self.event_relay(ctx),
                asker=asker,
                resume=resume,
                view=view_of(ctx),
            )
        except CallFailed as exc:
            raise mcp_error(exc) from None
        except InputRequired as exc:
            state = RoundState(exc.question, exc.request_id).encode()  # sealed by the RequestStateBoundary
            return types.InputRequiredResult(input_requests=exc.requests, request_state=state)
        return types.CallToolResult.model_validate(msgspec.to_builtins(result))

    def log_level(self, ctx: ServerRequestContext[Any, Any]) -> str | None:
        """The lowest log level the client wants for this request, or ``None`` for no logs."""
        if is_modern(ctx.protocol_version):
            level = (ctx.meta or {}).get(types.LOG_LEVEL_META_KEY)
            return level if isinstance(level, str) else None
        session_id = connection_of(ctx).session_id
        return None if session_id is None else self.log_levels.get(session_id)

    def event_relay(self, ctx: ServerRequestContext[Any, Any]) -> EventRelay | None:
        """What this call's client asked to hear while it runs, or ``None`` when nothing."""
        token = (ctx.meta or {}).get("progress_token")
        level = self.log_level(ctx)
        if token is None and level is None:
            return None
        session, request_id = ctx.session, ctx.request_id

        async def progress(value: float, total: float | None, message: str | None) -> None:
            # The SDK attaches the request's token and sends on the request's stream.
            await session.report_progress(value, total, message)

        async def log_message(level: str, data: Any, logger: str | None) -> None:
            params = types.LoggingMessageNotificationParams(
                level=cast(types.LoggingLevel, level), data=data, logger=logger
            )
            # Request-scoped: on the call's own stream, in both eras.
            await session.send_notification(types.LoggingMessageNotification(params=params), request_id)

        return EventRelay(
            on_progress=progress if token is not None else None,
            on_log=log_message,
            log_level=level,
        )

    async def require_client_capabilities(
        self, ctx: ServerRequestContext[Any, Any], call_next: CallNext
    ) -> HandlerResult:
        """Refuse a ``tools/call`` whose tool needs client capabilities the client did not declare.

        -32021 (HTTP 400 in 2026-07-28) with ``data.requiredCapabilities`` keyed by what is missing,
        as SEP-2575 says, in both eras: the call never reaches a worker (nor becomes a task). The
        capabilities are the 2025 session's ``initialize`` or the 2026 request's envelope. The hot
        path hands such tools to the SDK (``CatalogueMirror.sdk_only``), so this is the one check.
        """
        if ctx.method == "tools/call" and isinstance(ctx.params, Mapping):
            name = ctx.params.get("name")
            entry = self.service.entry(name, view_of(ctx)) if isinstance(name, str) else None
            if entry is not None and entry.descriptor.client_capabilities:
                declared = ctx.session.client_capabilities
                missing = [c for c in entry.descriptor.client_capabilities if getattr(declared, c, None) is None]
                if missing:
                    raise MCPError(
                        types.MISSING_REQUIRED_CLIENT_CAPABILITY,
                        f"tool {name!r} needs the client capabilities {', '.join(missing)}; declare them",
                        {"requiredCapabilities": {c: {} for c in missing}},
                    )
        return await call_next(ctx)

    async def set_log_level(
        self, ctx: ServerRequestContext[Any, Any], params: types.SetLevelRequestParams
    ) -> types.EmptyResult:
        """``logging/setLevel`` (2025 era): the session's calls relay logs at ``level`` and above."""
        connection = connection_of(ctx)
        session_id = connection.session_id
        if session_id is not None:
            if session_id not in self.log_levels:
                connection.exit_stack.callback(_forget, self.log_levels, session_id)
            self.log_levels[session_id] = params.level
        return types.EmptyResult()


def sdk_tool(entry: CatalogueEntry, modern: bool) -> types.Tool:
    """The SDK's ``Tool`` model of an entry for an era: validated once, kept on the entry (never mutated)."""
    tool: types.Tool | None = entry.sdk_tools.get(modern)
    if tool is None:
        tool = entry.sdk_tools[modern] = types.Tool.model_validate(entry.modern_tool if modern else entry.legacy_tool)
    return tool


def _forget(levels: MutableMapping[str, str], session_id: str) -> None:
    levels.pop(session_id, None)


async def hide_internal_errors(ctx: ServerRequestContext[Any, Any], call_next: CallNext) -> HandlerResult:
    """Inside the SDK, a bug becomes a plain INTERNAL_ERROR, never a traceback on the wire.

    The SDK answers a handler's exception itself, so it never reaches ``gateway.boundary``; without
    this its 2025-era dispatcher answers ``code: 0`` with ``str(exc)`` as the message.
    """
    try:
        return await call_next(ctx)
    except (MCPError, ValidationError):
        raise  # already JSON-RPC errors (the SDK maps ValidationError to INVALID_PARAMS)
    except Exception:
        log.exception("request handler failed", method=ctx.method)
        raise MCPError(INTERNAL_ERROR, INTERNAL_ERROR_MESSAGE) from None


class GatewayServer(Server[Any]):
    """The SDK's low-level server, with the capabilities the SDK cannot derive from its handlers.

    - The 2025-era ``initialize`` says ``listChanged: true`` for tools, resources and prompts: the
      SDK advertises ``false`` there unless the initialization options say otherwise (the 2026-07-28 ``server/discover``
      derives the flag from the ``subscriptions/listen`` handler).
    - Tasks (``gateway.task_frontend``): 2025 gets the ``tasks`` capability (``list``, ``cancel``,
      ``requests.tools.call``); 2026-07-28 gets the ``io.modelcontextprotocol/tasks`` extension.
    """

    def get_capabilities(
        self,
        notification_options: NotificationOptions | None = None,
        experimental_capabilities: dict[str, dict[str, Any]] | None = None,
        extensions: dict[str, dict[str, Any]] | None = None,
        *,
        protocol_version: str | None = None,
    ) -> types.ServerCapabilities:
        capabilities = super().get_capabilities(
            notification_options, experimental_capabilities, extensions, protocol_version=protocol_version
        )
        if protocol_version is not None and is_modern(protocol_version):
            return capabilities.model_copy(
                update={"extensions": {**(capabilities.extensions or {}), TASKS_EXTENSION: {}}}
            )
        return capabilities.model_copy(update={"tasks": LEGACY_TASKS_CAPABILITY})

    def create_initialization_options(
        self,
        notification_options: NotificationOptions | None = None,
        experimental_capabilities: dict[str, dict[str, Any]] | None = None,
        extensions: dict[str, dict[str, Any]] | None = None,
    ) -> InitializationOptions:
        changed = NotificationOptions(tools_changed=True, prompts_changed=True, resources_changed=True)
        return super().create_initialization_options(
            notification_options or changed, experimental_capabilities, extensions
        )


def build_server(
    frontend: ToolFrontend,
    changes: ListChanges,
    tasks: TaskFrontend,
    state_security: RequestStateSecurity,
    resources: ResourceFrontend | None = None,
    prompts: PromptFrontend | None = None,
) -> Server[Any]:
    """The low-level MCP server: the tool handlers, list change notifications, tasks, and the
    resources, prompts and completion of components.

    ``state_security`` seals and verifies 2026-07-28 ``requestState`` (``gateway.askers``).
    """
    server = GatewayServer(
        SERVER_NAME,
        version=_package_version(),
        description="WebAssembly components as MCP tools, on NATS",
        get_tool_input_schema=frontend.input_schema,
        on_list_tools=frontend.list_tools,
        on_call_tool=frontend.call_tool,
        on_subscriptions_listen=changes.listen,
    )
    # Registered here rather than as on_set_logging_level, which warns that logging is deprecated
    # in 2026-07-28 (it is, as a request; the per-request _meta level replaces it). Either way
    # the 2025 initialize advertises the logging capability.
    server.add_request_handler("logging/setLevel", types.SetLevelRequestParams, frontend.set_log_level)
    # 2025 era: a session hears of changes once it is initialized (on its GET stream).
    server.add_notification_handler("notifications/initialized", types.NotificationParams, changes.on_initialized)
    # Every requestState is verified before any handler sees it, and every one sent is sealed.
    server.middleware.append(RequestStateBoundary(state_security, default_audience=SERVER_NAME))
    # Innermost of the chain, so the SDK's tracing middleware still sees the mapped error.
    server.middleware.append(hide_internal_errors)
    # Before a task is created or a call made: a client missing what the tool needs is refused.
    server.middleware.append(frontend.require_client_capabilities)
    # tasks/* and task-augmented tools/call (its middleware goes inside hide_internal_errors).
    tasks.register(server)
    if resources is not None:
        resources.register(server)  # resources/* (gateway.resources)
    if prompts is not None:
        prompts.register(server)  # prompts/*, completion/complete (gateway.prompts)
    return server


def build_session_manager(
    server: Server[Any], security: TransportSecuritySettings, *, max_body_bytes: int = DEFAULT_MAX_REQUEST_BODY_SIZE
) -> StreamableHTTPSessionManager:
    """Streamable HTTP for both eras on one URL: stateful sessions for 2025, stateless 2026-07-28.

    ``security`` is ``transport_security(settings)``; the hot path checks requests with the same.
    """
    return StreamableHTTPSessionManager(
        app=server,
        stateless=False,
        json_response=False,
        security_settings=security,
        max_request_body_size=max_body_bytes,
    )
