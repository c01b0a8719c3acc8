"""The worker's bus side: take calls from NATS, run them off the event loop, always reply.

Admission is bounded: a worker holds at most ``concurrency`` running guests plus
``queue_depth`` accepted calls waiting for a thread; past that it answers OVERLOADED at once
instead of queueing without bound. Every request gets exactly one reply.

Admission is also fair when ``calls_per_principal`` is set: one principal (as a gateway signed
it, ``bus.principal``; unsigned callers count as one) holds at most that many calls at once, so
with ``calls_per_principal < concurrency`` its slow calls can never take every guest thread and
another principal's call starts at once. Its next call is refused OVERLOADED (retryable).

The worker is also one instance of the NATS micro service ``toolbus-worker`` (see
``workers.discovery``): its call subscriptions are the service's endpoints, and the counters
behind ``$SRV.STATS`` are kept here, on the path every call takes.
"""

from __future__ import annotations

import asyncio
import os
import socket
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from time import perf_counter_ns
from typing import Protocol

import msgspec
import nats.errors
import structlog
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from bus.connection import caught_up, drain_subscriptions, published_only
from bus.principal import PrincipalSigner
from bus.replies import error_reply
from bus.subjects import Header, Subjects, as_token
from bus.telemetry import valid_traceparent
from schemas.codec import DecodeError, decode_json, encode
from schemas.config import LimitsSettings, WorkerSettings
from schemas.errors import INVALID_ARGUMENTS, OK, TOOL_ERROR, ErrorCode, failed_outcome
from schemas.validation import ArgumentValidator, argument_problem, compile_validator
from schemas.wire import CallEvent, CallToolResult, TextContent, ToolDescriptor, WorkerAnnouncement, log_severity
from workers.discovery import Discovery, ToolStats
from workers.sandbox import CallContext

log = structlog.get_logger(__name__)

DRAIN_TOOL_GRACE_S = 5.0
"""How long dropping one tool (a new package version without it) waits for its delivered calls."""


class CallableComponent(Protocol):
    """What the service needs from a loaded component (see ``workers.sandbox.component``)."""

    @property
    def name(self) -> str: ...

    @property
    def tools(self) -> Sequence[ToolDescriptor]: ...

    @property
    def limits(self) -> LimitsSettings: ...

    def call(
        self, tool_name: str, arguments: dict[str, object], timeout_s: float, context: CallContext | None = None
    ) -> CallToolResult: ...


def new_worker_id() -> str:
    """A worker id that is unique across hosts and restarts and still readable."""
    # Host names may hold dots; the id is a subject token (see Subjects.worker_ping).
    return as_token(f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}")


_Answer = tuple[bytes, dict[str, str] | None, str | None, str]
"""A reply: body, headers (None: a ``CallToolResult``), the error STATS records (None: success),
and the outcome the observers see (``FinishedCall.outcome``)."""


def _refusal(code: ErrorCode, message: str) -> _Answer:
    body, headers = error_reply(code, message)
    return body, headers, f"{code.name}: {message}", failed_outcome(code)


def error_text(result: CallToolResult) -> str:
    """What an ``isError`` result says: its text blocks (for STATS' ``last_error``, a task's status)."""
    texts = [block.text for block in result.content if isinstance(block, TextContent)]
    return " ".join(texts) or "isError result without text"


class FinishedCall(msgspec.Struct, frozen=True):
    """One answered call, as the worker's observers (metrics, the log line, spans) see it.

    ``outcome`` is ``ok``, ``tool_error``, ``invalid_arguments`` or the lower-cased ``ErrorCode``
    name of a typed error reply (``overloaded``, ``cancelled``, ``deadline_exceeded``…).
    """

    tool: str
    request_id: str
    traceparent: str | None
    """The request's ``traceparent`` when it is a valid one (checked once, here, for every observer)."""
    outcome: str
    error: str | None
    duration_s: float
    """From the request's arrival to its reply being queued."""
    instantiate_s: float | None
    """Time the guest took to instantiate (``None``: no guest ran, or a warm instance was reused)."""
    principal: str | None = None
    """Who the call is for, when a gateway vouched for it (``bus.principal``); ``None``: unsigned."""


CallObserver = Callable[[FinishedCall], None]
"""Told of every answered call, on the event loop: must not block."""


@dataclass(frozen=True, slots=True)
class _Route:
    """Everything a call to one tool needs, found with one lookup."""

    component: CallableComponent
    validator: ArgumentValidator
    stats: ToolStats
    max_concurrency: int | None
    """Calls of this tool a worker holds at once (running or waiting for a thread)."""


@dataclass(frozen=True, slots=True)
class _Job:
    """One accepted call, ready for a guest thread."""

    route: _Route
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

    def run(self) -> tuple[bytes, CallToolResult]:
        if self.context.cancelled.is_set():  # cancelled while it waited for a thread
            result = CallToolResult(content=[TextContent("cancelled")], is_error=True)
        else:
            result = self.route.component.call(self.tool, self.arguments, self.timeout_s, self.context)
        # Encoded here, in the guest's thread, to keep the event loop's share of a call small.
        return encode(result), result


class WorkerService:
    """Serves the tools of some components on the bus until stopped."""

    def __init__(
        self,
        nc: NatsClient,
        subjects: Subjects,
        settings: WorkerSettings,
        components: Sequence[CallableComponent],
        worker_id: str | None = None,
        principal_signer: PrincipalSigner | None = None,
    ) -> None:
        self._nc = nc
        self._principal_signer = principal_signer
        """Checks the principal a call's headers claim; without it no principal is believed."""
        self._subjects = subjects
        self._settings = settings
        self.worker_id = worker_id or new_worker_id()
        self._routes: dict[str, _Route] = {}
        self._tools: dict[str, ToolDescriptor] = {}
        self._sources: dict[str, list[str]] = {}
        """Source (a configured component or a published package) → the names of its tools."""
        for component in components:
            self._add_source(component.name, component, component.tools)
        self._capacity = settings.concurrency + settings.queue_depth
        self._accepted = 0
        self._shares: dict[str, int] = {}
        """Principal (``""``: unsigned callers) → its calls accepted and not yet finished."""
        self._pool = ThreadPoolExecutor(max_workers=settings.concurrency, thread_name_prefix="guest")
        self._cancellable: dict[str, list[CallContext]] = {}
        """Request id → the accepted calls carrying it (normally one), for cancel messages."""
        self._calls: dict[str, Subscription] = {}
        """Tool → its call subscription (queue group)."""
        self._subscriptions: list[Subscription] = []
        self.discovery = Discovery(
            nc,
            instance_id=self.worker_id,
            metadata={
                "worker_id": self.worker_id,
                "prefix": subjects.prefix,
                "concurrency": str(settings.concurrency),
                "queue_depth": str(settings.queue_depth),
            },
            endpoints=self._endpoints(),
            stats={name: route.stats for name, route in self._routes.items()},
        )
        self._replies: asyncio.Queue[tuple[str, bytes, dict[str, str] | None]] = asyncio.Queue()
        self._idle = asyncio.Event()
        self._idle.set()
        self._background: list[asyncio.Task[None]] = []
        self._state: str = "ready"
        self.observers: list[CallObserver] = []
        """Told of every answered call (metrics, the per-call log line, spans)."""

    @property
    def tools(self) -> list[ToolDescriptor]:
        return list(self._tools.values())

    @property
    def accepted(self) -> int:
        """Calls and tasks accepted and not yet finished: running, or waiting for a guest thread."""
        return self._accepted

    @property
    def queued(self) -> int:
        """Accepted calls and tasks waiting for a free guest thread (the admission queue)."""
        return max(0, self._accepted - self._settings.concurrency)

    def _add_source(self, source: str, component: CallableComponent, tools: Sequence[ToolDescriptor]) -> None:
        if source in self._sources:
            raise ValueError(f"two components are named {source!r}")
        for tool in tools:
            if tool.name in self._routes:
                raise ValueError(f"tool {tool.name!r} is exported by two components")
        for tool in tools:
            self._routes[tool.name] = _Route(
                component, compile_validator(tool.input_schema), ToolStats(), component.limits.max_concurrency
            )
            self._tools[tool.name] = tool
        self._sources[source] = [tool.name for tool in tools]

    def _endpoints(self) -> dict[str, tuple[str, str]]:
        return {name: (self._subjects.call(name), self._subjects.worker_queue) for name in self._routes}

    async def set_source(self, source: str, component: CallableComponent, tools: Sequence[ToolDescriptor]) -> None:
        """Serve ``component``'s ``tools`` as ``source``, replacing what ``source`` served before.

        The swap is atomic for callers: a call is routed either to the old component (and
        finishes there) or to the new one. Tools the new version no longer has stop being
        taken (their subscriptions are drained: calls already delivered are still answered).
        """
        old = self._sources.pop(source, [])
        previous = {name: (self._routes.pop(name), self._tools.pop(name)) for name in old}
        try:
            self._add_source(source, component, tools)
        except ValueError:
            for name, (route, tool) in previous.items():
                self._routes[name], self._tools[name] = route, tool
            self._sources[source] = old
            raise
        for name in set(old) - set(self._routes):
            await self._unsubscribe_calls(name)
        await self._after_change()

    async def remove_source(self, source: str) -> None:
        """Stop serving ``source``'s tools (calls already delivered are still answered)."""
        for name in self._sources.pop(source, []):
            self._routes.pop(name, None)
            self._tools.pop(name, None)
            await self._unsubscribe_calls(name)
        await self._after_change()

    async def _after_change(self) -> None:
        if self._state != "ready":
            return
        for name in self._routes:
            if name not in self._calls:
                self._calls[name] = await self._nc.subscribe(
                    self._subjects.call(name),
                    queue=self._subjects.worker_queue,
                    cb=published_only(self._subjects.call(name), self._on_call),
                )
        self.discovery.update(self._endpoints(), {name: route.stats for name, route in self._routes.items()})
        await caught_up(self._nc)  # the new subscriptions are in place before anyone hears of them
        await self.announce()

    async def _unsubscribe_calls(self, name: str) -> None:
        sub = self._calls.pop(name, None)
        if sub is not None:
            try:
                await drain_subscriptions(self._nc, [sub], DRAIN_TOOL_GRACE_S)
            except nats.errors.ConnectionClosedError:
                pass

    async def start(self) -> None:
        """Subscribe to every tool's call subject (queue group), become discoverable, announce.

        When this returns (and when the ``ready`` announcement goes out) the server has every
        subscription: a call sent from then on reaches this worker.
        """
        self._loop = asyncio.get_running_loop()
        self._background.append(asyncio.create_task(self._send_replies()))
        for name in self._routes:
            self._calls[name] = await self._nc.subscribe(
                self._subjects.call(name),
                queue=self._subjects.worker_queue,
                cb=published_only(self._subjects.call(name), self._on_call),
            )
        s = self._subjects
        ping = await self._nc.subscribe(
            s.worker_ping(self.worker_id), cb=published_only(s.worker_ping(self.worker_id), self._on_ping)
        )
        self._subscriptions.append(
            await self._nc.subscribe(s.cancel_any, cb=published_only(s.cancel_any, self._on_cancel))
        )
        hello = await self._nc.subscribe(s.registry_hello, cb=published_only(s.registry_hello, self._on_registry_hello))
        self._subscriptions += [ping, hello]
        await self.discovery.start()
        # Not nc.flush(): in nats-py its PING can overtake the SUBs, and a caller acting on our
        # return (or on the announcement) would get "no responders" now and then.
        await caught_up(self._nc)
        await self.announce()
        self._background.append(asyncio.create_task(self._announce_periodically()))
        log.info("worker ready", worker_id=self.worker_id, tools=sorted(self._routes))

    async def stop(self, grace_s: float = 10.0) -> None:
        """Drain: announce it, stop taking calls, let accepted ones finish (within ``grace_s``).

        Calls the server delivered before our unsubscribe reached it are still answered
        (the call subscriptions are drained, not dropped); afterwards a caller gets "no
        responders" from the server, or another worker. Guests still running when the grace
        period ends are left to their epoch deadline and their callers get no reply.
        """
        deadline = time.monotonic() + grace_s
        self._state = "draining"
        # Say so before unsubscribing, so the registry stops counting on us for new calls.
        try:
            await self.announce()
        except nats.errors.ConnectionClosedError:
            pass
        await self.discovery.stop()
        calls, self._calls = list(self._calls.values()), {}
        try:
            # Not Subscription.drain alone: nats-py's can drop calls delivered at the moment of
            # the unsubscribe, which their callers never hear about (see drain_subscriptions).
            await asyncio.wait_for(drain_subscriptions(self._nc, calls, grace_s), grace_s)
        except TimeoutError:
            log.warning("draining call subscriptions timed out")
        except nats.errors.ConnectionClosedError:
            pass  # nothing more will be delivered anyway
        for sub in self._subscriptions:
            try:
                await sub.unsubscribe()
            except (nats.errors.ConnectionClosedError, nats.errors.BadSubscriptionError):
                pass
        try:
            await asyncio.wait_for(self._idle.wait(), max(0.0, deadline - time.monotonic()))
        except TimeoutError:
            log.warning("stopping with calls still running", in_flight=self._accepted)
        # Let the replier send what the last guests returned.
        try:
            await asyncio.wait_for(self._replies.join(), max(0.1, deadline - time.monotonic()))
        except TimeoutError:
            log.warning("stopping with replies unsent", unsent=self._replies.qsize())
        for task in self._background:
            task.cancel()
        self._state = "stopped"
        try:
            await self.announce()
        except nats.errors.ConnectionClosedError:
            pass
        # Guests still running past the grace period are interrupted by their epoch deadline.
        self._pool.shutdown(wait=False, cancel_futures=True)

    async def announce(self) -> None:
        """Publish what this worker serves and how loaded it is."""
        announcement = WorkerAnnouncement(
            worker_id=self.worker_id,
            tools=list(self._tools.values()),
            concurrency=self._settings.concurrency,
            in_flight=self._accepted,
            state=self._state,  # type: ignore[arg-type]
        )
        await self._nc.publish(self._subjects.announce, encode(announcement))

    async def _announce_periodically(self) -> None:
        while True:
            await asyncio.sleep(self._settings.announce_interval_s)
            try:
                await self.announce()
            except (nats.errors.ConnectionClosedError, nats.errors.OutboundBufferLimitError) as exc:
                log.warning("announce failed", error=str(exc))

    async def _on_ping(self, msg: Msg) -> None:
        if msg.reply:
            await self._nc.publish(msg.reply, b"")

    async def _on_registry_hello(self, msg: Msg) -> None:
        await self.announce()

    async def _on_call(self, msg: Msg) -> None:
        # nats-py awaits this callback one message at a time, so it only does the cheap part
        # (checks, decoding, validation) and hands the guest to the pool; the reply comes back
        # through the replier. No task per call: under load that bookkeeping cost more than
        # a small guest's whole run.
        if not msg.reply:
            return  # a publish without a reply subject is not a call; nobody would hear the answer
        started_ns = perf_counter_ns()
        tool = self._subjects.tool_from_call(msg.subject)
        route = self._routes.get(tool)
        if route is None:  # only our tools' subjects are subscribed; kept as a guard
            self._queue_reply(msg.reply, *error_reply(ErrorCode.UNKNOWN_TOOL, f"unknown tool {tool!r}"))
            return
        stats = route.stats
        stats.requests += 1
        headers = msg.headers or {}
        signer = self._principal_signer
        principal = None
        if signer is not None and Header.PRINCIPAL in headers:
            principal = signer.verified(headers, msg.subject, msg.data)
        refusal = self._admission_refusal(route, tool, principal)
        if refusal is not None:
            stats.overloaded += 1
            overloaded = _refusal(ErrorCode.OVERLOADED, refusal)
            self._answer(msg.reply, stats, started_ns, overloaded, tool, headers, principal)
            return
        try:
            outcome = self._prepare(route, tool, msg.data, headers, started_ns, principal)
        except Exception:  # the one outermost handler: a bug must still produce a reply
            log.exception("call failed inside the worker", tool=tool, worker_id=self.worker_id)
            outcome = _refusal(ErrorCode.INTERNAL, "internal error in worker; see worker logs")
        if isinstance(outcome, tuple):
            self._answer(msg.reply, stats, started_ns, outcome, tool, headers, principal)
            return
        future = self._submit(outcome)
        future.add_done_callback(partial(self._guest_done, msg.reply, outcome))

    @property
    def _at_capacity(self) -> str:
        return f"worker {self.worker_id} is at capacity"

    def _admission_refusal(self, route: _Route, tool: str, principal: str | None) -> str | None:
        """Why a call cannot be accepted now (worker full, tool at its limit, principal at its
        share), or ``None`` when it can."""
        if self._accepted >= self._capacity:
            return self._at_capacity
        if route.max_concurrency is not None and route.stats.in_flight >= route.max_concurrency:
            limit = route.max_concurrency
            return f"tool {tool!r} is at its limit of {limit} concurrent calls on worker {self.worker_id}"
        share = self._settings.calls_per_principal
        if share is not None and self._shares.get(principal or "", 0) >= share:
            who = repr(principal) if principal is not None else "unsigned callers"
            return f"principal {who} has its share of {share} calls in flight on worker {self.worker_id}"
        return None

    def _prepare(
        self, route: _Route, tool: str, data: bytes, headers: dict[str, str], started_ns: int, principal: str | None
    ) -> _Job | _Answer:
        """The guest job for a call, or the reply when the call ends before reaching a guest."""
        timeout_s = self._settings.max_call_timeout_s
        deadline_ms = headers.get(Header.DEADLINE_MS)
        if deadline_ms:
            try:
                remaining_s = int(deadline_ms) / 1000 - time.time()
            except ValueError:
                return _refusal(ErrorCode.BAD_REQUEST, f"{Header.DEADLINE_MS} must be epoch milliseconds")
            if remaining_s <= 0:
                return _refusal(ErrorCode.DEADLINE_EXCEEDED, "the call's deadline passed before it started")
            timeout_s = min(timeout_s, remaining_s)
        try:
            arguments = decode_json(data) if data.strip() else {}
        except DecodeError as exc:
            return _refusal(ErrorCode.BAD_REQUEST, f"request body is not valid JSON: {exc}")
        problem = argument_problem(route.validator, arguments)
        if problem is not None:
            message = f"invalid arguments: {problem}"
            body = encode(CallToolResult(content=[TextContent(message)], is_error=True))
            return body, None, message, INVALID_ARGUMENTS
        share = None if self._settings.calls_per_principal is None else principal or ""
        return _Job(route, tool, arguments, timeout_s, started_ns, self._context(headers), headers, principal, share)

    def _context(self, headers: dict[str, str]) -> CallContext:
        """The call's link to its caller: cancellable by request id, events where it asked."""
        context = CallContext(request_id=headers.get(Header.REQUEST_ID, ""))
        events_subject = headers.get(Header.EVENTS)
        if events_subject:
            loop = self._loop

            def publish(event: CallEvent) -> None:
                # From the guest's thread; the replier publishes in order, so events precede the reply.
                loop.call_soon_threadsafe(self._queue_reply, events_subject, encode(event), None)

            context.events = publish
            level = headers.get(Header.LOG_LEVEL)
            context.log_level = log_severity(level)
        return context

    async def _on_cancel(self, msg: Msg) -> None:
        request_id = msg.subject.rpartition(".")[2]
        for context in self._cancellable.get(request_id, ()):
            context.cancelled.set()  # the guest's epoch callback stops it within a tick
            log.info("call cancelled", request_id=request_id, worker_id=self.worker_id)

    def _answer(
        self,
        reply_to: str,
        stats: ToolStats,
        started_ns: int,
        answer: _Answer,
        tool: str,
        request: Mapping[str, str],
        principal: str | None = None,
        instantiate_s: float | None = None,
    ) -> None:
        """Queue the reply, count it in STATS, tell the observers; ``request`` holds the call's
        headers, ``principal`` who it was for (when signed)."""
        body, headers, error, outcome = answer
        if error is None:
            stats.succeeded(started_ns)
        else:
            stats.failed(started_ns, error, typed=headers is not None)
        self._queue_reply(reply_to, body, headers)
        if self.observers:
            self._observe(tool, request, principal, outcome, error, started_ns, instantiate_s)

    def _observe(
        self,
        tool: str,
        request: Mapping[str, str],
        principal: str | None,
        outcome: str,
        error: str | None,
        started_ns: int,
        instantiate_s: float | None,
    ) -> None:
        request_id = request.get(Header.REQUEST_ID, "")
        record = FinishedCall(
            tool,
            request_id,
            valid_traceparent(request.get(Header.TRACEPARENT)),
            outcome,
            error,
            (perf_counter_ns() - started_ns) / 1e9,
            instantiate_s,
            principal,
        )
        for observer in self.observers:
            observer(record)

    def _guest_done(self, reply_to: str, job: _Job, future: Future[tuple[bytes, CallToolResult]]) -> None:
        # Runs in the guest's thread: hand the outcome to the event loop.
        self._loop.call_soon_threadsafe(self._finish, reply_to, job, future)

    def _finish(self, reply_to: str, job: _Job, future: Future[tuple[bytes, CallToolResult]]) -> None:
        self._release(job)
        stats = job.route.stats
        if future.cancelled():
            return  # the pool shut down after the grace period: the worker is exiting
        error = future.exception()
        if error is None:
            body, result = future.result()
            if result.is_error and job.context.cancelled.is_set():
                # The caller is most likely gone; anyone still listening learns why it ended.
                cancelled = _refusal(ErrorCode.CANCELLED, "cancelled by the caller")
                self._answer(reply_to, stats, job.started_ns, cancelled, job.tool, job.headers, job.principal)
                return
            failure = error_text(result) if result.is_error else None
            answer = (body, None, failure, OK if failure is None else TOOL_ERROR)
            instantiate_s = job.context.instantiate_s
            self._answer(reply_to, stats, job.started_ns, answer, job.tool, job.headers, job.principal, instantiate_s)
            return
        log.error("call failed inside the worker", tool=job.tool, worker_id=self.worker_id, exc_info=error)
        internal = _refusal(ErrorCode.INTERNAL, "internal error in worker; see worker logs")
        self._answer(reply_to, stats, job.started_ns, internal, job.tool, job.headers, job.principal)

    async def run_task(self, tool: str, arguments: dict[str, object], context: CallContext) -> CallToolResult:
        """Run one task's guest in the pool, as a call would run (same limits, same accounting).

        ``context.request_id`` is the task id: a cancel message for it interrupts the guest.
        Returns an ``isError`` result for an unknown tool or invalid arguments.
        """
        route = self._routes.get(tool)
        if route is None:
            return CallToolResult(content=[TextContent(f"unknown tool {tool!r} on this worker")], is_error=True)
        problem = argument_problem(route.validator, arguments)
        if problem is not None:
            return CallToolResult(content=[TextContent(f"invalid arguments: {problem}")], is_error=True)
        job = _Job(route, tool, arguments, self._settings.max_call_timeout_s, perf_counter_ns(), context)
        try:
            _, result = await asyncio.wrap_future(self._submit(job))
        finally:
            self._release(job)
        return result

    def _submit(self, job: _Job) -> Future[tuple[bytes, CallToolResult]]:
        """Count ``job`` as accepted (capacity, idleness, its tool's load, cancellable) and run it."""
        self._accepted += 1
        job.route.stats.in_flight += 1
        if job.share is not None:
            self._shares[job.share] = self._shares.get(job.share, 0) + 1
        self._idle.clear()
        if job.context.request_id:
            self._cancellable.setdefault(job.context.request_id, []).append(job.context)
        return self._pool.submit(job.run)

    def _release(self, job: _Job) -> None:
        """Undo ``_submit``'s accounting once the job has finished."""
        self._accepted -= 1
        if not self._accepted:
            self._idle.set()
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

    def _queue_reply(self, reply_to: str, body: bytes, headers: dict[str, str] | None) -> None:
        self._replies.put_nowait((reply_to, body, headers))

    async def _send_replies(self) -> None:
        """Publish queued replies; publishing several per wake-up lets nats-py flush them together."""
        while True:
            reply_to, body, headers = await self._replies.get()
            try:
                await self._reply(reply_to, body, headers)
            finally:
                self._replies.task_done()

    async def _reply(self, reply_to: str, body: bytes, headers: dict[str, str] | None) -> None:
        try:
            await self._nc.publish(reply_to, body, headers=headers)
        except nats.errors.MaxPayloadError:
            size = len(body)
            limit = self._nc.max_payload
            body, headers = error_reply(
                ErrorCode.PAYLOAD_TOO_LARGE, f"result is {size} bytes; the bus allows at most {limit} per message"
            )
            await self._nc.publish(reply_to, body, headers=headers)
        except nats.errors.ConnectionClosedError:
            log.warning("reply lost: connection closed")
