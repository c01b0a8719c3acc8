"""The worker process: load the configured components and serve their tools until signalled."""

from __future__ import annotations

import asyncio

import structlog

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
from workers.sources import load_components
from workers.task_runner import TaskRunner
from workers.telemetry import watch_calls

log = structlog.get_logger(__name__)

DRAIN_GRACE_S = 10.0
"""How long a stopping worker lets accepted calls finish before it exits."""


async def serve(settings: Settings) -> None:
    """Run a worker until SIGTERM/SIGINT, then drain."""
    engine = EngineHost()
    engine.start()
    try:
        components = await asyncio.to_thread(load_components, settings, engine)
        async with connected(settings.nats, name="toolbus-worker") as nc:
            subjects = Subjects(settings.nats.prefix)
            signer = PrincipalSigner.for_key(settings.nats.principal_key)
            payloads = Payloads(
                nc, subjects, max_bytes=settings.nats.max_payload_bytes, replicas=settings.nats.replicas
            )
            service = WorkerService(
                nc, subjects, settings.worker, components, principal_signer=signer, payloads=payloads
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
            signal_name = await wait_for_shutdown_signal()
            log.info("worker draining", signal=signal_name)
            await tasks.stop(grace_s=DRAIN_GRACE_S)
            if follower is not None:
                await follower.stop()
            await service.stop(grace_s=DRAIN_GRACE_S)
            await asyncio.to_thread(telemetry.stop)
    finally:
        engine.stop()
