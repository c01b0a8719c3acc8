"""Loading tool sources: build (if from source) and load components and command modules by kind."""

from __future__ import annotations

import time
from pathlib import Path

import structlog

from schemas.config import ComponentSettings, LimitsSettings, Settings
from workers.sandbox import EngineHost, Grants, LoadedCommand, LoadedComponent
from workers.toolchains.clang import resolve_command_path
from workers.toolchains.componentize import resolve_component_path

log = structlog.get_logger(__name__)


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
