"""Admission: whether a worker takes a call now, and the count of the calls it holds.

Admission is bounded: a worker holds at most ``concurrency`` running guests plus
``queue_depth`` accepted calls waiting for a thread; past that it answers OVERLOADED at once
instead of queueing without bound. A tool's ``max_concurrency`` bounds its own calls the same way.

Admission is also fair when ``calls_per_principal`` is set: one principal (as a gateway signed
it, ``bus.principal``; unsigned callers count as one) holds at most that many calls at once, so
with ``calls_per_principal < concurrency`` its slow calls can never take every guest thread and
another principal's call starts at once. Its next call is refused OVERLOADED (retryable).
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass, field
from time import perf_counter_ns

import structlog

from bus.payloads import too_large_message
from schemas.codec import encode
from schemas.config import WorkerSettings
from schemas.wire import CallToolResult, TextContent
from workers.routes import Route
from workers.sandbox import CallContext

log = structlog.get_logger(__name__)


DEADLINE_PASSED_WAITING = "the call's deadline passed while it waited for a free guest"
"""The result of a call whose budget ran out before a run slot was free (it never ran)."""


@dataclass(frozen=True, slots=True)
class Job:
    """One accepted call, ready for a guest thread."""

    route: Route
    tool: str
    arguments: dict[str, object]
    timeout_s: float
    started_ns: int
    context: CallContext
    headers: Mapping[str, str] = field(default_factory=dict)
    """The request's headers (request id, ``traceparent``) for the observers."""
    principal: str | None = None
    """Who the call is for, as a gateway signed it; ``None``: unsigned (or a task)."""
    share: str | None = None
    """The key this call counts under in the per-principal share; ``None``: not counted."""
    max_result_bytes: int | None = None
    """``[nats] max_payload_bytes``: a larger result is replaced by an ``isError`` result naming it."""

    def run(self, slot_held: bool = False) -> tuple[bytes, CallToolResult]:
        """Run the guest (in a guest thread); the encoded result and the result. ``slot_held``: the
        thread holds a run slot for it already, and keeps it afterwards (``WorkerService``)."""
        slot = None if slot_held else self.context.run_slot
        if slot is not None:
            slot.acquire()  # a thread is free, but guests waiting for answers do not count
        try:
            # The budget was taken from the caller's deadline at acceptance; a call held back for a
            # slot spent part of it waiting, and its caller gives up at the deadline all the same.
            left_s = self.timeout_s - (perf_counter_ns() - self.started_ns) / 1e9
            if self.context.cancelled.is_set():  # cancelled while it waited for a thread
                result = CallToolResult(content=[TextContent("cancelled")], is_error=True)
            elif left_s <= 0:  # run now, it would spin for nobody: what is left is all it gets
                result = CallToolResult(content=[TextContent(DEADLINE_PASSED_WAITING)], is_error=True)
            else:
                result = self.route.component.call(self.tool, self.arguments, left_s, self.context)
        finally:
            if slot is not None:
                slot.release()
        # Encoded here, in the guest's thread, to keep the event loop's share of a call small.
        body = encode(result)
        if self.max_result_bytes is not None and len(body) > self.max_result_bytes:
            # The one place a result is capped: calls, resumed calls and tasks all run here.
            message = too_large_message(f"the result of tool {self.tool!r}", len(body), self.max_result_bytes)
            result = CallToolResult(content=[TextContent(message)], is_error=True)
            body = encode(result)
        return body, result


class Admission:
    """The worker's accepted calls and tasks: counted, shared fairly, cancellable by request id."""

    def __init__(self, worker_id: str, settings: WorkerSettings) -> None:
        self._worker_id = worker_id
        self._concurrency = settings.concurrency
        self._capacity = settings.concurrency + settings.queue_depth
        self._share = settings.calls_per_principal
        self.accepted = 0
        """Calls and tasks accepted and not yet finished: running, or waiting for a guest thread."""
        self._shares: dict[str, int] = {}
        """Principal (``""``: unsigned callers) → its calls accepted and not yet finished."""
        self._cancellable: dict[str, list[CallContext]] = {}
        """Request id → the accepted calls carrying it (normally one), for cancel messages."""
        self.idle = asyncio.Event()
        """Set while nothing is accepted (a stopping worker waits for it)."""
        self.idle.set()

    @property
    def queued(self) -> int:
        """Accepted calls and tasks waiting for a free guest thread (the admission queue)."""
        return max(0, self.accepted - self._concurrency)

    def refusal(self, route: Route, tool: str, principal: str | None) -> str | None:
        """Why a call cannot be accepted now (worker full, tool at its limit, principal at its
        share), or ``None`` when it can."""
        if self.accepted >= self._capacity:
            return f"worker {self._worker_id} is at capacity"
        if route.max_concurrency is not None and route.stats.in_flight >= route.max_concurrency:
            limit = route.max_concurrency
            return f"tool {tool!r} is at its limit of {limit} concurrent calls on worker {self._worker_id}"
        share = self._share
        if share is not None and self._shares.get(principal or "", 0) >= share:
            who = repr(principal) if principal is not None else "unsigned callers"
            return f"principal {who} has its share of {share} calls in flight on worker {self._worker_id}"
        return None

    def share_of(self, principal: str | None) -> str | None:
        """The key a call of ``principal`` counts under in the per-principal share (``None``: no share)."""
        return None if self._share is None else principal or ""

    def admit(self, job: Job) -> None:
        """Count ``job`` as accepted: capacity, idleness, its tool's load, its share, cancellable."""
        self.accepted += 1
        job.route.stats.in_flight += 1
        if job.share is not None:
            self._shares[job.share] = self._shares.get(job.share, 0) + 1
        self.idle.clear()
        if job.context.request_id:
            self._cancellable.setdefault(job.context.request_id, []).append(job.context)

    def release(self, job: Job) -> None:
        """Undo ``admit``'s accounting once the job has finished."""
        self.accepted -= 1
        if not self.accepted:
            self.idle.set()
        job.route.stats.in_flight -= 1
        if job.share is not None:
            left = self._shares[job.share] - 1
            if left:
                self._shares[job.share] = left
            else:
                del self._shares[job.share]
        contexts = self._cancellable.get(job.context.request_id)
        if contexts is not None:
            contexts.remove(job.context)
            if not contexts:
                del self._cancellable[job.context.request_id]

    def cancel(self, request_id: str) -> None:
        """Cancel the accepted calls carrying ``request_id`` (the guest's epoch callback stops it within a tick)."""
        for context in self._cancellable.get(request_id, ()):
            context.cancelled.set()
            log.info("call cancelled", request_id=request_id, worker_id=self._worker_id)
