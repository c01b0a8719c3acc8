"""How the bench drives each tool kind step by step: a component, and a WASI command module.

The worker runs a call as one method (``LoadedComponent.call``, ``LoadedCommand.call``); the
bench times its steps apart: the fresh Store, instantiation, the guest's own run. ``Steps`` of
each kind take those steps with the loaded tool's own Store factory, linker and argument
binding, so each step is exactly what ``call`` does and cannot drift from it. That reaches into
the two classes' private members, here and nowhere else in the bench.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Protocol

import wasmtime

from schemas.codec import decode_json, encode
from schemas.config import ComponentSettings
from workers import sources
from workers.sandbox.compile_cache import load_component, load_module
from workers.sandbox.component import LoadedComponent, _bind_arguments
from workers.sandbox.engine import EngineHost
from workers.sandbox.guest_output import GuestOutput, HeadLog, TailBuffer
from workers.sandbox.wasi_command import ENTRY_POINT, STDOUT_LIMIT_BYTES, LoadedCommand

TIMEOUT_S: Final = 30.0
"""Deadline of every measured call (none comes near it)."""

Loaded = LoadedComponent | LoadedCommand


class Steps(Protocol):
    """One tool of a loaded tool source, called step by step; sequential use only."""

    reusable: bool
    """Whether ``run`` may be repeated on a live instance (a command's ``_start`` runs once)."""

    def store(self) -> wasmtime.Store:
        """A fresh Store, as ``call`` makes it (WASI streams, deadline, memory limit)."""

    def instantiate(self, store: wasmtime.Store) -> Any:
        """An instance in ``store``, as ``call`` makes it."""

    def run(self, store: wasmtime.Store, instance: Any) -> Any:
        """The guest's own work for one call: the export called, or ``_start`` run."""

    def result(self, value: Any) -> Any:
        """The JSON value of what ``run`` returned (for the bench's check, not timed)."""


class _ComponentSteps:
    reusable = True

    def __init__(self, loaded: LoadedComponent, tool: str, arguments: Mapping[str, Any]) -> None:
        self._loaded = loaded
        bound = loaded._tools[tool]
        self._index = bound.index
        self._call = bound.call
        self._args = _bind_arguments(bound.params, arguments)

    def store(self) -> wasmtime.Store:
        return self._loaded._new_store(GuestOutput(), TIMEOUT_S)

    def instantiate(self, store: wasmtime.Store) -> Any:
        return self._loaded._linker.instantiate(store, self._loaded._component)

    def run(self, store: wasmtime.Store, instance: Any) -> Any:
        return self._call(store, instance, self._index, self._args)

    def result(self, value: Any) -> Any:
        return value  # the bench's components return plain integers, the same in JSON


class _CommandSteps:
    reusable = False

    def __init__(self, loaded: LoadedCommand, tool: str, arguments: Mapping[str, Any]) -> None:
        if tool != loaded.name:
            raise ValueError(f"command {loaded.name!r} has no tool {tool!r}")
        self._loaded = loaded
        self._stdin = encode(arguments)
        self._stdout = HeadLog(STDOUT_LIMIT_BYTES)

    def store(self) -> wasmtime.Store:
        self._stdout = HeadLog(STDOUT_LIMIT_BYTES)  # the Store made last is the one run next
        return self._loaded._new_store(TIMEOUT_S, self._stdin, self._stdout, TailBuffer())

    def instantiate(self, store: wasmtime.Store) -> Any:
        return self._loaded._pre.instantiate(store)

    def run(self, store: wasmtime.Store, instance: Any) -> Any:
        start = instance.exports(store)[ENTRY_POINT]
        try:
            start(store)
        except wasmtime.ExitTrap as exc:
            if exc.code != 0:
                raise
        return self._stdout

    def result(self, value: Any) -> Any:
        return decode_json(value.raw())


@dataclass(frozen=True)
class ToolKind:
    """What differs between the kinds: how a source is built, compiled, loaded and called."""

    name: str
    """``component`` or ``command``, as ``kind =`` in config."""
    resolve: Callable[[ComponentSettings, Path], Path]
    """The worker's own path to the ``.wasm``: as configured, or a (cached) build of ``source``."""
    compile: Callable[[EngineHost, bytes, Path], Any]
    """Compile into the cache directory, or load the compiled form from it."""
    load: Callable[..., Loaded]
    """``Loaded*.load(engine_host, settings, wasm_path, cache_dir)``: what a worker start pays per source."""
    steps: Callable[[Any, str, Mapping[str, Any]], Steps]
    """``Steps`` for one tool of a loaded source, with the arguments every measured call gets."""


COMPONENT: Final = ToolKind(
    "component", sources.COMPONENT.resolve, load_component, sources.COMPONENT.load, _ComponentSteps
)
COMMAND: Final = ToolKind("command", sources.COMMAND.resolve, load_module, sources.COMMAND.load, _CommandSteps)
