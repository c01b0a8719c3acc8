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

from gateway.askers import SessionAsker, as_json, capabilities_of, client_requests
from gateway.calls import Question
from gateway.errors import INVALID_PARAMS, CallFailed, InvalidCursor
from gateway.principals import principal_of
from gateway.questions import ReplayState
from gateway.resources import surface_error
from gateway.surface_service import SurfaceService, question_in
from gateway.tool_service import is_modern
from schemas.wire import MAX_ASK_ROUNDS


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
    ) -> types.GetPromptResult | types.InputRequiredResult:
        """``prompts/get``; a prompt whose guest asks is re-run with the answers (``workers.sandbox.replay``).

        2026-07-28: a question ends the round with an ``input_required`` result whose sealed
        ``requestState`` (``ReplayState``) holds the answers so far; the retry's ``inputResponses``
        add one round, or, missing a key, get the same question again. 2025-11-25: each question
        is asked on the request's stream (``SessionAsker``) and the prompt re-run at once.
        """
        modern = is_modern(ctx.protocol_version)
        capabilities = capabilities_of(ctx.session.client_capabilities)
        rounds: list[dict[str, Any]] = []
        if modern and params.request_state is not None:
            try:
                state = ReplayState.decode(params.request_state)
            except ValueError:
                raise MCPError(INVALID_PARAMS, "Invalid or expired requestState") from None
            responses = {key: as_json(value) for key, value in (params.input_responses or {}).items()}
            if not state.pending.keys() <= responses.keys():  # SEP-2322: ask again, not an error
                return _input_required(state.rounds, state.pending)
            rounds = [*state.rounds, {key: responses[key] for key in state.pending}]
        asker = None if modern else SessionAsker(ctx.session, ctx.request_id, capabilities)
        if asker is not None:
            capabilities = asker.capabilities  # none when there is no stream to ask on
        arguments = dict(params.arguments or {})
        while True:
            try:
                reply = await self.service.get_prompt(
                    params.name, arguments, principal_of(ctx), rounds=rounds, capabilities=capabilities
                )
            except CallFailed as exc:
                raise surface_error(exc) from None
            requests = question_in(reply)
            if requests is None:
                return types.GetPromptResult.model_validate(reply)
            if asker is None:
                return _input_required(rounds, requests)
            if len(rounds) >= MAX_ASK_ROUNDS:  # the worker refuses the next round anyway; never loop on it
                raise MCPError(INVALID_PARAMS, f"prompt {params.name!r} asked more than {MAX_ASK_ROUNDS} questions")
            answer = await asker.answer(Question("", "", requests))
            if answer.error is not None:
                raise MCPError(INVALID_PARAMS, f"prompt {params.name!r} could not ask the client: {answer.message}")
            rounds = [*rounds, answer.answers]

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


def _input_required(rounds: list[dict[str, Any]], requests: dict[str, Any]) -> types.InputRequiredResult:
    """The 2026-07-28 round's end: the guest's question, and the state its answers continue from.

    Raises:
        MCPError: the guest's question is not one a client could answer (INVALID_PARAMS).
    """
    typed = client_requests(Question("", "", requests))
    if not isinstance(typed, dict):
        raise MCPError(INVALID_PARAMS, f"the prompt's question cannot be asked: {typed.message}")
    state = ReplayState(rounds, requests).encode()  # sealed by the RequestStateBoundary
    return types.InputRequiredResult(input_requests=typed, request_state=state)
