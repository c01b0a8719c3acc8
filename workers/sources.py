"""Tool source kinds: how a configured (or published) tool source becomes loaded tools.

A source's ``kind`` (``component`` or ``command`` in config) decides two things: how its Wasm
is built when it is given as ``source`` (componentize-py or clang, ``workers.toolchains``), and
how the Wasm is loaded into the sandbox (``LoadedComponent.load`` or ``LoadedCommand.load``).
Each kind is one ``ToolSourceKind``; what every kind does alike (a ``path`` is used as given,
a ``source`` is built and cached) is written once, in ``ToolSourceKind.resolve``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import queue
import threading
import time
from collections.abc import AsyncIterator, Callable
from concurrent.futures import Future
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


LOADERS_MIN: Final = 2
"""Sources built and loaded at once, at least: even on one core a WAT file need not wait behind a
componentize-py build (a build is mostly a child process; a compile releases the GIL)."""

Outcome = LoadedTool | Exception
"""What loading one source came to: the loaded tools, or why not (a ``WorkersError`` naming it)."""


def load_side_by_side(
    settings: Settings, engine: EngineHost | Future[EngineHost], deliver: Callable[[Outcome], None]
) -> Callable[[], None]:
    """Start building (if from source) and loading every configured source; return ``abandon``.

    ``engine`` may still be in the making (a ``Future``): a loader builds or finds its source's
    Wasm first, which needs no engine, and waits for the engine only to load it.

    Up to one source per core (at least ``LOADERS_MIN``) is worked on at once, those given as a
    built ``path`` before those to build from ``source`` (then in config order): the cheap ones
    are served first. ``deliver`` is called from a loader thread with each source's outcome as
    soon as it is known, once per source. ``abandon()`` starts no further source (one already
    under way still finishes and is delivered). The loader threads are daemons: a worker that
    stops while a build runs does not wait for it.
    """
    pending: queue.SimpleQueue[ComponentSettings] = queue.SimpleQueue()
    for entry in sorted(settings.components, key=lambda entry: entry.path is None):  # stable: config order
        pending.put(entry)
    abandoned = threading.Event()
    engine_made = engine if isinstance(engine, Future) else _made(engine)

    def loader() -> None:
        while not abandoned.is_set():
            try:
                entry = pending.get_nowait()
            except queue.Empty:
                return
            outcome: Outcome
            try:
                outcome = _load_configured(entry, settings, engine_made)
            except Exception as exc:  # a WorkersError naming the source, or a bug: either way the worker's to decide
                outcome = exc
            deliver(outcome)

    for _ in range(min(len(settings.components), max(LOADERS_MIN, os.cpu_count() or 1))):
        threading.Thread(target=loader, name="load", daemon=True).start()
    return abandoned.set


class Loading:
    """Every configured source loading side by side, started before there is an event loop.

    A worker starts its loads as soon as its settings are read (``cli.worker``), so that reading,
    hashing and deserializing the Wasm (which release the GIL) run beside the imports of the bus
    and the event loop, not after them (issue 17). Outcomes that arrive before ``loaded_as_ready``
    takes over are kept here until it does.
    """

    def __init__(self, settings: Settings, engine: EngineHost | Future[EngineHost]) -> None:
        self._engine = engine if isinstance(engine, Future) else _made(engine)
        self._lock = threading.Lock()
        self._kept: list[Outcome] = []
        self._forward: Callable[[Outcome], None] | None = None
        self.abandon = load_side_by_side(settings, self._engine, self._deliver)

    @property
    def engine(self) -> EngineHost:
        """The engine the sources load into (waits for it while it is being made; raises what
        making it raised)."""
        return self._engine.result()

    def _deliver(self, outcome: Outcome) -> None:
        with self._lock:
            if self._forward is None:
                self._kept.append(outcome)
                return
            self._forward(outcome)

    def forward_to(self, forward: Callable[[Outcome], None]) -> None:
        """From now on hand each outcome to ``forward`` (those kept first), from a loader thread."""
        with self._lock:
            for outcome in self._kept:
                forward(outcome)
            self._kept.clear()
            self._forward = forward


async def loaded_as_ready(
    settings: Settings, engine: EngineHost, loading: Loading | None = None
) -> AsyncIterator[LoadedTool]:
    """Every configured source, built and loaded side by side, each yielded as soon as it loads.

    ``loading``: the loads, if already started (on ``engine``); else they start here.

    Raises:
        WorkersError: a source cannot be built or loaded; the message names it (no further
            source is started).
    """
    loop = asyncio.get_running_loop()
    outcomes: asyncio.Queue[Outcome] = asyncio.Queue()

    def deliver(outcome: Outcome) -> None:
        with contextlib.suppress(RuntimeError):  # the loop is gone: the worker stopped meanwhile
            loop.call_soon_threadsafe(outcomes.put_nowait, outcome)

    if loading is None:
        loading = Loading(settings, engine)
    loading.forward_to(deliver)
    abandon = loading.abandon
    try:
        for _ in settings.components:
            outcome = await outcomes.get()
            if isinstance(outcome, Exception):
                raise outcome
            yield outcome
    finally:
        abandon()


def load_components(settings: Settings, engine: EngineHost) -> list[LoadedTool]:
    """Build (if from source) and load every configured source, side by side; return them in config order.

    Raises:
        WorkersError: a source cannot be built or loaded; the message names it.
    """
    outcomes: queue.SimpleQueue[Outcome] = queue.SimpleQueue()
    abandon = load_side_by_side(settings, engine, outcomes.put)
    loaded: dict[str, LoadedTool] = {}
    try:
        for _ in settings.components:
            outcome = outcomes.get()
            if isinstance(outcome, Exception):
                raise outcome
            loaded[outcome.name] = outcome
    finally:
        abandon()
    return [loaded[entry.name] for entry in settings.components]


def _made(engine: EngineHost) -> Future[EngineHost]:
    """``engine`` as an engine already made (what ``Loading`` takes when one is still in the making)."""
    made: Future[EngineHost] = Future()
    made.set_result(engine)
    return made


def _load_configured(entry: ComponentSettings, settings: Settings, engine: Future[EngineHost]) -> LoadedTool:
    """Build (if from source) and load one entry of ``settings.components``, logging how long it took."""
    started = time.perf_counter()
    grants = Grants.resolve(entry, settings.capabilities)
    # The Wasm first: finding a cached build needs no engine, which `toolbus worker` makes on
    # another thread meanwhile (cli.worker).
    wasm_path = KINDS[entry.kind].resolve(entry, settings.cache_dir)
    loaded = load_one(
        entry,
        engine.result(),
        settings.cache_dir,
        defaults=settings.worker.limits,
        grants=grants,
        wasm_path=wasm_path,
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
