"""Guests that ask: a call suspended on a question to its client, and resuming it.

A guest's ``toolbus:mcp/client`` request (``workers.sandbox.client_host``) blocks its thread in
``Conversation.ask``: the worker replies to the call with a *question* (header
``Toolbus-Question`` naming a fresh suspension id, ``Toolbus-Worker`` naming this worker, body
``GuestQuestion``) and the guest waits. The caller answers with a *resume* request on
``Subjects.resume(worker_id)`` (body ``GuestAnswer``, principal signed like a call's, a fresh
deadline and events subject); ``Suspensions.resume`` checks it and wakes the guest, and the call's
next reply — its result, or the next question — goes to the resume's reply subject.

What the wait costs and what bounds it:
- the guest keeps its thread, its memory and its admission slot (a waiting call is accepted and
  counts against ``queue_depth``), but gives back its run slot: up to ``[worker] waiting_guests``
  guests wait beyond the ``concurrency`` that run, and a guest asking past that gets ``failed`` at
  once (``Suspensions.add``), so waiting guests never hold the threads running calls need;
- the wait is not guest time: the Store's epoch deadline is re-armed when the answer comes, with
  what the guest had left (never more than the resume's own deadline allows);
- ``[worker] ask_timeout_s`` bounds each wait (``timed-out``), ``MAX_QUESTIONS_PER_CALL`` their
  number (``failed``), a cancellation of the call ends it (``cancelled``), and a resume whose
  signed principal is not the call's is refused (FORBIDDEN).
"""

from __future__ import annotations

import secrets
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any, Final

from bus.subjects import Header
from schemas.codec import encode
from schemas.errors import ErrorCode
from schemas.wire import GuestAnswer, GuestQuestion
from workers.sandbox.call_context import AskFailed, CallContext
from workers.sandbox.client_host import CAPABILITY_OF, capability_needed
from workers.sandbox.limits import guest_budget_s

POLL_S: Final = 0.05
"""How often a waiting guest looks at its call's cancellation (a wait is seconds to minutes)."""
MAX_QUESTIONS_PER_CALL: Final = 64
"""Questions one call's guest may ask; the next gets ``failed`` at once. Waiting is not guest
time, and clients answer ``roots/list`` without a person: without a bound a guest asking in a
loop would keep its thread, its memory and its caller's call for as long as the client answered."""
ASK_ERRORS: Final = frozenset({"unsupported", "timed-out", "cancelled", "failed"})

Post = Callable[[str, bytes, dict[str, str] | None], None]
"""Queues one message for publishing; callable from any thread (``Outbox`` via the loop)."""


def capabilities_in(headers: Mapping[str, str]) -> frozenset[str] | None:
    """The client capabilities a call's caller can relay (``Toolbus-Can-Ask``); ``None``: it cannot ask."""
    value = headers.get(Header.CAN_ASK)
    if value is None:
        return None
    return frozenset(part.strip() for part in value.split(",") if part.strip())


def seconds_until(headers: Mapping[str, str]) -> float | None:
    """What is left of the deadline in ``headers`` (``Toolbus-Deadline-Ms``); ``None`` without one."""
    deadline_ms = headers.get(Header.DEADLINE_MS)
    if not deadline_ms:
        return None
    try:
        return int(deadline_ms) / 1000 - time.time()
    except ValueError:
        return None


def declares_nothing(requests: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The ``Asker`` of a call whose caller relays no questions (a plain NATS caller): every
    request is ``unsupported``, naming the capability it needs."""
    method = next(iter(requests.values()))["method"]
    raise AskFailed("unsupported", CAPABILITY_OF[method])


class Conversation:
    """One call whose guest may ask its client; lives as long as the call."""

    def __init__(
        self,
        context: CallContext,
        principal: str | None,
        capabilities: frozenset[str],
        *,
        worker_id: str,
        suspensions: Suspensions,
        post: Post,
        ask_timeout_s: float,
    ) -> None:
        self.context = context
        self.principal = principal
        context.capabilities = capabilities
        self._worker_id = worker_id
        self._suspensions = suspensions
        self._post = post
        self._ask_timeout_s = ask_timeout_s
        self._answered = threading.Event()
        self._answer: GuestAnswer | None = None
        self._asked = 0
        """Questions this call has asked (``MAX_QUESTIONS_PER_CALL``)."""
        self._budget_s: float | None = None
        """What the resume's deadline leaves the guest (``None``: no deadline given)."""

    def ask(self, requests: dict[str, dict[str, Any]]) -> dict[str, Any]:
        """The guest's thread: publish the question, wait for the answer (``Asker``)."""
        for request in requests.values():
            capability = capability_needed(request)
            if capability not in self.context.capabilities:
                raise AskFailed("unsupported", capability)
        context = self.context
        if context.cancelled.is_set():
            raise AskFailed("cancelled")
        if self._asked >= MAX_QUESTIONS_PER_CALL:
            raise AskFailed("failed", f"a call may ask its client at most {MAX_QUESTIONS_PER_CALL} times")
        self._asked += 1
        suspension = secrets.token_urlsafe(16)
        self._answered.clear()
        self._answer = None
        if not self._suspensions.add(suspension, self):
            raise AskFailed("failed", f"{self._suspensions.limit} guests already wait for answers on this worker")
        headers = {Header.QUESTION: suspension, Header.WORKER: self._worker_id}
        began = time.monotonic()
        interrupts = context.interrupts
        left_s = None if interrupts is None else interrupts.deadline - began
        self._post(context.reply_to, encode(GuestQuestion(requests=requests)), headers)
        slot = context.run_slot
        if slot is not None:
            slot.give_back()  # waiting is not running: another guest may run meanwhile
        try:
            answer = self._wait(began)
        finally:
            self._suspensions.discard(suspension)
            if slot is not None:
                slot.acquire()
            self._rearm(left_s)
        if answer.error is not None:
            raise AskFailed(answer.error, answer.message)
        return answer.answers

    def _wait(self, began: float) -> GuestAnswer:
        give_up = began + self._ask_timeout_s
        while not self._answered.wait(min(POLL_S, max(0.0, give_up - time.monotonic()))):
            if self.context.cancelled.is_set():
                raise AskFailed("cancelled")
            if time.monotonic() >= give_up:
                raise AskFailed("timed-out")
        assert self._answer is not None
        return self._answer

    def _rearm(self, left_s: float | None) -> None:
        """Give the guest back the time it had when it asked (the wait was not guest time)."""
        now = time.monotonic()
        budget = self._budget_s
        if left_s is None and budget is None:
            return
        allowed = min(x for x in (left_s, budget) if x is not None)
        self.context.deadline = now + allowed
        interrupts = self.context.interrupts
        if interrupts is not None:
            interrupts.deadline = now + allowed

    def answered(self, answer: GuestAnswer, headers: Mapping[str, str], reply_to: str) -> None:
        """The event loop: wake the guest with ``answer``; its next reply goes to ``reply_to``
        (empty: where it went before)."""
        self.context.reply_to = reply_to or self.context.reply_to
        capabilities = capabilities_in(headers)
        if capabilities is not None:
            self.context.capabilities = capabilities
        left = seconds_until(headers)
        self._budget_s = None if left is None else guest_budget_s(max(left, 0.001))
        self._answer = answer
        self._answered.set()


class Suspensions:
    """The calls of one worker waiting for an answer, by suspension id (thread-safe), at most ``limit``."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        """``[worker] waiting_guests``: the guest threads beyond ``concurrency`` (``WorkerService``);
        one more waiting guest would hold a thread a running call needs."""
        self._waiting: dict[str, Conversation] = {}
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._waiting)

    def add(self, suspension: str, conversation: Conversation) -> bool:
        """Register a waiting guest; False (nothing registered) when ``limit`` already wait."""
        with self._lock:
            if len(self._waiting) >= self.limit:
                return False
            self._waiting[suspension] = conversation
            return True

    def discard(self, suspension: str) -> None:
        with self._lock:
            self._waiting.pop(suspension, None)

    def cancel_all(self, reason: str) -> None:
        """Wake every waiting guest with ``cancelled`` (the worker is stopping: no answer can reach it)."""
        with self._lock:
            waiting, self._waiting = self._waiting, {}
        for suspension, conversation in waiting.items():
            conversation.answered(GuestAnswer(suspension, error="cancelled", message=reason), {}, "")

    def take(self, answer: GuestAnswer, principal: str | None) -> tuple[ErrorCode, str] | Conversation:
        """The waiting call ``answer`` names (no longer waiting: wake it with ``Conversation.answered``),
        or why not (the typed error to reply with).

        The resume must carry the principal the call carried (both signed, or both without one):
        a question's answer is the asker's alone.
        """
        if answer.error is not None and answer.error not in ASK_ERRORS:
            return ErrorCode.BAD_REQUEST, f"error must be one of {', '.join(sorted(ASK_ERRORS))}"
        with self._lock:
            conversation = self._waiting.get(answer.suspension)
            if conversation is not None and conversation.principal == principal:
                del self._waiting[answer.suspension]
        if conversation is None:
            return ErrorCode.BAD_REQUEST, (
                "no call is waiting for this answer (it finished, gave up waiting, or its worker restarted); "
                "call the tool again"
            )
        if conversation.principal != principal:
            return ErrorCode.FORBIDDEN, "this answer is not signed for the principal the call belongs to"
        return conversation
