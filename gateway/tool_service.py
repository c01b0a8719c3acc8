"""The gateway's tool service, independent of any HTTP or MCP framework.

Both front ends — the SDK's handlers (``gateway.server``) and the lean hot path
(``gateway.hotpath``) — go through this one module, so a tool is looked up, validated,
called and shaped for the client's protocol era in exactly one way. What ``tools/list`` shows
of a tool is made once, on its catalogue entry (``gateway.catalogue_mirror.tool_json``).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any, Final

import anyio
import msgspec
import structlog
from mcp_types.version import MODERN_PROTOCOL_VERSIONS

from bus.call_request import new_request_id
from gateway.calls import Question, ToolCaller
from gateway.catalogue_mirror import CatalogueEntry, CatalogueMirror, CataloguePage
from gateway.errors import BusDisconnected, CallFailed, UnknownTool, WorkerFailed
from gateway.events import EventRelay
from gateway.policy import Policy
from gateway.principals import ANONYMOUS, Principal
from gateway.questions import Asker, InputRequired, RoundState
from gateway.views import ViewBook
from schemas.codec import DecodeError, decode, encode
from schemas.errors import CANCELLED, INVALID_ARGUMENTS, OK, TOOL_ERROR, failed_outcome
from schemas.validation import argument_problem, invalid_arguments_message
from schemas.wire import UNSET, CallToolResult, TextContent

log = structlog.get_logger(__name__)

UNKNOWN_TOOL_HINT: Final = "tools/list shows the tools this gateway serves"
INPUT_REQUIRED: Final = "input_required"
"""The outcome of a 2026-07-28 round that ended waiting for the client's answers."""


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


class CallRecord(msgspec.Struct, frozen=True):
    """One finished ``tools/call``, as every observer (metrics, audit, the log line) sees it.

    A msgspec ``Struct``: one is built per call, in ~0.1 µs (a frozen dataclass took ~1 µs).

    ``outcome`` is ``ok``, ``tool_error``, ``invalid_arguments``, ``cancelled``, ``input_required``, or the
    lower-cased ``ErrorCode`` name of a failed call (``no_worker``, ``deadline_exceeded``…).
    """

    tool: str
    principal: Principal
    era: str
    request_id: str
    traceparent: str | None
    arguments: Any
    outcome: str
    error: str | None
    started_at: float
    """Unix time the call began."""
    duration_s: float


CallObserver = Callable[[CallRecord], None]
"""Told of every finished call, on the event loop: must not block (queue slow work)."""


class ToolService:
    """Lists the catalogue and runs calls; ``caller`` is attached once NATS is connected."""

    def __init__(self, catalogue: CatalogueMirror, *, page_size: int, caller: ToolCaller | None = None) -> None:
        self.catalogue = catalogue
        self.page_size = page_size
        self.caller = caller
        self.policy = Policy(None)
        """Who may see and call what (``gateway.policy``); the front door enforces calls, ``page`` filters."""
        self.views = ViewBook()
        """The views (``gateway.views``): on ``/mcp/<view>`` a tool outside the view is unknown."""
        self.observers: list[CallObserver] = []
        self.in_flight = 0
        """Calls begun and not yet finished (the metrics read it when scraped)."""

    def entry(self, name: str, view: str | None = None) -> CatalogueEntry | None:
        """The tool ``name`` as requests on ``view`` see it: ``None`` when it is unknown there.

        The one place a view decides what exists (both front ends ask here, and the task front end).
        """
        entry = self.catalogue.get(name)
        if entry is None or view is None:
            return entry
        chosen = self.views.get(view)
        return entry if chosen is not None and chosen.allows(name) else None

    def page(self, cursor: str | None, principal: Principal = ANONYMOUS, view: str | None = None) -> CataloguePage:
        """One page of the catalogue: the tools ``principal`` may call, of ``view`` when one is named.

        Raises:
            InvalidCursor: the cursor did not come from this catalogue.
        """
        allows: Callable[[str], bool] | None = self.policy.grant(principal).allows if self.policy.restricts else None
        if view is not None:
            chosen = self.views.get(view)
            in_view = chosen.allows if chosen is not None else _nothing
            allows = in_view if allows is None else _both(allows, in_view)
        return self.catalogue.page(cursor, self.page_size, allows)

    async def call(
        self,
        name: str,
        arguments: Any,
        *,
        era: str,
        principal: Principal = ANONYMOUS,
        traceparent: str | None = None,
        events: EventRelay | None = None,
        asker: Asker | None = None,
        resume: RoundState | None = None,
        view: str | None = None,
    ) -> CallToolResult:
        """Validate and run one call; the result is shaped for ``era``; ``events`` hears its progress and logs.

        ``view``: the view the request came in on; a tool outside it is unknown (``entry``).

        ``asker`` answers the guest's questions (``gateway.questions``); without one the guest
        hears that its client cannot be asked. ``resume`` continues a 2026-07-28 call suspended
        in an earlier round, instead of starting one. Every call, whatever its end, is reported to
        ``observers`` as one ``CallRecord``.

        Raises:
            CallFailed: the tool is unknown, or the call failed on the bus (no worker, deadline…).
            InputRequired: the guest waits for answers the client must send in another round.
        """
        # Here, not in the caller: the record names it even when no call is sent.
        request_id = resume.request_id if resume is not None else new_request_id()
        started_at, started = time.time(), time.perf_counter()
        outcome, error = CANCELLED, None
        self.in_flight += 1
        try:
            result, outcome = await self._call(
                name, arguments, era, principal, request_id, traceparent, events, asker, resume, view
            )
            return result
        except CallFailed as exc:
            outcome, error = failed_outcome(exc.code), exc.message
            raise
        except InputRequired as exc:
            outcome, exc.request_id = INPUT_REQUIRED, request_id
            raise
        finally:
            self.in_flight -= 1
            if self.observers:
                duration_s = time.perf_counter() - started
                record = CallRecord(
                    name, principal, era, request_id, traceparent, arguments, outcome, error, started_at, duration_s
                )
                for observer in self.observers:
                    observer(record)

    async def _call(
        self,
        name: str,
        arguments: Any,
        era: str,
        principal: Principal,
        request_id: str,
        traceparent: str | None,
        events: EventRelay | None,
        asker: Asker | None = None,
        resume: RoundState | None = None,
        view: str | None = None,
    ) -> tuple[CallToolResult, str]:
        """The call's result and its outcome (see ``CallRecord``)."""
        entry = self.entry(name, view)
        if entry is None:
            raise UnknownTool(f"unknown tool {name!r}; {UNKNOWN_TOOL_HINT}", tool=name)
        problem = argument_problem(entry.validator, {} if arguments is None else arguments)
        if problem is not None:
            # A tool-execution error, not a protocol one: a model can correct itself.
            message = invalid_arguments_message(problem, tool=name)
            return CallToolResult(content=[TextContent(message)], is_error=True), INVALID_ARGUMENTS
        if self.caller is None:
            raise BusDisconnected("the gateway is still starting; retry in a moment", tool=name)
        caller = self.caller
        can_ask = None if asker is None else asker.capabilities

        async def answered(question: Question) -> bytes | Question:
            try:
                answer = await (asker or Asker()).answer(question)
            except asyncio.CancelledError:
                # The client went away while it was being asked: the guest waits on its worker, stop it.
                with anyio.CancelScope(shield=True):
                    await caller.cancel(request_id)
                raise
            return await caller.resume(
                name,
                question.worker,
                answer,
                era=era,
                request_id=request_id,
                traceparent=traceparent,
                principal=principal.subject,
                events=events,
                can_ask=can_ask,
            )

        try:
            if resume is None:
                reply = await caller.call(
                    name,
                    arguments or {},
                    era=era,
                    request_id=request_id,
                    traceparent=traceparent,
                    principal=principal.subject,
                    events=events,
                    can_ask=can_ask,
                )
            else:
                reply = await answered(resume.question)
            while isinstance(reply, Question):
                reply = await answered(reply)
            data = reply
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
        return (result if is_modern(era) else downgrade(result)), TOOL_ERROR if result.is_error else OK


def _nothing(_tool: str) -> bool:
    return False


def _both(first: Callable[[str], bool], second: Callable[[str], bool]) -> Callable[[str], bool]:
    return lambda tool: first(tool) and second(tool)
