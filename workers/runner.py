"""The worker process: load the configured components and serve their tools until signalled."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import structlog

from bus.connection import connected
from bus.lifecycle import wait_for_shutdown_signal
from bus.subjects import Subjects
from schemas.config import ComponentSettings, LimitsSettings, Settings
from workers.build import resolve_component_path
from workers.c_build import resolve_command_path
from workers.capabilities import Grants
from workers.command import LoadedCommand
from workers.component import LoadedComponent
from workers.engine import EngineHost
from workers.service import WorkerService

log = structlog.get_logger(__name__)

DRAIN_GRACE_S = 10.0
"""How long a stopping worker lets accepted calls finish before it exits."""


def load_components(settings: Settings, engine: EngineHost) -> list[LoadedComponent | LoadedCommand]:
    """Build (if from source) and load every configured component and command module.

    Raises:
        WorkersError: a component cannot be built or loaded; the message names it.
    """
    loaded = []
    for configured in settings.components:
        started = time.perf_counter()
        loaded.append(
            load_one(
                configured,
                engine,
                settings.cache_dir,
                defaults=settings.worker.limits,
                grants=Grants.resolve(configured, settings.capabilities),
            )
        )
        log.info(
            "component loaded",
            component=configured.name,
            kind=configured.kind,
            ms=round((time.perf_counter() - started) * 1000, 1),
        )
    return loaded


def load_one(
    configured: ComponentSettings,
    engine: EngineHost,
    cache_dir: Path,
    *,
    defaults: LimitsSettings | None = None,
    grants: Grants | None = None,
) -> LoadedComponent | LoadedCommand:
    """Build (if from source) and load one configured tool source, by its ``kind``.

    ``defaults`` are the worker's limits (``[worker.limits]``), which the entry's own override;
    ``grants`` its resolved capabilities (default: none).

    Raises:
        WorkersError: it cannot be built or loaded; the message names it.
    """
    if configured.kind == "command":
        wasm_path = resolve_command_path(configured, cache_dir)
        return LoadedCommand.load(engine, configured, wasm_path, cache_dir, defaults=defaults, grants=grants)
    wasm_path = resolve_component_path(configured, cache_dir)
    return LoadedComponent.load(engine, configured, wasm_path, cache_dir, defaults=defaults, grants=grants)


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
