"""Resources, resource templates, prompts and completion at the gateway, free of the mcp SDK.

Lists come from the surface mirror (``gateway.surface_mirror``), paged with the tools' cursor
scheme and filtered by policy the way ``tools/list`` is (``gateway.policy``: what the front door
would let a principal use); reads, gets and completions go to the serving component's workers
over NATS (``gateway.calls.ToolCaller.surface``) with the principal signed as for calls. Errors
are ``CallFailed``: an unknown resource is ``NOT_FOUND`` (JSON-RPC -32602 with ``data.uri``,
SEP-2164), an unknown prompt or reference ``INVALID_PARAMS``.
"""

from __future__ import annotations

from typing import Any

from gateway.errors import BusDisconnected, CallFailed, call_failed
from gateway.policy import Grant
from gateway.principals import ANONYMOUS, Principal
from gateway.surface_mirror import Served, SurfaceMirror, SurfacePage
from gateway.tool_service import ToolService
from schemas.codec import decode_json
from schemas.errors import ErrorCode
from schemas.wire import (
    Complete,
    GetPrompt,
    PromptDescriptor,
    ReadResource,
    ResourceDescriptor,
    ResourceTemplateDescriptor,
    SurfaceRequest,
)


class SurfaceService:
    """What the resource, prompt and completion handlers of both eras ask; shares the tool
    service's policy, bus caller and page size."""

    def __init__(self, surfaces: SurfaceMirror, tools: ToolService) -> None:
        self.surfaces = surfaces
        self._tools = tools

    def _grant(self, principal: Principal) -> Grant | None:
        policy = self._tools.policy
        return policy.grant(principal) if policy.restricts else None

    def resources(self, cursor: str | None, principal: Principal = ANONYMOUS) -> SurfacePage[ResourceDescriptor]:
        """One page of fixed resources ``principal`` may read.

        Raises:
            InvalidCursor: the cursor was not issued by a list of this gateway.
        """
        grant = self._grant(principal)
        allows = None if grant is None else _by_component(grant)
        return self.surfaces.resources.page(cursor, self._tools.page_size, allows)

    def templates(
        self, cursor: str | None, principal: Principal = ANONYMOUS
    ) -> SurfacePage[ResourceTemplateDescriptor]:
        """One page of resource templates ``principal`` may read.

        Raises:
            InvalidCursor: the cursor was not issued by a list of this gateway.
        """
        grant = self._grant(principal)
        allows = None if grant is None else _by_component(grant)
        return self.surfaces.templates.page(cursor, self._tools.page_size, allows)

    def prompts(self, cursor: str | None, principal: Principal = ANONYMOUS) -> SurfacePage[PromptDescriptor]:
        """One page of prompts ``principal`` may get.

        Raises:
            InvalidCursor: the cursor was not issued by a list of this gateway.
        """
        grant = self._grant(principal)
        allows = None if grant is None else (lambda entry: grant.allows(entry.key))
        return self.surfaces.prompts.page(cursor, self._tools.page_size, allows)

    async def read(self, uri: str, principal: Principal = ANONYMOUS) -> Any:
        """``resources/read``: the ``ReadResourceResult`` JSON.

        Raises:
            CallFailed: NOT_FOUND when nobody serves ``uri`` (or its component says so), or a bus failure.
        """
        component = self.surfaces.resource_owner(uri)
        if component is None:
            raise not_found(uri)
        try:
            return await self._ask(component, ReadResource(uri), principal)
        except CallFailed as exc:
            if exc.code == ErrorCode.NOT_FOUND:
                raise not_found(uri) from None
            raise

    async def get_prompt(
        self,
        name: str,
        arguments: dict[str, str],
        principal: Principal = ANONYMOUS,
        *,
        rounds: list[dict[str, Any]] | None = None,
        capabilities: frozenset[str] = frozenset(),
    ) -> Any:
        """``prompts/get``: the ``GetPromptResult`` JSON, or the guest's question (``question_in``).

        ``rounds`` answer the questions the guest asked in earlier runs (``workers.sandbox.replay``);
        ``capabilities`` are the client's, which its questions may need.

        Raises:
            CallFailed: INVALID_PARAMS for an unknown prompt, a missing required argument or the
                prompt's own refusal; or a bus failure.
        """
        prompt = self.surfaces.prompt(name)
        if prompt is None:
            raise call_failed(ErrorCode.INVALID_PARAMS, f"unknown prompt {name!r}", tool=name)
        missing = [a.name for a in prompt.item.arguments if a.required and a.name not in arguments]
        if missing:
            message = f"prompt {name!r} needs argument(s) {', '.join(missing)}"
            raise call_failed(ErrorCode.INVALID_PARAMS, message, tool=name)
        request = GetPrompt(prompt.item.guest_name, arguments, list(rounds or ()), sorted(capabilities))
        return await self._ask(prompt.component, request, principal)

    async def complete(
        self,
        ref_type: str,
        ref: str,
        argument: str,
        value: str,
        context: dict[str, str],
        principal: Principal = ANONYMOUS,
    ) -> Any:
        """``completion/complete`` (``ref_type`` ``prompt`` or ``resource``): the ``completion`` JSON.

        Raises:
            CallFailed: INVALID_PARAMS for a prompt or template nobody serves; or a bus failure.
        """
        if ref_type == "prompt":
            prompt = self.surfaces.prompt(ref)
            if prompt is None:
                raise call_failed(ErrorCode.INVALID_PARAMS, f"unknown prompt {ref!r}", tool=ref)
            component, guest_ref = prompt.component, prompt.item.guest_name
        else:
            owner = self.surfaces.template_owner(ref)
            if owner is None:
                raise call_failed(ErrorCode.INVALID_PARAMS, f"unknown resource template {ref!r}", tool=ref)
            component, guest_ref = owner, ref
        request = Complete("prompt" if ref_type == "prompt" else "resource", guest_ref, argument, value, context)
        return await self._ask(component, request, principal)

    async def _ask(self, component: str, request: SurfaceRequest, principal: Principal) -> Any:
        caller = self._tools.caller
        if caller is None:
            raise BusDisconnected("the gateway is still starting; retry in a moment", tool=component)
        return decode_json(await caller.surface(component, request, principal=principal.subject))


def question_in(reply: Any) -> dict[str, Any] | None:
    """The requests of a prompt's question (a ``GuestQuestion``: ``{"requests"}``, never a
    ``GetPromptResult``, which always has ``messages``), or None for a rendered prompt."""
    requests = reply.get("requests") if isinstance(reply, dict) and "messages" not in reply else None
    return requests if isinstance(requests, dict) else None


def not_found(uri: str) -> CallFailed:
    """The error of a resource nobody serves (the handlers add ``data.uri``)."""
    return call_failed(ErrorCode.NOT_FOUND, f"Resource not found: {uri}", tool=uri)


def _by_component(grant: Grant) -> Any:
    def allows(entry: Served[Any]) -> bool:
        return grant.allows_component(entry.component)

    return allows
