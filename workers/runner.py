"""The worker process: load the configured components and serve their tools until signalled."""

from __future__ import annotations

import asyncio
import time

import structlog

from bus.connection import connected
from bus.lifecycle import wait_for_shutdown_signal
from bus.subjects import Subjects
from schemas.config import Settings
from workers.build import resolve_component_path
from workers.component import LoadedComponent, load
from workers.engine import EngineHost
from workers.service import WorkerService

log = structlog.get_logger(__name__)

DRAIN_GRACE_S = 10.0
"""How long a stopping worker lets accepted calls finish before it exits."""


def load_components(settings: Settings, engine: EngineHost) -> list[LoadedComponent]:
    """Build (if from source) and load every configured component.

    Raises:
        WorkersError: a component cannot be built or loaded; the message names it.
    """
    loaded = []
    for component in settings.components:
        started = time.perf_counter()
        wasm_path = resolve_component_path(component, settings.cache_dir)
        loaded.append(load(engine, component, wasm_path, settings.cache_dir))
        log.info("component loaded", component=component.name, ms=round((time.perf_counter() - started) * 1000, 1))
    return loaded


async def serve(settings: Settings) -> None:
    """Run a worker until SIGTERM/SIGINT, then drain."""
    engine = EngineHost()
    engine.start()
    try:
        components = await asyncio.to_thread(load_components, settings, engine)
        async with connected(
            settings.nats.url, name="toolbus-worker", connect_timeout_s=settings.nats.connect_timeout_s
        ) as nc:
            service = WorkerService(nc, Subjects(settings.nats.prefix), settings.worker, components)
            await service.start()
            signal_name = await wait_for_shutdown_signal()
            log.info("worker draining", signal=signal_name)
            await service.stop(grace_s=DRAIN_GRACE_S)
    finally:
        engine.stop()
