"""The worker process: serve the configured components' tools as each loads, until signalled.

The worker connects, subscribes and announces before anything is built: a component's tools
are served the moment it is loaded (``WorkerService.set_source``), so a cheap WAT component is
called while a componentize-py one still builds. Until the last is loaded, the announcements
name those still loading (``WorkerAnnouncement.loading``), which is what ``toolbus up`` waits
on before it says the system is up.

Loading starts before connecting, beside it (``toolbus worker`` starts it earlier still, before
importing the bus and the event loop: ``cli.worker``): most of a cached load is reading, hashing
and deserializing the Wasm, which release the GIL, so another core does it while this one
imports, connects, subscribes and opens the stores (a restart is ready sooner: issue 17). A
component loaded before the worker is set up is served once it is.
"""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Callable

import structlog

from bus.cancellation import cancel_and_wait
from bus.connection import connected
from bus.payloads import Payloads
from bus.principal import PrincipalSigner
from bus.shutdown import wait_for_shutdown_signal
from bus.subjects import Subjects
from schemas.config import Settings
from stores import PackageStore, TaskStore
from workers.package_follower import PackageFollower
from workers.sandbox import EngineHost
from workers.service import WorkerService
from workers.sources import Loading, loaded_as_ready
from workers.task_runner import TaskRunner
from workers.telemetry import watch_calls

log = structlog.get_logger(__name__)

DRAIN_GRACE_S = 10.0
"""How long a stopping worker lets accepted calls finish before it exits."""
LOADING_STOP_TIMEOUT_S = 2.0
"""How long a stopping worker waits for the task serving components as they load to end."""


async def serve(settings: Settings, started: Loading | None = None, served: Callable[[], None] | None = None) -> None:
    """Run a worker until SIGTERM/SIGINT, then drain.

    ``started``: the configured components' loads, already under way on their engine (``cli.worker``
    starts them before the bus is imported); without it they start here. ``served`` is called once
    every configured component is served (``cli.worker`` pins the process to its core then).

    Raises:
        WorkersError: a configured component cannot be built or loaded (the worker has drained
            what it served meanwhile).
    """
    engine = started.engine if started is not None else EngineHost()
    engine.start()
    shutdown = asyncio.create_task(wait_for_shutdown_signal())
    service_up: asyncio.Future[WorkerService] = asyncio.get_running_loop().create_future()
    loading = asyncio.create_task(_serve_as_loaded(service_up, settings, engine, started, served))
    try:
        async with connected(settings.nats, name="toolbus-worker") as nc:
            subjects = Subjects(settings.nats.prefix)
            signer = PrincipalSigner.for_key(settings.nats.principal_key)
            payloads = Payloads(
                nc, subjects, max_bytes=settings.nats.max_payload_bytes, replicas=settings.nats.replicas
            )
            configured = [entry.name for entry in settings.components]
            service = WorkerService(
                nc, subjects, settings.worker, [], principal_signer=signer, loading=configured, payloads=payloads
            )
            telemetry = watch_calls(service, settings)
            await service.start()
            follower = None
            if settings.worker.follow_packages:
                store = await PackageStore.open(nc, subjects, replicas=settings.nats.replicas)
                follower = PackageFollower(nc, subjects, store, service, engine, settings)
                await follower.start()
            tasks = TaskRunner(
                nc,
                subjects,
                await TaskStore.open(
                    nc,
                    subjects,
                    settings.tasks,
                    replicas=settings.nats.replicas,
                    max_payload_bytes=settings.nats.max_payload_bytes,
                ),
                service,
                slots=settings.worker.concurrency,
            )
            await tasks.start()
            # Everything is imported and connected. `toolbus worker` paused cyclic collection while
            # it started (cli.main.main: it freed nothing and cost ~30 ms); what was built meanwhile
            # is kept for good, so it is frozen out of later collections before they resume.
            gc.freeze()
            gc.enable()
            # Set up: components loaded meanwhile are served from now on. Not sooner: the last one
            # served announces the worker ready with nothing loading, which `toolbus up` takes to
            # mean the worker is whole (its task runner too).
            service_up.set_result(service)
            failure: BaseException | None = None
            try:
                await asyncio.wait({shutdown, loading}, return_when=asyncio.FIRST_COMPLETED)
                if loading.done():
                    failure = loading.exception()
                    if failure is None:
                        await shutdown  # everything is served: run until told to stop
                if shutdown.done():
                    log.info("worker draining", signal=shutdown.result())
            finally:
                # Bounded (the loaders are daemon threads; nothing is left to wait for once the loop ends).
                await cancel_and_wait([loading], patience_s=LOADING_STOP_TIMEOUT_S)
                await tasks.stop(grace_s=DRAIN_GRACE_S)
                if follower is not None:
                    await follower.stop()
                await service.stop(grace_s=DRAIN_GRACE_S)
                await asyncio.to_thread(telemetry.stop)
            if failure is not None:
                raise failure
    finally:
        shutdown.cancel()
        await cancel_and_wait([loading], patience_s=LOADING_STOP_TIMEOUT_S)  # ended already unless connecting failed
        engine.stop()


async def _serve_as_loaded(
    service_up: asyncio.Future[WorkerService],
    settings: Settings,
    engine: EngineHost,
    started: Loading | None,
    served: Callable[[], None] | None,
) -> None:
    """Serve each configured component as soon as it is loaded and the worker is set up; log when all are."""
    async for component in loaded_as_ready(settings, engine, started):
        service = await service_up
        await service.set_source(component.name, component, component.tools)
    await service_up  # with no components configured, still log (and freeze) only once the worker is up
    # Everything the worker keeps for its life is made by now (modules, settings, compiled
    # components, routes). Freezing it takes it out of every later full collection, which
    # otherwise walks it all and stalls the event loop, and every call on it, for tens of ms
    # (measured 33-265 ms on a busy 2-core machine, every few seconds under load): a p99 tail.
    gc.freeze()
    if served is not None:
        served()
    log.info("every configured component is served", components=len(settings.components))
