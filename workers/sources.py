"""Tool source kinds: how a configured (or published) tool source becomes loaded tools.

A source's ``kind`` (``component`` or ``command`` in config) decides two things: how its Wasm
is built when it is given as ``source`` (componentize-py or clang, ``workers.toolchains``), and
how the Wasm is loaded into the sandbox (``LoadedComponent.load`` or ``LoadedCommand.load``).
Each kind is one ``ToolSourceKind``; what every kind does alike (a ``path`` is used as given,
a ``source`` is built and cached) is written once, in ``ToolSourceKind.resolve``.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Literal

import structlog

from schemas.config import ComponentSettings, LimitsSettings, Settings
from workers.sandbox import EngineHost, Grants, LoadedCommand, LoadedComponent
from workers.toolchains import build_c_command, build_component

log = structlog.get_logger(__name__)

LoadedTool = LoadedComponent | LoadedCommand
"""A loaded tool source of either kind: what the worker serves."""


@dataclass(frozen=True)
class ToolSourceKind:
    """One kind of tool source: where its Wasm comes from, and how it is loaded."""

    name: Literal["component", "command"]
    """As ``kind =`` in config."""
    build: Callable[[Path, ComponentSettings, Path], Path]
    """``(source, settings, cache_dir)`` → the built ``.wasm`` (a cached build when unchanged)."""
    load: Callable[..., LoadedTool]
    """``LoadedComponent.load`` or ``LoadedCommand.load`` (one signature): read, compile (or load
    from the compile cache), check and derive the tools; raises ``ComponentLoadError`` naming the source."""

    def resolve(self, settings: ComponentSettings, cache_dir: Path) -> Path:
        """Path of the source's ``.wasm``: ``settings.path`` as given, or a (cached) build of ``source``.

        Raises:
            BuildError: building ``settings.source`` failed.
        """
        if settings.path is not None:
            return settings.path
        assert settings.source is not None  # ComponentSettings guarantees exactly one of the two
        return self.build(settings.source, settings, cache_dir)


COMPONENT: Final = ToolSourceKind(
    "component",
    # `world` defaults to the component's name.
    build=lambda source, settings, cache_dir: build_component(source, settings.world or settings.name, cache_dir),
    load=LoadedComponent.load,
)
"""A Wasm component, one tool per exported function; ``source`` is a componentize-py project."""

COMMAND: Final = ToolSourceKind(
    "command",
    build=lambda source, _settings, cache_dir: build_c_command(source, cache_dir),
    load=LoadedCommand.load,
)
"""A WASI command module, one tool; ``source`` is a C project built with clang and wasi-libc."""

KINDS: Final = {kind.name: kind for kind in (COMPONENT, COMMAND)}
"""Every tool source kind by its ``kind =`` name."""


def load_components(settings: Settings, engine: EngineHost) -> list[LoadedTool]:
    """Build (if from source) and load every configured component and command module.

    The builds run at once (each is a child process: on a machine with cores to spare, a first
    start builds its components side by side), then each is loaded in config order.

    Raises:
        WorkersError: a component cannot be built or loaded; the message names it.
    """
    configured = settings.components
    with ThreadPoolExecutor(max_workers=max(1, min(len(configured), os.cpu_count() or 1))) as builders:
        built = list(builders.map(lambda entry: KINDS[entry.kind].resolve(entry, settings.cache_dir), configured))
    loaded = []
    for entry, wasm_path in zip(configured, built, strict=True):
        started = time.perf_counter()
        loaded.append(
            load_one(
                entry,
                engine,
                settings.cache_dir,
                defaults=settings.worker.limits,
                grants=Grants.resolve(entry, settings.capabilities),
                wasm_path=wasm_path,
            )
        )
        log.info(
            "component loaded",
            component=entry.name,
            kind=entry.kind,
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
    wasm_path: Path | None = None,
) -> LoadedTool:
    """Build (if from source) and load one configured tool source, by its ``kind``.

    ``defaults`` are the worker's limits (``[worker.limits]``), which the entry's own override;
    ``grants`` its resolved capabilities (default: none); ``wasm_path`` its Wasm when already
    built (default: built, or taken from the cache, here).

    Raises:
        WorkersError: it cannot be built or loaded; the message names it.
    """
    kind = KINDS[configured.kind]
    if wasm_path is None:
        wasm_path = kind.resolve(configured, cache_dir)
    return kind.load(engine, configured, wasm_path, cache_dir, defaults=defaults, grants=grants)
