"""One tool call as a NATS request: headers out, a result (or a typed ``CallFailed``) back.

Independent of the mcp SDK: the caller hands in a tool name and arguments and gets the raw
``CallToolResult`` JSON a worker sent, so any HTTP front end can splice it into its response.

Around the request:
- events: with an ``EventRelay`` that wants something, the call subscribes to a fresh inbox,
  names it in ``Toolbus-Events`` (and the wanted level in ``Toolbus-Log-Level``), relays what
  the worker publishes there until the reply, and unsubscribes. Without one the request is
  exactly the plain one: no inbox, no extra headers.
- cancellation: when the caller is cancelled (the client cancelled, or went away) or the
  deadline passes, an empty message on ``PREFIX.cancel.<Toolbus-Request-Id>`` tells the worker
  to stop the guest. It is published from a shielded scope, then the cancellation goes on.
- payloads of any size (``bus.payloads``): arguments over the cap (``[nats] max_payload_bytes``)
  are answered at once with an ``isError`` result naming it, without publishing anything;
  arguments too large for one message go through the Object Store, and so does a reply whose
  headers carry a claim check (the gateway reads it, then deletes the object).
- a lost connection: when the gateway's NATS server dies, the replies to the calls in flight
  can no longer reach it. Those calls end at once with the retryable ``BusDisconnected``
  (``bus.connection.on_disconnect``) instead of at their deadline; the cancel for each is sent
  when the connection is back, so the worker stops the guest whose answer nobody awaits.
"""

from __future__ import annotations

import asyncio
import secrets
from dataclasses import dataclass
from typing import Any, Final

import anyio
import msgspec
import structlog
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from bus.call_request import CallRequest, CallRequests
from bus.connection import on_disconnect
from bus.errors import BusError, BusTimeout, ConnectionLost, MessageTooLarge, NoResponders, nats_boundary
from bus.errors import PayloadTooLarge as CapExceeded
from bus.payloads import Payloads
from bus.principal import PrincipalSigner
from bus.reply_mux import ReplyMux
from bus.subjects import Header, Subjects
from gateway.errors import (
    BusDisconnected,
    CallFailed,
    DeadlineExceeded,
    MissingCapability,
    NoWorker,
    PayloadTooLarge,
    WorkerFailed,
    call_failed,
)
from gateway.events import EventRelay
from schemas.codec import DecodeError, decode, encode
from schemas.errors import ErrorCode
from schemas.wire import CallToolResult, ErrorReply, GuestAnswer, GuestQuestion, SurfaceRequest, TextContent

log = structlog.get_logger(__name__)

_HINTS: Final[dict[ErrorCode, str]] = {ErrorCode.OVERLOADED: "; retry later"}
"""Words appended to a worker's message so a reader knows what to do next."""


def _format_s(seconds: float) -> str:
    return f"{seconds:g}s"


def no_worker(tool: str) -> NoWorker:
    """The error for a call that reached no worker."""
    return NoWorker(f"no worker is serving tool {tool!r} right now; retry later", tool=tool)


def deadline_exceeded(tool: str, timeout_s: float) -> DeadlineExceeded:
    """The error for a call that got no reply before its deadline."""
    return DeadlineExceeded(
        f"tool {tool!r} did not finish within {_format_s(timeout_s)}; the call's deadline passed", tool=tool
    )


def error_from_reply(tool: str, code_header: str, body: bytes) -> CallFailed:
    """Turn a worker's typed error reply into the matching ``CallFailed``."""
    capabilities: list[str] = []
    try:
        reply = decode(body, ErrorReply)
        detail = reply.error.message
        raw_code: int | str = reply.error.code
        capabilities = reply.error.capabilities
    except DecodeError:
        detail = body[:200].decode("utf-8", "replace")
        raw_code = code_header
    try:
        code = ErrorCode(int(raw_code))
    except ValueError:
        return WorkerFailed(
            f"tool {tool!r} failed with an error code this gateway does not know ({raw_code}): {detail}",
            tool=tool,
            detail=detail,
        )
    if code is ErrorCode.MISSING_CAPABILITY:
        return MissingCapability(
            detail or f"tool {tool!r} requires client capabilities", tool=tool, capabilities=capabilities
        )
    if code is ErrorCode.NO_WORKER:
        # Same words whether NATS or the registry said it, so clients can match one message.
        return NoWorker(no_worker(tool).message, tool=tool, detail=detail)
    message = f"tool {tool!r}: {detail}" if detail else f"tool {tool!r} failed ({code.name})"
    return call_failed(code, message + _HINTS.get(code, ""), tool=tool, detail=detail)


@dataclass(frozen=True)
class Question:
    """A guest's question, as a worker's reply carried it (answered via ``gateway.questions``)."""

    worker: str
    """The worker holding the suspended guest (``Subjects.resume``)."""
    suspension: str
    requests: dict[str, dict[str, Any]]
    """Key → ``{"method", "params"}``."""


def result_from_reply(tool: str, msg: Msg) -> bytes | Question:
    """The ``CallToolResult`` JSON of a reply, or the guest's question it carries.

    Raises:
        CallFailed: the reply is a typed error, or a question that cannot be read.
    """
    headers = msg.headers
    if headers:
        code_header = headers.get(Header.ERROR)
        if code_header is not None:
            raise error_from_reply(tool, code_header, msg.data)
        suspension = headers.get(Header.QUESTION)
        if suspension is not None:
            return _question(tool, suspension, headers.get(Header.WORKER, ""), msg.data)
    return msg.data


def _question(tool: str, suspension: str, worker: str, body: bytes) -> Question:
    try:
        requests = decode(body, GuestQuestion).requests
    except DecodeError:
        requests = None
    if requests is None or not worker:
        raise WorkerFailed(f"the worker for tool {tool!r} sent a question this gateway cannot read", tool=tool)
    return Question(worker, suspension, requests)


class ToolCaller:
    """Sends tool calls over NATS request/reply; the request timeout is the call's deadline."""

    def __init__(
        self,
        nc: NatsClient,
        subjects: Subjects,
        *,
        timeout_s: float,
        signer: PrincipalSigner | None = None,
        payloads: Payloads | None = None,
    ) -> None:
        self._nc = nc
        self._subjects = subjects
        self.timeout_s = timeout_s
        self._payloads = payloads or Payloads(nc, subjects)
        self._requests = CallRequests(subjects, signer)
        self._replies = ReplyMux(nc)
        """One reply subscription for every call, no ``wait_for`` per call (``bus.reply_mux``)."""
        self._waiting: set[asyncio.Task[Any]] = set()
        """Tasks awaiting a reply right now (a set add and discard per call: no task of its own)."""
        self._lost: set[asyncio.Task[Any]] = set()
        """Tasks of ``_waiting`` cancelled because the connection was lost."""
        on_disconnect(nc, self._connection_lost)

    def _connection_lost(self) -> None:
        """No reply to a request sent before now can come: end every call waiting for one."""
        waiting, self._waiting = self._waiting, set()
        for task in waiting:
            self._lost.add(task)
            task.cancel()

    def _forget_loss(self, task: asyncio.Task[Any]) -> bool:
        """True when ``task`` was cancelled by ``_connection_lost``; that cancellation is undone
        (a reply that arrived meanwhile wins, and nobody above sees a cancellation of ours)."""
        if task not in self._lost:
            return False
        self._lost.discard(task)
        task.uncancel()
        return True

    async def call(
        self,
        tool: str,
        arguments: Any,
        *,
        era: str,
        timeout_s: float | None = None,
        request_id: str | None = None,
        traceparent: str | None = None,
        principal: str | None = None,
        events: EventRelay | None = None,
        can_ask: frozenset[str] | None = None,
    ) -> bytes | Question:
        """Call ``tool`` with JSON ``arguments``; return the worker's ``CallToolResult`` JSON, or its
        guest's question when ``can_ask`` (the client capabilities the caller relays) is given.

        ``principal`` travels signed (``bus.principal``) when the caller has a signer.

        ``events`` receives the call's progress and log events while it runs, when it wants any.
        ``request_id`` must be a subject token (it names the cancel subject); by default a fresh one
        (``bus.call_request.new_request_id``).

        Arguments over ``max_payload_bytes`` are not sent: the answer is an ``isError`` result naming it.

        Raises:
            CallFailed: no worker, deadline passed, or the worker replied with a typed error.
        """
        timeout_s = self.timeout_s if timeout_s is None else timeout_s
        body = encode(arguments)
        if len(body) > self._payloads.max_bytes:
            refusal = self._payloads.too_large("the arguments", len(body))
            text = f"tool {tool!r} was not called: {refusal}"
            return encode(CallToolResult(content=[TextContent(text)], is_error=True))
        if not self._nc.is_connected:
            # While reconnecting nats-py would buffer the request and we would only learn at
            # the deadline; say at once that nothing is reachable.
            raise BusDisconnected(
                f"the gateway is not connected to NATS, so tool {tool!r} cannot be reached; retry later", tool=tool
            )
        request = self._requests.build(
            tool,
            body,
            timeout_s=timeout_s,
            era=era,
            request_id=request_id,
            traceparent=traceparent,
            principal=principal,
        )
        if len(body) <= self._payloads.inline_limit():
            return await self._send(tool, request, timeout_s, events, can_ask)
        return await self._send_checked_in(tool, await self._check_in(tool, request), timeout_s, events, can_ask)

    async def _check_in(self, tool: str, request: CallRequest) -> CallRequest:
        """``request`` with its body in the Object Store and a claim check in its headers (the
        principal was signed over the real body, which the worker verifies once it has read it).

        Raises:
            PayloadTooLarge: the body is over ``max_payload_bytes`` (a resume's answer: a call's
                arguments over it never get here).
            BusDisconnected: the Object Store could not take the body.
        """
        try:
            body, headers = await self._payloads.offload(request.body, request.headers)
        except CapExceeded as exc:
            # Not a lost bus (nor, in resume, a lost worker): retrying sends the same body.
            raise PayloadTooLarge(f"the answer for tool {tool!r} was not sent: {exc}", tool=tool) from exc
        except BusError as exc:
            raise BusDisconnected(
                f"the arguments for tool {tool!r} ({len(request.body)} bytes) could not be stored for the "
                f"worker: {exc}; retry later",
                tool=tool,
                detail=type(exc).__name__,
            ) from exc
        return msgspec.structs.replace(request, body=body, headers=headers or {})

    async def _send_checked_in(
        self,
        tool: str,
        request: CallRequest,
        timeout_s: float,
        events: EventRelay | None,
        can_ask: frozenset[str] | None,
    ) -> bytes | Question:
        """``_send`` for a request whose body ``_check_in`` stored; the object is deleted after."""
        try:
            return await self._send(tool, request, timeout_s, events, can_ask)
        finally:
            # The worker deletes what it read, but not what it refused unread (over its own cap,
            # busy reading others, a wrong digest), and nobody reads after no worker, a deadline or
            # a client gone: once the gateway stops waiting nobody needs the object, and a client
            # repeating such calls must not fill the bucket until its TTL (attack kept in
            # tests/gateway/test_payloads.py). Deleting an object already claimed changes nothing.
            with anyio.CancelScope(shield=True):
                await self._payloads.delete(request.headers[Header.PAYLOAD])

    async def _claim(self, tool: str, msg: Msg) -> None:
        """Replace the empty body of a reply carrying a claim check by the object it names, and
        delete the object (nobody else may read a reply).

        Raises:
            WorkerFailed: the object cannot be read (gone, over the cap, refused).
        """
        try:
            msg.data = await self._payloads.take(msg.headers, msg.data)
        except BusError as exc:
            raise WorkerFailed(f"the result of tool {tool!r} could not be read: {exc}", tool=tool) from exc

    async def resume(
        self,
        tool: str,
        worker: str,
        answer: GuestAnswer,
        *,
        era: str,
        request_id: str,
        timeout_s: float | None = None,
        traceparent: str | None = None,
        principal: str | None = None,
        events: EventRelay | None = None,
        can_ask: frozenset[str] | None = None,
    ) -> bytes | Question:
        """Answer the question of the guest suspended on ``worker``; return the call's next reply
        (its result, or the next question). Signed and bounded like the call itself.

        Raises:
            CallFailed: the worker is gone (``NoWorker``: call again), refused the answer, or the
                deadline passed.
        """
        timeout_s = self.timeout_s if timeout_s is None else timeout_s
        try:
            subject = self._subjects.resume(worker)
        except ValueError:
            raise WorkerFailed(f"the worker for tool {tool!r} named itself {worker!r}", tool=tool) from None
        request = self._requests.build(
            tool,
            encode(answer),
            timeout_s=timeout_s,
            era=era,
            request_id=request_id,
            traceparent=traceparent,
            principal=principal,
            subject=subject,
        )
        try:
            if len(request.body) > self._payloads.inline_limit():  # a large sampled image, say
                return await self._send_checked_in(
                    tool, await self._check_in(tool, request), timeout_s, events, can_ask
                )
            return await self._send(tool, request, timeout_s, events, can_ask)
        except NoWorker:
            raise NoWorker(
                f"the worker running tool {tool!r} for this call is gone (it stopped or restarted), and its "
                "guest with it; call the tool again",
                tool=tool,
            ) from None

    async def _send(
        self,
        tool: str,
        request: CallRequest,
        timeout_s: float,
        events: EventRelay | None,
        can_ask: frozenset[str] | None,
    ) -> bytes | Question:
        if can_ask is not None:
            request.headers[Header.CAN_ASK] = ",".join(sorted(can_ask))
        if events is None or not events.wanted:
            return await self._request(tool, request, timeout_s)
        return await self._request_with_events(tool, request, timeout_s, events)

    async def surface(
        self, component: str, request: SurfaceRequest, *, principal: str | None = None, timeout_s: float | None = None
    ) -> bytes:
        """Send a resource read, prompt get or completion to ``component``'s workers; the reply's JSON.

        Raises:
            CallFailed: no worker, deadline passed, or the worker replied with a typed error
                (``NOT_FOUND`` for an unknown URI, ``INVALID_PARAMS`` for refused arguments).
        """
        timeout_s = self.timeout_s if timeout_s is None else timeout_s
        if not self._nc.is_connected:
            raise BusDisconnected("the gateway is not connected to NATS; retry later", tool=component)
        built = self._requests.surface(component, encode(request), timeout_s=timeout_s, principal=principal)
        reply = await self._request(component, built, timeout_s)
        if isinstance(reply, Question):  # a worker answers a guest's ask outside a call `unsupported`
            raise WorkerFailed(f"{component} asked its client outside a tool call", tool=component)
        return reply

    async def _request_with_events(
        self, tool: str, request: CallRequest, timeout_s: float, events: EventRelay
    ) -> bytes | Question:
        async def on_event(msg: Msg) -> None:
            await events.on_message(msg.data)

        # Not an inbox: workers may publish only to call-events subjects (bus.permissions), and the
        # token is unguessable, so no one else's events land here.
        inbox = self._subjects.call_events(secrets.token_hex(16))
        # SUB goes out ahead of the request on this connection, so the server has it before
        # any worker sees the call: no round trip needed.
        subscription = await self._nc.subscribe(inbox, cb=on_event)
        request.headers[Header.EVENTS] = inbox
        if events.log_level is not None:
            request.headers[Header.LOG_LEVEL] = events.log_level
        try:
            try:
                result = await self._request(tool, request, timeout_s)
            except CallFailed:
                await events.catch_up(subscription.delivered)  # logs may say why
                raise
            # Events the worker sent before its reply are queued by now: relay them before it.
            await events.catch_up(subscription.delivered)
            return result
        finally:
            await unsubscribe_quietly(subscription)

    async def _request(self, tool: str, request: CallRequest, timeout_s: float) -> bytes | Question:
        request_id = request.request_id
        task = asyncio.current_task()
        assert task is not None
        lost = False
        try:
            self._waiting.add(task)
            try:
                msg = await self._replies.request(
                    request.subject, request.body, timeout_s=timeout_s, headers=request.headers
                )
            finally:
                self._waiting.discard(task)
                lost = self._forget_loss(task)
        except NoResponders:
            raise no_worker(tool) from None
        except BusTimeout:
            await self.cancel(request_id)  # a worker may still be running it
            raise deadline_exceeded(tool, timeout_s) from None
        except asyncio.CancelledError:
            if lost and not task.cancelling():  # ours alone: the connection died under the call
                await self.cancel(request_id)  # nats-py sends it once reconnected
                raise BusDisconnected(
                    f"the gateway lost its NATS connection while calling tool {tool!r}; retry later",
                    tool=tool,
                    detail="connection lost",
                ) from None
            # The client cancelled or went away: stop the guest, then let the cancellation go on.
            with anyio.CancelScope(shield=True):
                await self.cancel(request_id)
            raise
        except MessageTooLarge as exc:
            raise PayloadTooLarge(
                f"the arguments for tool {tool!r} are {len(request.body)} bytes; the bus allows at most "
                f"{self._nc.max_payload}",
                tool=tool,
                detail=str(exc),
            ) from exc
        except ConnectionLost as exc:  # closed, draining, reconnecting, or its buffer full
            raise BusDisconnected(
                f"the gateway lost its NATS connection while calling tool {tool!r}; retry later",
                tool=tool,
                detail=type(exc).__name__,
            ) from exc
        if msg.headers and Header.PAYLOAD in msg.headers:
            await self._claim(tool, msg)
        return result_from_reply(tool, msg)

    async def cancel(self, request_id: str) -> None:
        """Tell the worker running the call ``request_id`` to stop it (best effort, never raises)."""
        try:
            with nats_boundary:
                await self._nc.publish(self._subjects.cancel(request_id), b"")
        except (BusError, ValueError) as exc:
            log.debug("cancel not published", request_id=request_id, error=str(exc) or type(exc).__name__)


async def unsubscribe_quietly(subscription: Subscription) -> None:
    """Unsubscribe, even while being cancelled; a closed or draining connection dropped it anyway."""
    with anyio.CancelScope(shield=True):
        try:
            with nats_boundary:
                await subscription.unsubscribe()
        except BusError as exc:
            log.debug("subscription not unsubscribed", subject=subscription.subject, error=type(exc).__name__)
