"""The gateway's ASGI app (Starlette), its middleware stack, and its uvicorn runner.

The middleware is one declared list, outermost first, built by ``build_stack`` the way
Starlette's ``build_middleware_stack`` builds its own: the error boundary, the view router
(``PATH/<view>``, ``gateway.views``), the front door, the hot path, then the Starlette app. Code
that needs a layer later (tests, the bench, the server's shutdown) asks ``gateway_state`` for what
the build recorded instead of walking ``.app`` links.

The lifespan connects NATS (unless given a connection), makes sure the tools bucket exists,
starts the catalogue watch and the tool-list change notices, opens the task store (its
buckets and stream are created if missing), and runs the SDK's session manager; on the way
out it stops them in reverse order and drains NATS.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import gc
import socket
import weakref
from collections.abc import AsyncIterator, Sequence
from types import FrameType
from typing import Any, Final, TypeVar

import structlog
import uvicorn
from mcp.server.streamable_http_manager import StreamableHTTPASGIApp
from nats.aio.client import Client as NatsClient
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.types import ASGIApp

from bus.connection import connect
from bus.errors import BusError, nats_boundary
from bus.payloads import Payloads
from bus.principal import PrincipalSigner
from bus.provisioning import ensure_bucket
from bus.subjects import Subjects
from bus.telemetry import start_tracing
from gateway.askers import request_state_security
from gateway.audit_trail import AuditTrail
from gateway.auth import Authenticator
from gateway.boundary import ErrorBoundary
from gateway.call_log import CallLog
from gateway.calls import ToolCaller
from gateway.catalogue_mirror import CatalogueMirror, CatalogueMirrorWatcher
from gateway.changes import ListChanges
from gateway.connections import guarded_protocol
from gateway.console import CallRates, Console, ConsoleParts
from gateway.front_door import FrontDoor, OnRefusal, Refusal
from gateway.hotpath import HotPath
from gateway.metrics import CONTENT_TYPE, GatewayMetrics
from gateway.prompts import PromptFrontend
from gateway.ratelimit import RateLimiter
from gateway.readiness import ConfiguredComponents
from gateway.resources import ResourceFrontend
from gateway.sdk_adapter import session_alive
from gateway.server import ToolFrontend, build_server, build_session_manager, transport_security
from gateway.sessions import SessionOwners
from gateway.surface_mirror import SurfaceMirror, decode_surface
from gateway.surface_service import SurfaceService
from gateway.task_frontend import TaskFrontend
from gateway.tool_service import ToolService
from gateway.tracing import TracedToolService
from gateway.views import ViewBook, ViewRouter, decode_view
from schemas.config import Settings
from stores import TaskStore

log = structlog.get_logger(__name__)

CATALOGUE_LOAD_TIMEOUT_S: Final = 10.0
"""How long start-up waits for the catalogue's initial values before serving anyway."""
GRACEFUL_SHUTDOWN_S: Final = 5
"""How long uvicorn waits for open requests (and legacy GET streams) before closing them."""
DRAIN_TIMEOUT_S: Final = 10.0
"""Upper bound on draining NATS at shutdown."""
YOUNG_COLLECTION_THRESHOLD: Final = 10_000
"""The gateway process's first cyclic-GC threshold (CPython's default: 700). A call leaves no cyclic
garbage behind (tests/gateway/test_response_write.py), so a young collection frees next to nothing
and walks only the calls in flight: at 700 there were ~0.024 per call under load (4.5-6.9 us of
GC per call); at 10,000, one in 8 s (0.1 us), each no longer than before (~2 ms on a loaded
machine), since what it walks is what is alive, not what has accumulated."""
CLIENT_NAME: Final = "toolbus-gateway"

_Layer = TypeVar("_Layer")


class GatewayState:
    """What the routes and the lifespan share: the NATS connection, the catalogue, its change notices."""

    def __init__(self, catalogue: CatalogueMirror, changes: ListChanges) -> None:
        self.catalogue = catalogue
        self.changes = changes
        self.nc: NatsClient | None = None
        self.audit: AuditTrail | None = None
        """The audit trail (``gateway.audit_trail``) once NATS is connected: auth failures go to
        ``audit.auth_failure``."""
        self.rate_limiter: RateLimiter | None = None
        """The shared rate limits (``gateway.ratelimit``) once NATS is connected."""
        self.front_door: FrontDoor | None = None
        """One reading and every decision per request: authentication, sessions, policy, rate limits."""
        self.hot_path: HotPath | None = None
        """The lean ``tools/call`` and ``tools/list`` (``None`` with ``gateway.hot_path = false``)."""
        self.views = ViewBook()
        """The views served on ``PATH/<view>`` (``gateway.views``)."""
        self.console: Console | None = None
        """The operator's web console (``gateway.console``), mounted at ``/console``."""


_BUILT: Final[weakref.WeakKeyDictionary[ASGIApp, GatewayState]] = weakref.WeakKeyDictionary()
"""The state of each app ``build_app`` returned, by the app: weak, so a dropped app frees it."""


def build_stack(app: ASGIApp, middleware: Sequence[Middleware]) -> list[ASGIApp]:
    """``app`` wrapped in ``middleware``, listed outermost first (as Starlette lists its own).

    Returns every layer, outermost first, ending with ``app``: the first is what to serve.
    """
    layers = [app]
    for cls, args, kwargs in reversed(middleware):
        layers.append(cls(layers[-1], *args, **kwargs))
    layers.reverse()
    return layers


def _layer(layers: Sequence[ASGIApp], kind: type[_Layer]) -> _Layer | None:
    """The layer of type ``kind`` in a built stack (read once, when the gateway is built)."""
    return next((layer for layer in layers if isinstance(layer, kind)), None)


async def connect_nats(settings: Settings) -> NatsClient:
    """Connect to NATS for the gateway.

    Raises:
        BusUnavailable: no server answered within the configured connect timeout.
    """
    return await connect(settings.nats, name=CLIENT_NAME)


async def _drain(nc: NatsClient) -> None:
    if nc.is_closed:
        return
    try:
        with nats_boundary:
            await asyncio.wait_for(nc.drain(), DRAIN_TIMEOUT_S)
    except (TimeoutError, BusError):
        await nc.close()


def build_app(settings: Settings, nc: NatsClient | None = None, *, close_nc: bool | None = None) -> ASGIApp:
    """The gateway as an ASGI app: the MCP endpoint at ``settings.gateway.path``, ``/healthz``
    (liveness) and ``/readyz`` (NATS connected, the catalogue loaded and every component of the
    config served by a live worker: ``gateway.readiness``).

    Without ``nc`` the lifespan connects to ``settings.nats.url`` itself. ``close_nc`` (default:
    only when the lifespan connected) drains the connection at shutdown.
    """
    subjects = Subjects(settings.nats.prefix)
    catalogue = CatalogueMirror()
    views = ViewBook(settings.views)
    tracing = start_tracing(settings.telemetry, "gateway")
    service = (
        ToolService(catalogue, page_size=settings.gateway.page_size)
        if tracing is None  # no OpenTelemetry code per call unless spans are exported
        else TracedToolService(catalogue, page_size=settings.gateway.page_size, tracing=tracing)
    )
    service.views = views
    changes = ListChanges(catalogue, views=views)
    surfaces = SurfaceMirror()
    changes.follow_surfaces(surfaces)
    frontend = ToolFrontend(service)
    tasks = TaskFrontend(service, subjects, page_size=settings.gateway.page_size)
    surface_service = SurfaceService(surfaces, service)
    resources = ResourceFrontend(surface_service, changes)
    server = build_server(
        frontend,
        changes,
        tasks,
        request_state_security(settings.nats.principal_key),
        resources,
        PromptFrontend(surface_service),
    )
    security = transport_security(settings.gateway)
    session_manager = build_session_manager(server, security, max_body_bytes=settings.gateway.max_body_bytes)
    state = GatewayState(catalogue, changes)
    state.views = views
    metrics = GatewayMetrics(
        service,
        catalogue,
        nats_connected=lambda: state.nc is not None and state.nc.is_connected,
        task_store=lambda: tasks.store,
    )
    service.observers.append(metrics.observe)
    call_log = CallLog()
    if settings.telemetry.call_logs:
        service.observers.append(call_log.observe)
    should_close = nc is None if close_nc is None else close_nc
    configured = ConfiguredComponents([entry.name for entry in settings.components], subjects)
    signer = PrincipalSigner.for_key(settings.nats.principal_key)
    console = Console(
        ConsoleParts(
            subjects=subjects,
            catalogue=catalogue,
            authenticator=Authenticator(settings.auth) if settings.auth is not None else None,
            nats=lambda: state.nc,
            tasks=lambda: tasks.store,
            audit=lambda: state.audit,
            rates=CallRates(metrics.registry),
            secure_cookie=settings.auth is not None and settings.auth.resource.startswith("https://"),
        )
    )
    state.console = console

    @contextlib.asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        conn = nc or await connect_nats(settings)
        watcher: CatalogueMirrorWatcher[Any] | None = None
        surface_watcher: CatalogueMirrorWatcher[Any] | None = None
        view_watcher: CatalogueMirrorWatcher[Any] | None = None
        audit: AuditTrail | None = None
        try:
            kv = await ensure_bucket(conn, subjects.tools_bucket, replicas=settings.nats.replicas)
            watcher = CatalogueMirrorWatcher(kv, catalogue)
            watcher.start()
            surfaces_kv = await ensure_bucket(conn, subjects.surfaces_bucket, replicas=settings.nats.replicas)
            surface_watcher = CatalogueMirrorWatcher(surfaces_kv, surfaces, decode_value=decode_surface)
            surface_watcher.start()
            views_kv = await ensure_bucket(conn, subjects.views_bucket, replicas=settings.nats.replicas)
            view_watcher = CatalogueMirrorWatcher(views_kv, views, decode_value=decode_view)
            view_watcher.start()
            await resources.attach(conn, subjects)
            try:
                await asyncio.wait_for(catalogue.loaded.wait(), CATALOGUE_LOAD_TIMEOUT_S)
            except TimeoutError:
                log.warning("catalogue not loaded yet; serving without it", timeout_s=CATALOGUE_LOAD_TIMEOUT_S)
            payloads = Payloads(
                conn, subjects, max_bytes=settings.nats.max_payload_bytes, replicas=settings.nats.replicas
            )
            service.caller = ToolCaller(
                conn, subjects, timeout_s=settings.gateway.call_timeout_s, signer=signer, payloads=payloads
            )
            task_store = await TaskStore.open(
                conn,
                subjects,
                settings.tasks,
                replicas=settings.nats.replicas,
                max_payload_bytes=settings.nats.max_payload_bytes,
            )
            tasks.attach(conn, task_store)
            audit = AuditTrail(conn, subjects, settings.audit)
            audit.start()
            service.observers.append(audit.observe)
            state.audit = audit
            state.rate_limiter = await RateLimiter.open(
                conn, subjects, settings.rate_limits, replicas=settings.nats.replicas
            )
            if state.front_door is not None:
                state.front_door.on_refusal = audited_refusals(audit)
                if settings.rate_limits.enabled:
                    state.front_door.rate_limit = state.rate_limiter
            state.nc = conn
            changes.start()
            async with session_manager.run():
                log.info(
                    "gateway started",  # ready is /readyz's to say: the components may still be loading
                    host=settings.gateway.host,
                    port=settings.gateway.port,
                    path=settings.gateway.path,
                    tools=len(catalogue),
                )
                yield
        finally:
            await console.feed.stop()  # before NATS drains: it unsubscribes
            state.nc = None
            await tasks.stop()
            await changes.stop()
            if watcher is not None:
                await watcher.stop()
            if surface_watcher is not None:
                await surface_watcher.stop()
            if view_watcher is not None:
                await view_watcher.stop()
            await resources.detach()
            if audit is not None:
                service.observers.remove(audit.observe)
                state.audit = state.rate_limiter = None
                if state.front_door is not None:
                    state.front_door.on_refusal = state.front_door.rate_limit = None
                await audit.stop()  # publishes what is queued before NATS drains
            call_log.close()
            if should_close:
                await _drain(conn)
            if tracing is not None:
                await asyncio.to_thread(tracing.shutdown)  # exports the last spans (bounded by its timeout)

    def status() -> tuple[bool, dict[str, object]]:
        connected = state.nc is not None and state.nc.is_connected
        ready = connected and catalogue.loaded.is_set() and configured.all_served
        body: dict[str, object] = {
            "status": "ok" if ready else "unavailable",
            "nats": "connected" if connected else "disconnected",
            "catalogueLoaded": catalogue.loaded.is_set(),
            "tools": len(catalogue),
        }
        if settings.components:
            body["components"] = configured.states()
        return ready, body

    async def healthz(_request: Request) -> JSONResponse:
        # Liveness: the process answers HTTP. A gateway waiting for NATS is alive (restarting
        # it would not help); the body says what it is waiting for.
        _, body = status()
        return JSONResponse(body, status_code=200)

    async def readyz(_request: Request) -> JSONResponse:
        # Readiness: send traffic only when calls can go out and tools/list is complete.
        if state.nc is not None and state.nc.is_connected:
            await configured.refresh(state.nc)
        ready, body = status()
        return JSONResponse(body, status_code=200 if ready else 503)

    async def metrics_endpoint(_request: Request) -> Response:
        return Response(await metrics.render(), media_type=CONTENT_TYPE)

    routes = [
        Route(settings.gateway.path, endpoint=StreamableHTTPASGIApp(session_manager)),
        Route("/console", endpoint=lambda _request: RedirectResponse("/console/", status_code=307), methods=["GET"]),
        Mount("/console", routes=console.routes()),
        Route("/healthz", endpoint=healthz, methods=["GET"]),
        Route("/readyz", endpoint=readyz, methods=["GET"]),
        Route("/metrics", endpoint=metrics_endpoint, methods=["GET"]),
    ]
    middleware = [
        # Outermost: an exception anywhere below becomes a JSON-RPC error, never a traceback.
        Middleware(ErrorBoundary),
        # PATH/<view> is served as PATH with the view in the scope (gateway.views), before any judgement.
        Middleware(
            ViewRouter,
            path=settings.gateway.path,
            views=views,
            session_alive=functools.partial(session_alive, session_manager),
        ),
        # Always in front, auth or not: it reads and judges every POST, once (gateway.inbound).
        Middleware(
            FrontDoor,
            path=settings.gateway.path,
            max_body_bytes=session_manager.max_request_body_size,
            auth=settings.auth,
            sessions=SessionOwners(
                alive=functools.partial(session_alive, session_manager),
                max_per_principal=settings.gateway.max_sessions_per_principal,
                initializes_per_minute=settings.gateway.initializes_per_minute,
            ),
            max_waiting_per_principal=settings.gateway.max_waiting_per_principal,
            surfaces=surfaces,
        ),
    ]
    if settings.gateway.hot_path:
        middleware.append(
            Middleware(
                HotPath,
                service=service,
                server=server,
                session_manager=session_manager,
                security=security,
                path=settings.gateway.path,
                log_levels=frontend.log_levels,
            )
        )
    layers = build_stack(Starlette(routes=routes, lifespan=lifespan), middleware)
    front_door = _layer(layers, FrontDoor)
    assert front_door is not None  # declared above, whatever the settings
    state.front_door = front_door
    state.hot_path = _layer(layers, HotPath)
    if state.hot_path is not None:
        metrics.watch_hot_path(state.hot_path)
    service.policy = front_door.policy  # tools/list shows what the front door lets through
    served = layers[0]
    _BUILT[served] = state
    return served


def audited_refusals(audit: AuditTrail) -> OnRefusal:
    """The front door's refusals as audit events (``AuditTrail.auth_failure``)."""

    def refused(refusal: Refusal) -> None:
        audit.auth_failure(
            refusal.reason,
            status=refusal.status,
            subject=refusal.principal,
            remote=refusal.remote,
            method=refusal.method,
            tool=refusal.tool,
            auth_method=refusal.auth_method,
            detail=refusal.description,
        )

    return refused


def gateway_state(app: ASGIApp) -> GatewayState:
    """The shared state of an app made by ``build_app``.

    Raises:
        TypeError: ``app`` is not one ``build_app`` returned.
    """
    try:
        return _BUILT[app]
    except (KeyError, TypeError):  # TypeError: an app that cannot be weakly referenced
        raise TypeError(f"not an app made by build_app: {type(app).__name__}") from None


def hot_path(app: ASGIApp) -> HotPath | None:
    """The hot path of an app made by ``build_app`` (``None`` with ``hot_path = false``)."""
    return gateway_state(app).hot_path


def uvicorn_config(app: ASGIApp, settings: Settings) -> uvicorn.Config:
    """uvicorn settings for the gateway: httptools with deadlines, a connection cap, quiet logs, bounded shutdown."""
    return uvicorn.Config(
        app,
        host=settings.gateway.host,
        port=settings.gateway.port,
        http=guarded_protocol(
            settings.gateway.header_timeout_s, settings.gateway.max_header_bytes, settings.gateway.body_timeout_s
        ),
        ws="none",
        limit_concurrency=settings.gateway.max_connections,
        lifespan="on",
        log_level="warning",
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_S,
    )


class HttpServer(uvicorn.Server):
    """uvicorn for an app made by ``build_app``: ends its listen streams as soon as shutdown begins.

    A ``subscriptions/listen`` response lasts as long as its client keeps it open, so uvicorn
    would otherwise wait ``GRACEFUL_SHUTDOWN_S`` for each one and then cancel it mid-stream.
    Ended gracefully, the client gets the stream's final result and knows to listen again.
    """

    def __init__(self, app: ASGIApp, settings: Settings, *, freeze_heap: bool = False) -> None:
        super().__init__(uvicorn_config(app, settings))
        self._changes = gateway_state(app).changes
        self._console = gateway_state(app).console
        self._freeze_heap = freeze_heap
        self.received: list[int] = []
        """The signals that asked it to stop, in order."""

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if self._freeze_heap and self.started:
            # Everything the gateway keeps for its life is made by now (the mcp SDK, pydantic's
            # models, the app and its middleware). Under load the calls in flight at each young
            # collection are promoted to the oldest generation, so a full collection comes every
            # few seconds, and it walked all of that: 45-99 ms with the loop (and every call in
            # flight) stopped, measured at 16 connections on 2 cores, the p99's tail. Frozen, a
            # full collection walks only what was made since. Only for a process of its own: a
            # test process starting many servers would keep its garbage.
            gc.freeze()
            gc.set_threshold(YOUNG_COLLECTION_THRESHOLD, *gc.get_threshold()[1:])

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        self.received.append(sig)
        super().handle_exit(sig, frame)

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        self._changes.end_streams()
        if self._console is not None:
            self._console.feed.end_streams()  # the console's event streams, likewise
        await super().shutdown(sockets)


async def serve(settings: Settings, *, sockets: Sequence[socket.socket] | None = None) -> list[int]:
    """Run the gateway until SIGINT/SIGTERM; NATS is drained before this returns the signals received.

    uvicorn raises a received signal again once it has stopped: SIGTERM then ends the process, and
    SIGINT reaches ``asyncio.Runner``, which cancels the main task — a cancel that nats-py's drain
    can swallow (``bus.cancellation``). Callers decide the exit status from what this returns.

    Raises:
        BusUnavailable: NATS cannot be reached at start-up.
    """
    nc = await connect_nats(settings)
    try:
        server = HttpServer(build_app(settings, nc, close_nc=True), settings, freeze_heap=True)
        await server.serve(sockets=list(sockets) if sockets else None)
    finally:
        await _drain(nc)
    return server.received
