"""The gateway's audit trail: one event per finished tool call and one per refused request.

Named for the trail the gateway leaves, not "audit": the stream that keeps it, and reading it
back, are ``registry.audit_stream``'s. Events go to that stream (``PREFIX_AUDIT``, created by
the registry) on ``PREFIX.audit.call.<tool>`` (a ``CallAuditEvent``) and
``PREFIX.audit.auth.<reason>`` (an ``AuthFailureEvent``); ``toolbus audit`` prints them with the
registry's events and task transitions.

**Off the hot path.** ``AuditTrail.observe`` is a ``ToolService`` call observer: it appends the
``CallRecord`` to a bounded queue and returns (under a microsecond; ``bench/audit_costs.py``).
One task drains the queue: it redacts the arguments, encodes the events and publishes them to
JetStream a batch at a time, each event its own message on its own subject, with its reply
subject under one inbox subscription of the trail's: the acknowledgements are decoded with
msgspec and counted per batch, instead of nats-py's ``publish_async`` and its semaphore
``wait_for``, future, callbacks and stdlib ``json`` parse per event (with the call log ~51 µs of
gateway CPU per call, issue 17). Woken by an event, the drain task first lets others gather for
``GATHER_S`` (50 ms), so that under load the task wakes once per many calls.

(JetStream's atomic batches — one acknowledgement per batch — were tried and dropped: under
paced load they cost nats-server ~48 µs per event against ~12 µs for these plain publishes,
more than they saved the gateway.)

**When the bus is slow or down** a call never waits for its audit event and never fails for it.
Events whose publish is not acknowledged (no stream, no connection, timeout) are kept and tried
again with backoff; each carries a ``Nats-Msg-Id`` (the call's request id), so the stream drops
the copies a retry creates within its duplicate window (2 minutes). The queue holds at most
``[audit].queue_size`` events: past that the oldest are dropped, counted in ``dropped`` and
logged. On shutdown the trail has ``FLUSH_TIMEOUT_S`` to publish what it holds, with one more
try for what the bus refused (no backoff): what is still refused then is logged as lost.

**Refusals are coalesced** (``Refusals``): a refused request costs its sender nothing, so
without this anyone could send 401s at line rate and the stream's limit (``audit_max_events``)
would push genuine history out. The first refusal of each kind in a window of
``REFUSALS_WINDOW_S`` is an event at once; alike ones after it are counted, and one more event
carries the count (``repeated``) when the window ends.

**Auth failures** are the front door's refusals (``gateway.front_door``; ``gateway.app.audited_refusals``), as::

    trail.auth_failure(
        reason,                 # "missing_token", "invalid_token", "expired", "wrong_audience",
                                # "insufficient_scope", "forbidden_tool", "rate_limited", …
        status=401,             # the HTTP status answered
        subject=None,           # who the credential claimed to be (never verified), if it said
        remote="10.0.0.7:51234",  # the client's address
        method="tools/call",    # the MCP method, or the HTTP method if the body was not read
        tool=None,              # the tool asked for, if any
        auth_method=None,       # "jwt" or "api-key", when the credential's kind is known
        detail=None,            # a short free text (what the client was told)
    )

It returns at once (the event joins the same queue) and never raises for a full queue or a
down bus. ``reason`` may be any word; it becomes the last subject token.
"""

from __future__ import annotations

import asyncio
import contextlib
import fnmatch
import re
import time
from collections import deque
from collections.abc import Callable
from typing import Any, Final

import msgspec
import structlog
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.js.api import Header as JsHeader
from nats.nuid import NUID

from bus.cancellation import cancel_and_wait
from bus.direct_delivery import subscribe_direct
from bus.errors import BusError, nats_boundary
from bus.fast_publish import publish as fast_publish
from bus.subjects import Subjects
from gateway.tool_service import CallRecord
from schemas.codec import encode
from schemas.config import AuditSettings
from schemas.wire import UNSET, AuthFailureEvent, CallAuditEvent, ConsoleActionEvent

log = structlog.get_logger(__name__)

REDACTED: Final = "[redacted]"
"""What a redacted value becomes."""
BATCH_SIZE: Final = 256
"""Events published per round; their acks are awaited together."""
GATHER_S: Final = 0.05
"""How long the drain task lets events gather before it publishes them (bounds what a crash loses
beyond the queue, and how late an event reaches the stream)."""
PUBLISH_TIMEOUT_S: Final = 5.0
"""How long one round waits for the stream's acks before keeping the rest for a retry."""
RETRY_FIRST_S: Final = 0.2
RETRY_MAX_S: Final = 5.0
"""Backoff between rounds that failed (doubling from ``RETRY_FIRST_S``)."""
FLUSH_TIMEOUT_S: Final = 2.0
"""How long ``stop`` spends publishing what is left."""
DROP_LOG_INTERVAL_S: Final = 10.0
"""At most one warning about dropped events per this interval."""
_KEY_CACHE_SIZE: Final = 4096
REFUSALS_WINDOW_S: Final = 10.0
"""Refusals alike within this window are one event, then one more with their count."""
MAX_REFUSAL_KINDS: Final = 256
"""Kinds of refusal told apart in one window, for verified principals and for everyone else
separately; past it, new kinds are counted per (reason, status) only, so varying the claimed
subject or the tool buys an attacker no more events."""


class Redactor:
    """Turns a call's arguments into what the audit trail keeps, as ``[audit]`` says per tool."""

    def __init__(self, settings: AuditSettings) -> None:
        self.settings = settings
        self._default = _KeyMatcher(settings.redact_keys)
        self._matchers = {
            tool: _KeyMatcher(override.redact_keys)
            for tool, override in settings.tools.items()
            if override.redact_keys is not None
        }

    def apply(self, tool: str, arguments: Any) -> tuple[Any, int]:
        """(what to keep of ``arguments``, values redacted); ``UNSET`` when nothing is kept."""
        override = self.settings.tools.get(tool)
        mode = (override.arguments if override else None) or self.settings.arguments
        if mode == "omit" or arguments is None:
            return UNSET, 0
        if mode == "keep":
            kept, redacted = arguments, 0
        else:
            kept, redacted = _redact(arguments, self._matchers.get(tool, self._default))
        size = len(encode(kept))
        if size > self.settings.max_arguments_bytes:
            return f"[{size} bytes of arguments, not kept]", redacted
        return kept, redacted


class _KeyMatcher:
    """Does a key match one of the globs? Case-insensitive, remembered per key."""

    def __init__(self, patterns: list[str]) -> None:
        joined = "|".join(fnmatch.translate(p.lower()) for p in patterns)
        self._regex = re.compile(joined) if joined else None
        self._seen: dict[str, bool] = {}

    def __call__(self, key: str) -> bool:
        hit = self._seen.get(key)
        if hit is None:
            hit = self._regex is not None and self._regex.match(key.lower()) is not None
            if len(self._seen) >= _KEY_CACHE_SIZE:
                self._seen.clear()
            self._seen[key] = hit
        return hit


def _redact(value: Any, secret: Callable[[str], bool]) -> tuple[Any, int]:
    """A copy of ``value`` with every value under a secret key replaced, at any depth; and how many."""
    if isinstance(value, dict):
        count = 0
        out: dict[str, Any] = {}
        for key, item in value.items():
            if secret(str(key)):
                out[key] = REDACTED
                count += 1
            else:
                out[key], n = _redact(item, secret)
                count += n
        return out, count
    if isinstance(value, list):
        count = 0
        items = []
        for item in value:
            kept, n = _redact(item, secret)
            items.append(kept)
            count += n
        return items, count
    return value, 0


def trace_id(traceparent: str | None) -> str:
    """The trace id of a W3C ``traceparent`` (``00-<32 hex>-<16 hex>-<2 hex>``), or ``""``."""
    if not traceparent:
        return ""
    parts = traceparent.split("-")
    return parts[1] if len(parts) >= 4 and len(parts[1]) == 32 else ""


class Refusals:
    """Coalesces refusal events: per window, the first of each kind at once, the rest as a count.

    A kind is (reason, status, client host, claimed subject, auth method, method, tool): the
    client's port is left out, so opening new connections makes no new kind. A sustained flood of
    one kind costs the stream two events per window.
    """

    def __init__(
        self,
        emit: Callable[[AuthFailureEvent], None],
        *,
        window_s: float = REFUSALS_WINDOW_S,
        max_kinds: int = MAX_REFUSAL_KINDS,
    ) -> None:
        self._emit = emit
        self.window_s = window_s
        self._max_kinds = max_kinds
        self._kinds: dict[tuple[Any, ...], list[Any]] = {}
        """kind → [its first event, refusals alike since]."""
        self._counted = {False: 0, True: 0}
        """Kinds told apart this window, unverified and verified (each up to ``max_kinds``)."""
        self._timer: asyncio.TimerHandle | None = None

    def add(self, event: AuthFailureEvent) -> None:
        """Record one refusal: emitted if it is the first of its kind in this window, else counted."""
        host = event.remote.rpartition(":")[0] or event.remote
        kind: tuple[Any, ...] = (
            event.reason,
            event.status,
            host,
            event.subject,
            event.auth_method,
            event.method,
            event.tool,
        )
        # Two budgets of kinds: refusals of verified principals (``auth_method`` set) and the rest.
        # Otherwise anyone without a credential could use up the kinds with forged subjects and
        # have a real principal's refusal, minutes later, folded into a count without its name.
        verified = bool(event.auth_method)
        if kind not in self._kinds and self._counted[verified] >= self._max_kinds:
            kind = (event.reason, event.status, verified)
            event = AuthFailureEvent(
                reason=event.reason, status=event.status, at=event.at, detail="many kinds of refusal, counted together"
            )
        seen = self._kinds.get(kind)
        if seen is not None:
            seen[1] += 1
            return
        self._kinds[kind] = [event, 0]
        self._counted[verified] += 1
        self._emit(event)
        if self._timer is None:
            try:
                self._timer = asyncio.get_running_loop().call_later(self.window_s, self.flush)
            except RuntimeError:
                pass  # no loop (a caller outside one): ``flush`` at stop tells the counts

    def flush(self) -> None:
        """End the window: emit one event per kind refused again, with its count."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        kinds, self._kinds = self._kinds, {}
        self._counted = {False: 0, True: 0}
        for first, repeated in kinds.values():
            if repeated:
                self._emit(msgspec.structs.replace(first, at=time.time(), repeated=repeated))


_Message = tuple[str, bytes, str]
"""A prepared event: (subject, body, message id)."""


MSG_ID: Final = JsHeader.MSG_ID.value
"""Lets the stream drop the copy a retry publishes (its duplicate window: 2 minutes)."""


class _ApiError(msgspec.Struct):
    code: int = 0
    err_code: int = 0
    description: str = ""


class _PubAck(msgspec.Struct):
    """nats-server's answer to a JetStream publish (its API, not our wire: hence here)."""

    stream: str = ""
    seq: int = 0
    duplicate: bool = False
    error: _ApiError | None = None


class _Round:
    """The acknowledgements one batch is waiting for."""

    __slots__ = ("acked", "done", "first_error", "waiting")

    def __init__(self, size: int, done: asyncio.Future[None]) -> None:
        self.acked = [False] * size
        self.waiting = size
        self.done = done
        """Resolved when every event has its answer (stored, or refused)."""
        self.first_error = ""


_ACK_DECODER: Final = msgspec.json.Decoder(_PubAck)


class AuditTrail:
    """Publishes the gateway's audit events from a bounded queue, off the hot path (see the module)."""

    def __init__(self, nc: NatsClient, subjects: Subjects, settings: AuditSettings) -> None:
        self.subjects = subjects
        self.redactor = Redactor(settings)
        self.queue_size = settings.queue_size
        self.published = 0
        self.dropped = 0
        """Events lost because the queue was full (the bus was down or slower than the calls)."""
        self._nc = nc
        self._rounds: dict[str, _Round] = {}
        """Batch id → the acknowledgements it waits for (``<inbox>.<batch id>.<index>``)."""
        self._ack_prefix = ""
        """``<inbox>.`` under which every event asks for its acknowledgement (one subscription)."""
        self._ack_subscription: Subscription | None = None
        self._pending: deque[CallRecord | AuthFailureEvent | ConsoleActionEvent] = deque()
        self._retry: deque[_Message] = deque()
        self._in_flight = 0
        """Events of the batch being published now."""
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        """Set by the drain task whenever it has emptied the queue."""
        self._stopping = asyncio.Event()
        """Set by ``stop``: a backoff ends at once, and a batch the bus refuses now is not retried."""
        self._task: asyncio.Task[None] | None = None
        self._ids = NUID()
        self._dropped_logged_at = 0.0
        self.refusals = Refusals(self._enqueue)

    # -- the producers: called on the event loop, never block ----------------------------------
    def observe(self, record: CallRecord) -> None:
        """The ``ToolService`` observer: queue ``record``'s audit event."""
        self._enqueue(record)

    def auth_failure(
        self,
        reason: str,
        *,
        status: int,
        subject: str | None = None,
        remote: str | None = None,
        method: str | None = None,
        tool: str | None = None,
        auth_method: str | None = None,
        detail: str | None = None,
    ) -> None:
        """Queue the audit event of a request refused for who sent it (signature: module docstring)."""
        event = AuthFailureEvent(
            reason=reason,
            status=status,
            at=time.time(),
            subject=subject or "",
            auth_method=auth_method or "",
            remote=remote or "",
            method=method or "",
            tool=tool or "",
            detail=detail or "",
        )
        self.refusals.add(event)

    def console_action(self, event: ConsoleActionEvent) -> None:
        """Queue the audit event of an operator's action in the web console (``gateway.console``)."""
        self._enqueue(event)

    def _enqueue(self, item: CallRecord | AuthFailureEvent | ConsoleActionEvent) -> None:
        if len(self._pending) + len(self._retry) >= self.queue_size:
            self._drop_oldest()
        self._pending.append(item)
        self._wake.set()

    def _drop_oldest(self) -> None:
        if self._retry:
            self._retry.popleft()  # retries are older than anything pending
        else:
            self._pending.popleft()
        self.dropped += 1
        now = time.monotonic()
        if now - self._dropped_logged_at >= DROP_LOG_INTERVAL_S:
            self._dropped_logged_at = now
            log.warning("audit queue full: dropping the oldest events", dropped=self.dropped, queue=self.queue_size)

    @property
    def backlog(self) -> int:
        """Events not yet acknowledged by the audit stream (the batch being published included:
        without it ``stop`` could end the drain task mid-batch and lose that batch unannounced)."""
        return len(self._pending) + len(self._retry) + self._in_flight

    # -- the drain task -------------------------------------------------------------------------
    def start(self) -> None:
        """Start publishing (one task)."""
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="audit-trail")

    async def stop(self, timeout_s: float = FLUSH_TIMEOUT_S) -> None:
        """Publish what is queued (for at most ``timeout_s``), then stop; what is left is logged as lost."""
        if self._task is None:
            return
        self.refusals.flush()  # the counts of the window still open
        self._stopping.set()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout_s):
                if self.backlog:
                    self._idle.clear()
                    await self._idle.wait()
        await cancel_and_wait([self._task])
        self._task = None
        if self._ack_subscription is not None:
            subscription, self._ack_subscription, self._ack_prefix = self._ack_subscription, None, ""
            with contextlib.suppress(BusError), nats_boundary:
                await subscription.unsubscribe()
        if self.backlog:
            log.warning("audit events not published at shutdown", lost=self.backlog)

    async def _run(self) -> None:
        backoff_s = RETRY_FIRST_S
        while True:
            await self._wake.wait()
            if len(self._pending) < BATCH_SIZE and not self._stopping.is_set():
                # Let the batch fill: woken per call, it would carry one or two events and cost
                # a commit and an acknowledgement each.
                await asyncio.sleep(GATHER_S)
            self._wake.clear()
            while self.backlog:
                batch = self._take(BATCH_SIZE)
                self._in_flight = len(batch)
                try:
                    failed = await self._publish(batch)
                finally:
                    self._in_flight = 0
                if not failed:
                    backoff_s = RETRY_FIRST_S
                    continue
                self._retry.extendleft(reversed(failed))
                while len(self._retry) + len(self._pending) > self.queue_size:
                    self._drop_oldest()
                if self._stopping.is_set():
                    # One try at shutdown, not a backoff: a bus that refuses now (no audit stream,
                    # no quorum) would only hold the process for the whole flush timeout.
                    break
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stopping.wait(), backoff_s)
                backoff_s = min(backoff_s * 2, RETRY_MAX_S)
            self._idle.set()

    def _take(self, limit: int) -> list[_Message]:
        batch: list[_Message] = []
        while self._retry and len(batch) < limit:
            batch.append(self._retry.popleft())
        while self._pending and len(batch) < limit:
            item = self._pending.popleft()
            try:
                batch.append(self._prepare(item))
            except Exception:  # an event that cannot be encoded must not stop the trail
                log.exception("audit event could not be encoded; skipped")
        return batch

    def _prepare(self, item: CallRecord | AuthFailureEvent | ConsoleActionEvent) -> _Message:
        if isinstance(item, AuthFailureEvent):
            return self.subjects.audit_auth(item.reason), encode(item), f"auth-{self._ids.next().decode()}"
        if isinstance(item, ConsoleActionEvent):
            return self.subjects.audit_console(item.action), encode(item), f"console-{self._ids.next().decode()}"
        arguments, redacted = self.redactor.apply(item.tool, item.arguments)
        event = CallAuditEvent(
            tool=item.tool,
            principal=item.principal.subject,
            auth_method=item.principal.method,
            era=item.era,
            request_id=item.request_id,
            outcome=item.outcome,
            started_at=item.started_at,
            duration_ms=round(item.duration_s * 1000, 3),
            trace_id=trace_id(item.traceparent),
            error=item.error or "",
            arguments=arguments,
            arguments_redacted=redacted,
        )
        return self.subjects.audit_call(item.tool), encode(event), f"call-{item.request_id}"

    async def _publish(self, batch: list[_Message]) -> list[_Message]:
        """Publish ``batch`` and await the acknowledgements; return what was not acknowledged."""
        if not batch:
            return []
        batch_id = self._ids.next().decode()
        round_ = _Round(len(batch), asyncio.get_running_loop().create_future())
        sent = 0
        try:
            with nats_boundary:
                if not self._ack_prefix:
                    inbox = self._nc.new_inbox()
                    self._ack_subscription = await subscribe_direct(self._nc, f"{inbox}.*.*", self._on_ack)
                    self._ack_prefix = f"{inbox}."
                self._rounds[batch_id] = round_
                reply = f"{self._ack_prefix}{batch_id}."
                for index, (subject, body, msg_id) in enumerate(batch):
                    headers = {MSG_ID: msg_id}
                    await fast_publish(self._nc, subject, body, reply=f"{reply}{index}", headers=headers)
                    sent += 1
            if sent:
                await asyncio.wait({round_.done}, timeout=PUBLISH_TIMEOUT_S)
        except (BusError, OSError) as exc:
            log.warning("audit events not sent; will retry", error=repr(exc), events=len(batch) - sent)
            if sent:  # the ones sent may still be acknowledged
                await asyncio.wait({round_.done}, timeout=PUBLISH_TIMEOUT_S)
        finally:
            self._rounds.pop(batch_id, None)
        failed = [message for message, acked in zip(batch, round_.acked, strict=True) if not acked]
        self.published += len(batch) - len(failed)
        if failed:
            reason = round_.first_error or "no ack in time"
            log.warning("audit events not acknowledged; will retry", failed=len(failed), reason=reason)
        return failed

    def _on_ack(self, msg: Msg) -> None:
        # Called on nats-py's reading task as the ack is read (bus.direct_delivery): no awaits.
        batch_id, _, index = msg.subject[len(self._ack_prefix) :].partition(".")
        round_ = self._rounds.get(batch_id)
        if round_ is None or not index.isdecimal() or int(index) >= len(round_.acked):
            return  # a late answer to a batch given up on (its events are retried: Nats-Msg-Id)
        if not msg.data:  # a status instead: 503, no stream stores the subject (yet)
            error = f"no stream took the event (status {(msg.headers or {}).get('Status', '')})"
        else:
            try:
                ack = _ACK_DECODER.decode(msg.data)
                error = ack.error.description if ack.error is not None else ""
            except msgspec.DecodeError:
                error = f"unreadable acknowledgement {msg.data[:80]!r}"
        position = int(index)
        if not error:
            round_.acked[position] = True
        elif not round_.first_error:
            round_.first_error = error
        round_.waiting -= 1
        if round_.waiting <= 0 and not round_.done.done():
            round_.done.set_result(None)
