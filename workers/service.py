"""The worker's bus side: take calls from NATS, run them off the event loop, always reply.

``WorkerService`` wires the parts together and owns the call path: a call is routed
(``workers.routes``), admitted or refused OVERLOADED (``workers.admission``), checked (deadline,
JSON, arguments), run in a guest thread, and answered through the outbox (``workers.outbox``).
Every request gets exactly one reply; every answer is told to the observers (``FinishedCall``).
What the worker serves is announced (``workers.announcer``) and swapped source by source, and
whoever follows the tool set (the task runner) is told at once of every change.

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
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future
from time import perf_counter_ns

import structlog
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from bus.cancellation import cancel_and_wait
from bus.connection import caught_up, drain_subscriptions, published_only, published_only_plain, unsubscribe_quietly
from bus.direct_delivery import subscribe_direct
from bus.errors import BusError, ConnectionClosed, PayloadGone, PayloadRefused, PayloadTooLarge
from bus.payloads import Payloads
from bus.principal import PrincipalSigner
from bus.replies import error_reply
from bus.subjects import Header, Subjects, as_token
from schemas.codec import DecodeError, decode, decode_json, encode
from schemas.config import WorkerSettings
from schemas.errors import INVALID_ARGUMENTS, OK, TOOL_ERROR, ErrorCode
from schemas.validation import argument_problem, invalid_arguments_message
from schemas.wire import CallEvent, CallToolResult, GuestAnswer, TextContent, ToolDescriptor, log_severity
from workers.admission import Admission, Job
from workers.announcer import Announcer
from workers.answers import Answer, CallObserver, error_answer, error_text, finished_call
from workers.conversation import Conversation, Suspensions, capabilities_in, declares_nothing
from workers.discovery import Discovery, ToolStats
from workers.guest_threads import GuestThreads, RunSlots
from workers.outbox import Outbox
from workers.routes import CallableComponent, Route, Routes
from workers.sandbox import CallContext
from workers.sandbox.limits import budget_before_deadline
from workers.surface import SurfaceServer

log = structlog.get_logger(__name__)

DRAIN_TOOL_GRACE_S = 5.0
"""How long dropping one tool (a new package version without it) waits for its delivered calls."""


def new_worker_id() -> str:
    """A worker id that is unique across hosts and restarts and still readable."""
    # Host names may hold dots; the id is a subject token (see Subjects.worker_ping).
    return as_token(f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}")


ToolSetListener = Callable[[frozenset[str]], None]
"""Told the names of the tools the worker serves each time that set changes (a package published,
swapped or retired), on the event loop: must not block."""


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
        loading: Sequence[str] = (),
        payloads: Payloads | None = None,
    ) -> None:
        self._nc = nc
        self._payloads = payloads or Payloads(nc, subjects)
        """Claim checks: arguments and results larger than one message (``bus.payloads``)."""
        self._claiming: set[asyncio.Task[None]] = set()
        """Calls whose arguments are being read from the Object Store (at most ``concurrency``)."""
        self._principal_signer = principal_signer
        """Checks the principal a call's headers claim; without it no principal is believed."""
        self._subjects = subjects
        self._settings = settings
        self.worker_id = worker_id or new_worker_id()
        self._table = Routes()
        for component in components:
            self._table.add(component.name, component, component.tools)
        self._routes = self._table.by_tool
        """Tool → its route: the call path's one lookup."""
        self._admission = Admission(self.worker_id, settings)
        # Threads for the running guests plus those waiting for their client's answer; the run
        # slots keep the running ones at ``concurrency`` (workers.conversation).
        self._pool = GuestThreads(settings.concurrency + settings.waiting_guests)
        self._run_slots = RunSlots(settings.concurrency)
        self._done: deque[tuple[str, Job, tuple[bytes, CallToolResult] | BaseException]] = deque()
        """Calls whose guest finished, waiting for the event loop to answer them (``_run_guest``)."""
        self._answering = False
        """The loop has been woken to answer ``_done`` and has not started yet."""
        self._held_back: deque[tuple[str, Job]] = deque()
        """Accepted calls waiting for a run slot, in arrival order (``_run_held_back``)."""
        self._starting = False
        """A thread was given ``_run_held_back`` and has not tried for its slot yet."""
        self._run_slots.on_give_back = self._start_held_back
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
            stats=self._table.stats(),
        )
        self._outbox = Outbox(nc, subjects, self._payloads)
        self._suspensions = Suspensions(settings.waiting_guests)
        """Calls whose guest waits for its client's answer (``workers.conversation``)."""
        self.surfaces = SurfaceServer(
            nc, subjects, settings, self._admission, self._pool, self._outbox, principal_signer
        )
        """Resources, prompts and completion of the components that export them (``workers.surface``)."""
        for component in components:
            self.surfaces.set(component.name, component)
        self._announcer = Announcer(
            nc,
            subjects,
            self.worker_id,
            settings,
            lambda: self._table.tools,
            lambda: self._admission.accepted,
            lambda: self.surfaces.surfaces,
        )
        # Components still loading are served later, each by ``set_source`` as it loads.
        self._announcer.loading = tuple(loading)
        self._background: list[asyncio.Task[None]] = []
        self.observers: list[CallObserver] = []
        """Told of every answered call (metrics, the per-call log line, spans)."""
        self.tool_listeners: list[ToolSetListener] = []
        """Told of every change of the tool set (the task runner takes tasks of exactly these tools)."""

    @property
    def tools(self) -> list[ToolDescriptor]:
        return self._table.tools

    @property
    def accepted(self) -> int:
        """Calls and tasks accepted and not yet finished: running, or waiting for a guest thread."""
        return self._admission.accepted

    @property
    def queued(self) -> int:
        """Accepted calls and tasks waiting for a free guest thread (the admission queue)."""
        return self._admission.queued

    def _endpoints(self) -> dict[str, tuple[str, str]]:
        return {name: (self._subjects.call(name), self._subjects.worker_queue) for name in self._routes}

    async def set_source(self, source: str, component: CallableComponent, tools: Sequence[ToolDescriptor]) -> None:
        """Serve ``component``'s ``tools`` as ``source``, replacing what ``source`` served before.

        The swap is atomic for callers: a call is routed either to the old component (and
        finishes there) or to the new one. Tools the new version no longer has stop being
        taken (their subscriptions are drained: calls already delivered are still answered).

        A configured component still announced as loading is no longer, from the announcement
        that tells its tools on.

        Raises:
            ValueError: another source serves one of ``tools`` (nothing changes).
        """
        dropped = self._table.replace(source, component, tools)
        self._announcer.loading = tuple(name for name in self._announcer.loading if name != source)
        self.surfaces.set(source, component, next((t.version for t in tools if t.version), ""))
        self._tools_changed(frozenset(self._routes))
        for name in dropped:
            await self._unsubscribe_calls(name)
        await self._after_change()

    async def remove_source(self, source: str) -> None:
        """Stop serving ``source``'s tools (calls already delivered are still answered)."""
        names = self._table.pop_source(source)
        self.surfaces.remove(source)
        if names:  # told now, not after the drains below: no new task is taken for these tools
            self._tools_changed(frozenset(self._routes.keys() - set(names)))
        for name in names:
            self._table.drop(name)
            await self._unsubscribe_calls(name)
        await self._after_change()

    def _tools_changed(self, names: frozenset[str]) -> None:
        for listener in self.tool_listeners:
            listener(names)

    async def _after_change(self) -> None:
        if self._announcer.state != "ready":
            return
        for name in self._routes:
            if name not in self._calls:
                self._calls[name] = await self._subscribe_calls(name)
        self.discovery.update(self._endpoints(), self._table.stats())
        await self.surfaces.sync()
        await caught_up(self._nc)  # the new subscriptions are in place before anyone hears of them
        await self._announcer.announce()

    async def _subscribe_calls(self, name: str) -> Subscription:
        subject = self._subjects.call(name)
        # Handled as nats-py reads them (``bus.direct_delivery``): ``_on_call`` never waits.
        on_call = published_only_plain(subject, self._on_call)
        return await subscribe_direct(self._nc, subject, on_call, queue=self._subjects.worker_queue)

    async def _unsubscribe_calls(self, name: str) -> None:
        sub = self._calls.pop(name, None)
        if sub is not None:
            try:
                await drain_subscriptions(self._nc, [sub], DRAIN_TOOL_GRACE_S)
            except ConnectionClosed:
                pass

    async def start(self) -> None:
        """Subscribe to every tool's call subject (queue group), become discoverable, announce.

        When this returns (and when the ``ready`` announcement goes out) the server has every
        subscription: a call sent from then on reaches this worker.
        """
        self._loop = asyncio.get_running_loop()
        self._background.append(asyncio.create_task(self._outbox.run()))
        for name in self._routes:
            self._calls[name] = await self._subscribe_calls(name)
        await self.surfaces.start()
        s = self._subjects
        ping = await self._nc.subscribe(
            s.worker_ping(self.worker_id), cb=published_only(s.worker_ping(self.worker_id), self._on_ping)
        )
        self._subscriptions.append(
            await self._nc.subscribe(s.cancel_any, cb=published_only(s.cancel_any, self._on_cancel))
        )
        resume = s.resume(self.worker_id)
        self._subscriptions.append(await self._nc.subscribe(resume, cb=published_only(resume, self._on_resume)))
        hello = await self._nc.subscribe(s.registry_hello, cb=published_only(s.registry_hello, self._on_registry_hello))
        self._subscriptions += [ping, hello]
        await self.discovery.start()
        # Not nc.flush(): in nats-py its PING can overtake the SUBs, and a caller acting on our
        # return (or on the announcement) would get "no responders" now and then.
        await caught_up(self._nc)
        await self.announce()
        self._background.append(asyncio.create_task(self._announcer.announce_periodically()))
        log.info("worker ready", worker_id=self.worker_id, tools=sorted(self._routes))

    async def stop(self, grace_s: float = 10.0) -> None:
        """Drain: announce it, stop taking calls, let accepted ones finish (within ``grace_s``).

        Calls the server delivered before our unsubscribe reached it are still answered
        (the call subscriptions are drained, not dropped); afterwards a caller gets "no
        responders" from the server, or another worker. Guests still running when the grace
        period ends are left to their epoch deadline and their callers get no reply.
        """
        deadline = time.monotonic() + grace_s
        self._announcer.state = "draining"
        # Say so before unsubscribing, so the registry stops counting on us for new calls.
        try:
            await self.announce()
        except ConnectionClosed:
            pass
        await self.discovery.stop()
        await self.surfaces.stop(grace_s)
        calls, self._calls = list(self._calls.values()), {}
        try:
            # Not Subscription.drain alone: nats-py's can drop calls delivered at the moment of
            # the unsubscribe, which their callers never hear about (see drain_subscriptions).
            await asyncio.wait_for(drain_subscriptions(self._nc, calls, grace_s), grace_s)
        except TimeoutError:
            log.warning("draining call subscriptions timed out")
        except ConnectionClosed:
            pass  # nothing more will be delivered anyway
        for sub in self._subscriptions:
            await unsubscribe_quietly(sub)
        if self._claiming:  # delivered calls still reading their arguments: they are answered too
            await asyncio.wait(set(self._claiming), timeout=max(0.1, deadline - time.monotonic()))
        # No answer can reach a waiting guest any more: it hears `cancelled` now, not at ask_timeout_s.
        self._suspensions.cancel_all("the worker is stopping")
        try:
            await asyncio.wait_for(self._admission.idle.wait(), max(0.0, deadline - time.monotonic()))
        except TimeoutError:
            log.warning("stopping with calls still running", in_flight=self._admission.accepted)
        # Let the outbox send what the last guests returned.
        try:
            await asyncio.wait_for(self._outbox.sent(), max(0.1, deadline - time.monotonic()))
        except TimeoutError:
            log.warning("stopping with replies unsent", unsent=self._outbox.unsent())
        await cancel_and_wait(self._background)
        self._announcer.state = "stopped"
        try:
            await self.announce()
        except ConnectionClosed:
            pass
        # Guests still running past the grace period are interrupted by their epoch deadline;
        # calls still held back for a slot are given up, as those queued for a thread are.
        self._held_back.clear()
        self._pool.shutdown(wait=False, cancel_futures=True)

    async def announce(self) -> None:
        """Publish what this worker serves and how loaded it is.

        Raises:
            ConnectionLost: the connection cannot carry it now (closed, draining, buffer full…).
        """
        await self._announcer.announce()

    async def _on_ping(self, msg: Msg) -> None:
        if msg.reply:
            await self._nc.publish(msg.reply, b"")

    async def _on_registry_hello(self, msg: Msg) -> None:
        await self.announce()

    def _on_call(self, msg: Msg) -> None:
        # Called inside nats-py's read loop as the call is read, so it only does the cheap part
        # (checks, decoding, validation) and hands the guest to the pool; the reply comes back
        # through the outbox. No task per call: under load that bookkeeping cost more than
        # a small guest's whole run.
        if not msg.reply:
            return  # a publish without a reply subject is not a call; nobody would hear the answer
        started_ns = perf_counter_ns()
        headers = msg.headers or {}
        if Header.PAYLOAD in headers:
            self._claim_arguments(msg, headers, started_ns)
            return
        self._take(msg.subject, msg.reply, msg.data, headers, started_ns)

    def _claim_arguments(self, msg: Msg, headers: dict[str, str], started_ns: int) -> None:
        """Read a call's arguments from the Object Store (its claim check), then take the call.

        A task per such call, at most ``concurrency`` at once (each holds up to ``max_payload_bytes``
        in memory); beyond that the call is refused OVERLOADED, as a full worker refuses one.
        """
        reply = msg.reply
        if len(self._claiming) >= self._settings.concurrency:
            message = f"worker {self.worker_id} is already reading {len(self._claiming)} large arguments; retry"
            self._outbox.put(reply, *error_reply(ErrorCode.OVERLOADED, message))
            return
        task = asyncio.create_task(self._claim_then_take(msg.subject, reply, msg.data, headers, started_ns))
        self._claiming.add(task)
        task.add_done_callback(self._claiming.discard)

    async def _claim_then_take(
        self, subject: str, reply: str, data: bytes, headers: dict[str, str], started_ns: int
    ) -> None:
        tool = self._subjects.tool_from_call(subject)
        try:
            # Deleted as it is read, before the call runs: a replay of the claim check finds
            # nothing even while the first call is still answering (attack kept in test_payloads).
            data = await self._payloads.take(headers, data)
        except PayloadTooLarge as exc:
            # Like invalid arguments: a result the model can read, not a protocol error.
            body = encode(CallToolResult(content=[TextContent(f"tool {tool!r} was not called: {exc}")], is_error=True))
            self._outbox.put(reply, body, None)
            return
        except (PayloadRefused, PayloadGone) as exc:
            self._outbox.put(reply, *error_reply(ErrorCode.BAD_REQUEST, f"the call's arguments: {exc}"))
            return
        except BusError as exc:
            message = f"the call's arguments could not be read from the Object Store: {exc}"
            self._outbox.put(reply, *error_reply(ErrorCode.INTERNAL, message))
            return
        # The principal's signature is checked against the arguments read, as the gateway signed them.
        self._take(subject, reply, data, headers, started_ns)

    def _take(self, subject: str, reply: str, data: bytes, headers: dict[str, str], started_ns: int) -> None:
        """Route, admit, check and start one call whose arguments are ``data``."""
        tool = self._subjects.tool_from_call(subject)
        route = self._routes.get(tool)
        if route is None:  # only our tools' subjects are subscribed; kept as a guard
            self._outbox.put(reply, *error_reply(ErrorCode.UNKNOWN_TOOL, f"unknown tool {tool!r}"))
            return
        stats = route.stats
        stats.requests += 1
        signer = self._principal_signer
        principal = None
        if signer is not None and Header.PRINCIPAL in headers:
            principal = signer.verified(headers, subject, data)
        refusal = self._admission.refusal(route, tool, principal)
        if refusal is not None:
            stats.overloaded += 1
            overloaded = error_answer(ErrorCode.OVERLOADED, refusal)
            self._answer(reply, stats, started_ns, overloaded, tool, headers, principal)
            return
        try:
            outcome = self._prepare(route, tool, data, headers, started_ns, principal, reply)
        except Exception:  # the one outermost handler: a bug must still produce a reply
            log.exception("call failed inside the worker", tool=tool, worker_id=self.worker_id)
            outcome = error_answer(ErrorCode.INTERNAL, "internal error in worker; see worker logs")
        if isinstance(outcome, tuple):
            self._answer(reply, stats, started_ns, outcome, tool, headers, principal)
            return
        # A guest that may ask waits for its answer in its thread; only the loop can deliver it.
        if route.inline and (not route.asks or outcome.context.asker is declares_nothing):
            self._run_inline(reply, outcome)
            return
        self._admission.admit(outcome)
        outcome.context.run_slot = self._run_slots
        self._held_back.append((reply, outcome))
        self._start_held_back()

    def _start_held_back(self) -> None:
        """Give a guest thread the held-back calls if a run slot is free (on the loop, or in a guest's
        thread when it gives its slot back to wait for its client)."""
        slots = self._run_slots
        # Not while a thread waits for a slot (a resumed guest, a task): a new holder would take the
        # slot freed for it before it wakes, and keep it for the whole queue.
        if self._held_back and not self._starting and not slots.waiting and slots.free():
            # The slot is taken in the thread, not here: work queued for a busy pool must hold no
            # slot, or threads blocked on a slot (answered guests, tasks) could wait for it forever.
            self._starting = True  # one at a time: a burst of calls wakes one thread, not one each
            self._pool.start(self._run_held_back)

    def _run_held_back(self) -> None:
        """A guest thread: take a run slot, run held-back calls one after the other, then let go.

        A call waits for a slot here, in the queue, not in a thread of its own: handing each call
        to a thread that then sleeps on a slot cost ~2 context switches per call with more calls in
        flight than slots. The thread keeps its slot from one call to the next unless a thread
        waits for one (a resumed guest, a task): that one goes first.
        """
        held_back, slots = self._held_back, self._run_slots
        self._starting = False
        if not slots.try_acquire():
            return  # taken meanwhile: whoever holds it runs the held-back calls after its own
        if slots.waiting:  # freed for a waiting thread, which runs the held-back calls after its own
            slots.release()
            return
        if len(held_back) > 1:
            self._start_held_back()  # more calls than this thread's next one, and maybe a free slot
        while True:
            try:
                reply_to, job = held_back.popleft()
            except IndexError:
                slots.release()
                # A call held back after our look, while we still held the slot, would wait for
                # nobody: look again now that the slot is free.
                if held_back and slots.try_acquire():
                    continue
                return
            self._run_guest(reply_to, job)
            if slots.waiting:
                slots.release()
                # Not taken back here (the waiting thread would rarely win it): the loop looks at
                # the held-back calls again later, by when the waiting thread has its slot.
                self._loop.call_soon_threadsafe(self._start_held_back)
                return

    def _run_inline(self, reply_to: str, job: Job) -> None:
        """Run a short call's guest here, on the event loop (``LimitsSettings.inline``).

        Handing a call to a guest thread and back costs more than a small guest's whole run: the
        loop and the guest thread take the GIL from each other at every ctypes call (measured with
        kit_add at 64 in flight: ~20 futex syscalls and ~12 context switches a call, against 0.3
        inline; docs/performance-analysis.md). Its epoch deadline still stops the guest (the ticker
        is a thread of its own); a cancel message is read after it returns (its guest cannot ask:
        its component does not import ``toolbus:mcp/client``, or its caller relays no questions).
        """
        self._admission.admit(job)
        try:
            outcome: tuple[bytes, CallToolResult] | BaseException = job.run()
        except Exception as exc:  # as a guest thread's failure: an internal error, the loop goes on
            outcome = exc
        self._finish(reply_to, job, outcome)

    def _prepare(
        self,
        route: Route,
        tool: str,
        data: bytes,
        headers: dict[str, str],
        started_ns: int,
        principal: str | None,
        reply_to: str,
    ) -> Job | Answer:
        """The guest job for a call, or the reply when the call ends before reaching a guest."""
        try:
            timeout_s = budget_before_deadline(headers.get(Header.DEADLINE_MS), self._settings.max_call_timeout_s)
        except ValueError:
            return error_answer(ErrorCode.BAD_REQUEST, f"{Header.DEADLINE_MS} must be epoch milliseconds")
        if timeout_s <= 0:
            return error_answer(ErrorCode.DEADLINE_EXCEEDED, "the call's deadline passed before it started")
        try:
            arguments = decode_json(data) if data.strip() else {}
        except DecodeError as exc:
            return error_answer(ErrorCode.BAD_REQUEST, f"request body is not valid JSON: {exc}")
        problem = argument_problem(route.validator, arguments)
        if problem is not None:
            message = invalid_arguments_message(problem)
            body = encode(CallToolResult(content=[TextContent(message)], is_error=True))
            return body, None, message, INVALID_ARGUMENTS
        share = self._admission.share_of(principal)
        context = self._context(headers, reply_to, principal)
        cap = self._payloads.max_bytes
        return Job(route, tool, arguments, timeout_s, started_ns, context, headers, principal, share, cap)

    def _context(self, headers: dict[str, str], reply_to: str, principal: str | None) -> CallContext:
        """The call's link to its caller: cancellable by request id, events where it asked, and
        questions to its client when the caller relays them (``Toolbus-Can-Ask``)."""
        context = CallContext(request_id=headers.get(Header.REQUEST_ID, ""), reply_to=reply_to)
        self._bind_events(context, headers)
        capabilities = capabilities_in(headers)
        if capabilities is None or (self._principal_signer is not None and principal is None):
            # Only a gateway may resume (the role table), and a deployment with a principal key
            # has gateways sign every call: an unsigned caller claiming it can ask could never
            # answer, and its guest would hold a thread and a waiting slot for ask_timeout_s.
            context.asker = declares_nothing
        else:
            loop, put = self._loop, self._outbox.put

            def post(subject: str, body: bytes, reply_headers: dict[str, str] | None) -> None:
                loop.call_soon_threadsafe(put, subject, body, reply_headers)

            conversation = Conversation(
                context,
                principal,
                capabilities,
                worker_id=self.worker_id,
                suspensions=self._suspensions,
                post=post,
                ask_timeout_s=self._settings.ask_timeout_s,
            )
            context.asker = conversation.ask
        return context

    def _bind_events(self, context: CallContext, headers: Mapping[str, str]) -> None:
        """Send the call's events where ``headers`` ask (a call's, or a resume's: a new listener)."""
        events_subject = headers.get(Header.EVENTS)
        if events_subject and not self._subjects.is_call_events(events_subject):
            # Publishing where a caller says would make this worker its deputy on any subject the
            # worker may publish to (announcements, task statuses): only call-events subjects.
            log.debug("events subject refused", subject=events_subject[:200])
            events_subject = None
        if not events_subject:
            context.events = None
            return
        context.events_subject = events_subject
        context.log_level = log_severity(headers.get(Header.LOG_LEVEL))
        if context.events is None:
            loop = self._loop
            put = self._outbox.put

            def publish(event: CallEvent) -> None:
                # From the guest's thread; the outbox publishes in order, so events precede the reply.
                loop.call_soon_threadsafe(put, context.events_subject, encode(event), None)

            context.events = publish

    async def _on_resume(self, msg: Msg) -> None:
        """A caller answers a suspended guest's question (``workers.conversation``)."""
        if not msg.reply:
            return
        headers = msg.headers or {}
        data = msg.data
        if Header.PAYLOAD in headers:
            # An answer larger than one message (a sampled image, say). Read here, on the resume
            # subscription: answers are rare and one read takes well under a second.
            try:
                data = await self._payloads.take(headers, data)
            except BusError as exc:
                self._outbox.put(msg.reply, *error_reply(ErrorCode.BAD_REQUEST, f"the answer: {exc}"))
                return
        signer = self._principal_signer
        principal = None
        if signer is not None and Header.PRINCIPAL in headers:
            principal = signer.verified(headers, msg.subject, data)
        try:
            answer = decode(data, GuestAnswer)
        except DecodeError as exc:
            self._outbox.put(msg.reply, *error_reply(ErrorCode.BAD_REQUEST, f"not a GuestAnswer: {exc}"))
            return
        outcome = self._suspensions.take(answer, principal)
        if isinstance(outcome, tuple):
            code, message = outcome
            log.info("resume refused", worker_id=self.worker_id, reason=code.name)
            self._outbox.put(msg.reply, *error_reply(code, message))
            return
        self._bind_events(outcome.context, headers)  # before the guest wakes and reports again
        outcome.answered(answer, headers, msg.reply)

    async def _on_cancel(self, msg: Msg) -> None:
        self._admission.cancel(msg.subject.rpartition(".")[2])

    def _answer(
        self,
        reply_to: str,
        stats: ToolStats,
        started_ns: int,
        answer: Answer,
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
        self._outbox.put(reply_to, body, headers)
        if self.observers:
            record = finished_call(tool, request, principal, outcome, error, started_ns, instantiate_s)
            for observer in self.observers:
                observer(record)

    def _run_guest(self, reply_to: str, job: Job) -> None:
        """Run a call's guest (in a guest thread holding a run slot) and hand its outcome to the loop.

        Outcomes are queued and the loop is woken once for all those queued meanwhile: under load
        one wake-up answers several calls. (No ``Future`` per call either: a call still queued for a
        thread when the pool shuts down is one the worker gave up on at exit.)
        """
        try:
            outcome: tuple[bytes, CallToolResult] | BaseException = job.run(slot_held=True)
        except Exception as exc:  # the loop logs it and answers INTERNAL
            outcome = exc
        self._done.append((reply_to, job, outcome))
        if not self._answering:
            self._answering = True
            self._loop.call_soon_threadsafe(self._answer_done)

    def _answer_done(self) -> None:
        """Answer every call whose guest finished (on the event loop)."""
        # Cleared before the queue is read: a guest finishing from here on wakes the loop again.
        self._answering = False
        done = self._done
        while done:
            reply_to, job, outcome = done.popleft()
            try:
                self._finish(reply_to, job, outcome)
            except Exception:  # a bug answering one call must not leave the others queued
                log.exception("answering a call failed", tool=job.tool, worker_id=self.worker_id)

    def _finish(self, reply_to: str, job: Job, outcome: tuple[bytes, CallToolResult] | BaseException) -> None:
        """Answer a call whose guest ran: ``outcome`` is what ``Job.run`` returned or raised."""
        self._admission.release(job)
        reply_to = job.context.reply_to or reply_to  # a resumed call answers its last resume
        stats = job.route.stats
        missing = list(job.context.missing_capabilities)
        if missing:  # the guest required client capabilities its caller did not declare
            message = f"tool {job.tool!r} requires client capabilities the client did not declare: {', '.join(missing)}"
            answer = error_answer(ErrorCode.MISSING_CAPABILITY, message, missing)
            self._answer(reply_to, stats, job.started_ns, answer, job.tool, job.headers, job.principal)
            return
        if not isinstance(outcome, BaseException):
            body, result = outcome
            if result.is_error and job.context.cancelled.is_set():
                # The caller is most likely gone; anyone still listening learns why it ended.
                cancelled = error_answer(ErrorCode.CANCELLED, "cancelled by the caller")
                self._answer(reply_to, stats, job.started_ns, cancelled, job.tool, job.headers, job.principal)
                return
            failure = error_text(result) if result.is_error else None
            answer = (body, None, failure, OK if failure is None else TOOL_ERROR)
            instantiate_s = job.context.instantiate_s
            self._answer(reply_to, stats, job.started_ns, answer, job.tool, job.headers, job.principal, instantiate_s)
            return
        log.error("call failed inside the worker", tool=job.tool, worker_id=self.worker_id, exc_info=outcome)
        internal = error_answer(ErrorCode.INTERNAL, "internal error in worker; see worker logs")
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
            return CallToolResult(content=[TextContent(invalid_arguments_message(problem))], is_error=True)
        job = Job(
            route,
            tool,
            arguments,
            self._settings.max_call_timeout_s,
            perf_counter_ns(),
            context,
            max_result_bytes=self._payloads.max_bytes,
        )
        try:
            _, result = await asyncio.wrap_future(self._submit(job))
        finally:
            self._admission.release(job)
            self._start_held_back()  # the task's slot is free again
        return result

    def _submit(self, job: Job) -> Future[tuple[bytes, CallToolResult]]:
        """Count ``job`` as accepted and run it in a guest thread."""
        self._admission.admit(job)
        job.context.run_slot = self._run_slots
        return self._pool.submit(job.run)
