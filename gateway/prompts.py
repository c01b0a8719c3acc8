"""``prompts/list``, ``prompts/get`` and ``completion/complete`` at the gateway, on the SDK's
low-level server, in both protocol eras.

Prompts are listed from the surface mirror under their MCP names (the component's tool prefix
plus the guest's name) and rendered by the serving component's workers
(``gateway.surface_service``); an unknown prompt, a missing required argument or the prompt's
own refusal is JSON-RPC -32602. ``completion/complete`` asks the component serving the prompt
(``ref/prompt``) or the resource template (``ref/resource``); a component without the
``completion`` export completes nothing (an empty list). Who may get or complete what is decided
once, by the front door (``gateway.front_door``); the list shows what it would allow.
"""

from __future__ import annotations

from typing import Any

import mcp_types as types
import msgspec
from mcp.server.context import ServerRequestContext
from mcp.shared.exceptions import MCPError

from gateway.errors import INVALID_PARAMS, CallFailed, InvalidCursor
from gateway.principals import principal_of
from gateway.resources import surface_error
from gateway.surface_service import SurfaceService


class PromptFrontend:
    """The SDK's ``prompts/*`` and ``completion/complete`` handlers, over ``SurfaceService``."""

    def __init__(self, service: SurfaceService) -> None:
        self.service = service

    def register(self, server: Any) -> None:
        """Add the handlers to an SDK ``Server``."""
        server.add_request_handler("prompts/list", types.PaginatedRequestParams, self.list_prompts)
        server.add_request_handler("prompts/get", types.GetPromptRequestParams, self.get)
        server.add_request_handler("completion/complete", types.CompleteRequestParams, self.complete)

    async def list_prompts(
        self, ctx: ServerRequestContext[Any, Any], params: types.PaginatedRequestParams | None
    ) -> types.ListPromptsResult:
        try:
            page = self.service.prompts(params.cursor if params else None, principal_of(ctx))
        except InvalidCursor as exc:
            raise MCPError(INVALID_PARAMS, str(exc)) from None
        prompts = [
            types.Prompt.model_validate({k: v for k, v in msgspec.to_builtins(e.item).items() if k != "guestName"})
            for e in page.entries
        ]
        return types.ListPromptsResult(prompts=prompts, next_cursor=page.next_cursor)

    async def get(
        self, ctx: ServerRequestContext[Any, Any], params: types.GetPromptRequestParams
    ) -> types.GetPromptResult:
        try:
            result = await self.service.get_prompt(params.name, dict(params.arguments or {}), principal_of(ctx))
        except CallFailed as exc:
            raise surface_error(exc) from None
        return types.GetPromptResult.model_validate(result)

    async def complete(
        self, ctx: ServerRequestContext[Any, Any], params: types.CompleteRequestParams
    ) -> types.CompleteResult:
        ref = params.ref
        if isinstance(ref, types.PromptReference):
            ref_type, name = "prompt", ref.name
        else:
            ref_type, name = "resource", str(ref.uri)
        context = dict(params.context.arguments or {}) if params.context is not None else {}
        try:
            completion = await self.service.complete(
                ref_type, name, params.argument.name, params.argument.value, context, principal_of(ctx)
            )
        except CallFailed as exc:
            raise surface_error(exc) from None
        return types.CompleteResult(completion=types.Completion.model_validate(completion))
