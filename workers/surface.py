"""The worker's bus side for resources, prompts and completion (issue 16).

A component that exports ``toolbus:mcp/resources``, ``prompts`` or ``completion``
(``workers.sandbox.surface``) is served on one subject, ``Subjects.surface(component)``, in the
workers' queue group: the body is a ``SurfaceRequest`` (``resources/read``, ``prompts/get``,
``completion/complete``), the reply the MCP result's JSON or a typed error (``NOT_FOUND`` for an
unknown URI, ``INVALID_PARAMS`` when a prompt refuses its arguments). Each request goes through
the same admission as a call (``workers.admission``: capacity, the component's
``max_concurrency``, the principal's share, whose signature is checked as a call's is) and runs
in a fresh sandbox in a guest thread; the answer leaves through the outbox.

Guests' ``notify.resource-updated`` calls are published here too, as ``ResourceUpdated`` on
``Subjects.resource_updated``.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import Executor, Future
from functools import partial
from time import perf_counter_ns
from typing import Any, Protocol, cast

import structlog
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from bus.connection import drain_subscriptions, published_only
from bus.errors import ConnectionClosed
from bus.principal import PrincipalSigner
from bus.replies import error_reply
from bus.subjects import Header, Subjects
from schemas.codec import DecodeError, decode, encode
from schemas.config import WorkerSettings
from schemas.errors import ErrorCode
from schemas.validation import compile_validator
from schemas.wire import (
    Complete,
    ComponentSurface,
    GetPrompt,
    GuestQuestion,
    ReadResource,
    ResourceUpdated,
    SurfaceRequest,
)
from workers.admission import Admission, Job
from workers.discovery import ToolStats
from workers.outbox import Outbox
from workers.routes import CallableComponent, Route
from workers.sandbox import CallContext
from workers.sandbox.limits import budget_before_deadline
from workers.sandbox.notify_host import set_publisher
from workers.sandbox.replay import Replay
from workers.sandbox.surface import GuestBody, GuestSurface, Sandboxed, SurfaceFailure

log = structlog.get_logger(__name__)

DRAIN_GRACE_S = 5.0
"""How long dropping a component's surface waits for the requests already delivered."""
_ANY_OBJECT = compile_validator({"type": "object"})


class SurfaceComponent(CallableComponent, Protocol):
    """A component that may serve resources, prompts and completion (``LoadedComponent``)."""

    surface: ComponentSurface
    guest_surface: GuestSurface

    def run_sandboxed(self, timeout_s: float, body: GuestBody, context: CallContext | None = None) -> Any: ...


Reply = tuple[bytes, dict[str, str] | None]


class SurfaceServer:
    """Serves the surfaces of the worker's components on their subjects; told of every change."""

    def __init__(
        self,
        nc: NatsClient,
        subjects: Subjects,
        settings: WorkerSettings,
        admission: Admission,
        pool: Executor,
        outbox: Outbox,
        principal_signer: PrincipalSigner | None = None,
    ) -> None:
        self._nc = nc
        self._subjects = subjects
        self._settings = settings
        self._admission = admission
        self._pool = pool
        self._outbox = outbox
        self._signer = principal_signer
        self._routes: dict[str, Route] = {}
        """Component → its route (the component, its counters and concurrency limit)."""
        self._surfaces: dict[str, ComponentSurface] = {}
        self._components: dict[str, SurfaceComponent] = {}
        self._subscriptions: dict[str, Subscription] = {}
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def surfaces(self) -> list[ComponentSurface]:
        """What the worker's components serve besides tools (announced with the tools)."""
        return list(self._surfaces.values())

    def set(self, source: str, component: CallableComponent, version: str = "") -> None:
        """Serve ``component``'s surface as ``source`` (replacing what it served); none: forget it."""
        surface: ComponentSurface | None = getattr(component, "surface", None)
        if surface is None or surface.empty:
            self.remove(source)
            return
        if version:
            surface = ComponentSurface(
                component=source,
                resources=surface.resources,
                templates=surface.templates,
                prompts=surface.prompts,
                completion=surface.completion,
                digest=surface.digest,
                version=version,
            )
        self._surfaces[source] = surface
        self._components[source] = cast(SurfaceComponent, component)
        self._routes[source] = Route(component, _ANY_OBJECT, ToolStats(), component.limits.max_concurrency)

    def remove(self, source: str) -> None:
        self._surfaces.pop(source, None)
        self._routes.pop(source, None)
        self._components.pop(source, None)

    async def start(self) -> None:
        """Publish guests' notifications from now on, and subscribe to every surface's subject."""
        self._loop = asyncio.get_running_loop()
        set_publisher(self._publish_updated)
        await self.sync()

    async def sync(self) -> None:
        """Subscribe to the surfaces added since, drain the subscriptions of those removed."""
        for name in self._routes:
            if name not in self._subscriptions:
                subject = self._subjects.surface(name)
                self._subscriptions[name] = await self._nc.subscribe(
                    subject, queue=self._subjects.worker_queue, cb=published_only(subject, self._on_request)
                )
        gone = [name for name in self._subscriptions if name not in self._routes]
        for name in gone:
            await self._drain([self._subscriptions.pop(name)])

    async def stop(self, grace_s: float) -> None:
        """Stop taking requests (those delivered are still answered) and publishing notifications."""
        set_publisher(None)
        subscriptions, self._subscriptions = list(self._subscriptions.values()), {}
        await self._drain(subscriptions, grace_s)

    async def _drain(self, subscriptions: list[Subscription], grace_s: float = DRAIN_GRACE_S) -> None:
        try:
            await asyncio.wait_for(drain_subscriptions(self._nc, subscriptions, grace_s), grace_s)
        except (TimeoutError, ConnectionClosed):
            pass

    def _publish_updated(self, component: str, uri: str) -> None:
        """From a guest thread: hand the notification to the outbox on the event loop."""
        loop = self._loop
        if loop is not None:
            body = encode(ResourceUpdated(uri=uri, component=component))
            loop.call_soon_threadsafe(self._outbox.put, self._subjects.resource_updated, body, None)

    async def _on_request(self, msg: Msg) -> None:
        if not msg.reply:
            return
        component = self._subjects.component_from_surface(msg.subject)
        route = self._routes.get(component)
        guest = self._components.get(component)
        if route is None or guest is None:
            self._outbox.put(
                msg.reply, *error_reply(ErrorCode.NOT_FOUND, f"component {component!r} is not served here")
            )
            return
        headers = msg.headers or {}
        principal = None
        if self._signer is not None and Header.PRINCIPAL in headers:
            principal = self._signer.verified(headers, msg.subject, msg.data)
        refusal = self._admission.refusal(route, f"{component} (resources, prompts)", principal)
        if refusal is not None:
            route.stats.overloaded += 1
            self._outbox.put(msg.reply, *error_reply(ErrorCode.OVERLOADED, refusal))
            return
        try:
            request: SurfaceRequest = decode(msg.data, SurfaceRequest)  # type: ignore[arg-type]
        except DecodeError as exc:
            self._outbox.put(msg.reply, *error_reply(ErrorCode.BAD_REQUEST, f"not a surface request: {exc}"))
            return
        try:
            timeout_s = budget_before_deadline(headers.get(Header.DEADLINE_MS), self._settings.max_call_timeout_s)
        except ValueError:
            message = f"{Header.DEADLINE_MS} must be epoch milliseconds"
            self._outbox.put(msg.reply, *error_reply(ErrorCode.BAD_REQUEST, message))
            return
        if timeout_s <= 0:
            self._outbox.put(
                msg.reply, *error_reply(ErrorCode.DEADLINE_EXCEEDED, "the deadline passed before it started")
            )
            return
        context = CallContext(request_id=headers.get(Header.REQUEST_ID, ""))
        job = Job(
            route,
            component,
            {},
            timeout_s,
            perf_counter_ns(),
            context,
            headers,
            principal,
            self._admission.share_of(principal),
        )
        self._admission.admit(job)
        future = self._pool.submit(_serve, guest, request, timeout_s)
        future.add_done_callback(lambda done: self._done_threadsafe(msg.reply, job, done))

    def _done_threadsafe(self, reply_to: str, job: Job, future: Future[Reply]) -> None:
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._finish, reply_to, job, future)

    def _finish(self, reply_to: str, job: Job, future: Future[Reply]) -> None:
        self._admission.release(job)
        if future.cancelled():
            return
        error = future.exception()
        if error is not None:
            log.error("surface request failed inside the worker", component=job.tool, exc_info=error)
            self._outbox.put(reply_to, *error_reply(ErrorCode.INTERNAL, "internal error in worker; see worker logs"))
            return
        self._outbox.put(reply_to, *future.result())


def _get_prompt(component: SurfaceComponent, request: GetPrompt, timeout_s: float) -> Reply:
    """Render a prompt whose guest may ask: re-run with the answers so far (``Replay``); a
    question they do not answer is the reply (a ``GuestQuestion``: the gateway asks the client
    and gets the prompt again with one more round)."""
    replay = Replay(list(request.rounds), frozenset(request.capabilities))
    context = CallContext(asker=replay.ask, capabilities=replay.capabilities)
    try:
        rendered = component.guest_surface.get_prompt(
            partial(component.run_sandboxed, context=context), timeout_s, request.name, request.arguments
        )
    except Exception:
        if replay.pending is None:
            raise
    if replay.pending is not None:  # even if the guest's trap came back as something else
        return encode(GuestQuestion(replay.pending)), None
    return encode(rendered), None


def _serve(component: SurfaceComponent, request: SurfaceRequest, timeout_s: float) -> Reply:
    """Run one request in the guest (in a guest thread): the reply's body and headers."""
    guest = component.guest_surface
    run: Sandboxed = component.run_sandboxed
    try:
        if isinstance(request, ReadResource):
            return encode(guest.read(run, timeout_s, request.uri)), None
        if isinstance(request, GetPrompt):
            return _get_prompt(component, request, timeout_s)
        assert isinstance(request, Complete)
        reply = guest.complete(
            run, timeout_s, request.ref_type, request.ref, request.argument, request.value, request.context
        )
        return encode(reply), None
    except SurfaceFailure as failure:
        return error_reply(failure.code, failure.message)
    except (KeyError, TypeError, ValueError) as exc:
        # The guest returned something that does not fit MCP (e.g. an invalid role or blob).
        return error_reply(ErrorCode.INTERNAL, f"the component's answer does not fit MCP: {exc}")
