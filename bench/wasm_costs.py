"""Wasm costs of one call's building blocks, per tool kind, all measured in one run.

Four tools, two of each kind: components (``examples/calc`` built with componentize-py, the
hand-written ``examples/wat/testkit.wat``) and WASI command modules (``examples/wordcount`` in
C, built with clang-19 and wasi-libc, and the hand-written ``examples/wat/echo.wat``). calc and
wordcount are the entries of ``examples/command.toml``, built by the worker's own build paths
(cached by content hash; a first run builds calc in about 6 s). Measured with toolbus's own
APIs (see ``bench.wasm_kinds``), in a process of its own (``python -m bench.wasm_costs``), so
that the bench's orchestrator never hosts a wasmtime Engine or its epoch ticker thread:

- **cold compile**: ``load_component`` / ``load_module`` into an empty cache directory
  (compile, serialize, write the ``.cwasm``), as a worker's first start does;
- **cached load**: the same call against the warm cache (deserialize the ``.cwasm``);
- **tool load**: ``LoadedComponent.load`` / ``LoadedCommand.load`` from the warm cache (tools
  derived, imports linked, one trial instantiation), what a worker restart pays per source;
- **fresh instance**: what every call pays before the guest runs: a new Store with WASI, an
  epoch deadline and a memory limit (``store``), then instantiation (``instantiate``);
- **guest call**: the guest's own work on that fresh instance (a component's export plus
  ``post_return``; a command's ``_start``, reading stdin and writing stdout), and for a
  component again on a live instance (a command runs once per instance);
- **call**: the whole per-call path a worker thread runs (``LoadedComponent.call`` /
  ``LoadedCommand.call``: arguments in, fresh Store, instantiate, run, result out);
- **reused call** (components only): the same whole call with ``reuse_instances = true`` (the opt-in
  for tools declared pure: a warm instance, no Store or instantiation). Reported apart from
  **call**, never in its place.

The C toolchain is installed with apt-get when it is missing (``harness.apt``); when that fails,
the C row is skipped and the result says why.
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from bench.stats import summary
from harness import apt
from harness.errors import AptError
from harness.processes import REPO

if TYPE_CHECKING:  # the orchestrator imports this module; only the measuring child imports wasmtime
    from bench.wasm_kinds import Steps, ToolKind
    from schemas.config import ComponentSettings

EXAMPLES: Final = REPO / "examples"
COMMAND_TOML: Final = EXAMPLES / "command.toml"
"""The example config with one tool of each kind built from source: calc and wordcount."""
TESTKIT_WAT: Final = EXAMPLES / "wat" / "testkit.wat"
ECHO_WAT: Final = EXAMPLES / "wat" / "echo.wat"
TEXT: Final = "hello wide world"
"""The argument of both commands: wordcount counts it, echo returns it."""
CACHED_LOADS: Final = 20
TOOL_LOADS: Final = 5
WARM_CALLS: Final = 2000
LIGHT_FACTOR: Final = 10
"""Small guests instantiate in microseconds: they get ten times the samples (and ≥ 3 cold compiles)."""


@dataclass(frozen=True)
class Subject:
    """One tool the bench measures, with the arguments of every call and the result they must give."""

    language: str
    """How it was written: ``componentize-py``, ``WAT`` or ``C``."""
    kind: ToolKind
    settings: ComponentSettings
    tool: str
    arguments: Mapping[str, Any]
    expected: Any
    heavy: bool = False
    """componentize-py: a cold compile takes seconds, so it gets the plan's counts as they are."""
    toolchain: tuple[str, tuple[str, ...]] | None = None
    """(binary, Debian packages) its build needs; without them the row is skipped, not failed."""

    @property
    def name(self) -> str:
        return self.settings.name


@dataclass(frozen=True)
class Counts:
    cold_compiles: int
    instantiations: int


def subjects() -> list[Subject]:
    """The four tools, components first."""
    from bench.wasm_kinds import COMMAND, COMPONENT
    from schemas.config import ComponentSettings, load_settings
    from workers.toolchains.clang import CLANG, DEBIAN_PACKAGES

    example = {c.name: c for c in load_settings(COMMAND_TOML).components}
    echo = ComponentSettings(name="echo", kind="command", path=ECHO_WAT, input_schema={"type": "object"})
    return [
        Subject("componentize-py", COMPONENT, example["calc"], "calc_add", {"a": 2, "b": 3}, 5, heavy=True),
        Subject("WAT", COMPONENT, ComponentSettings(name="kit", path=TESTKIT_WAT), "kit_add", {"a": 2, "b": 3}, 5),
        Subject(
            "C",
            COMMAND,
            example["wordcount"],
            "wordcount",
            {"text": TEXT},
            {"lines": 1, "words": 3, "characters": len(TEXT)},
            toolchain=(CLANG, DEBIAN_PACKAGES),
        ),
        Subject("WAT", COMMAND, echo, "echo", {"text": TEXT}, {"text": TEXT}),
    ]


def _timed(fn: Callable[[], Any]) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def _samples(count: int, fn: Callable[[], Any]) -> list[float]:
    return [_timed(fn) for _ in range(count)]


def _check(subject: Subject, value: Any, what: str) -> None:
    if value != subject.expected:
        raise RuntimeError(f"{subject.tool}{subject.arguments}: {what} gave {value!r}, not {subject.expected!r}")


def _build(subject: Subject, cache_dir: Path) -> tuple[Path, dict[str, Any] | None]:
    """The ``.wasm`` through the worker's own resolve (a cached build if there is one), and how it came."""
    if subject.settings.source is None:
        return subject.kind.resolve(subject.settings, cache_dir), None
    built = cache_dir / "built"
    before = set(built.glob("*.wasm")) if built.is_dir() else set()
    started = time.perf_counter()
    path = subject.kind.resolve(subject.settings, cache_dir)
    return path, {"cached": path in before, "seconds": round(time.perf_counter() - started, 3)}


def _fresh_instances(subject: Subject, steps: Steps, count: int) -> tuple[list[float], list[float], list[float]]:
    """``count`` calls each on a fresh Store: seconds of Store creation, instantiation, guest run."""
    store_s, instantiate_s, run_s = [], [], []
    gc.collect()
    for _ in range(count):
        t0 = time.perf_counter()
        store = steps.store()
        t1 = time.perf_counter()
        instance = steps.instantiate(store)
        t2 = time.perf_counter()
        value = steps.run(store, instance)
        t3 = time.perf_counter()
        store.close()
        _check(subject, steps.result(value), "the guest")
        store_s.append(t1 - t0)
        instantiate_s.append(t2 - t1)
        run_s.append(t3 - t2)
    return store_s, instantiate_s, run_s


def _live_instance(subject: Subject, steps: Steps, count: int) -> list[float]:
    """``count`` guest runs on one live instance (only for kinds whose instances may be reused)."""
    store = steps.store()
    try:
        instance = steps.instantiate(store)
        _check(subject, steps.result(steps.run(store, instance)), "the guest")
        return _samples(count, lambda: steps.run(store, instance))
    finally:
        store.close()


def _costs(subject: Subject, wasm_path: Path, cache_dir: Path, counts: Counts) -> dict[str, Any]:
    from bench.wasm_kinds import TIMEOUT_S
    from workers.sandbox.compile_cache import read_wasm
    from workers.sandbox.engine import EngineHost

    kind = subject.kind
    engine_host = EngineHost()
    engine_host.start()
    try:
        wasm = read_wasm(wasm_path)
        cold = []
        for _ in range(counts.cold_compiles):
            with tempfile.TemporaryDirectory(prefix="bench-cold-") as empty:
                cold.append(_timed(lambda: kind.compile(engine_host, wasm, Path(empty))))
        kind.compile(engine_host, wasm, cache_dir)  # make sure the real cache holds it
        cached = _samples(CACHED_LOADS, lambda: kind.compile(engine_host, wasm, cache_dir))
        loads = _samples(TOOL_LOADS, lambda: kind.load(engine_host, subject.settings, wasm_path, cache_dir))

        loaded = kind.load(engine_host, subject.settings, wasm_path, cache_dir)
        first = loaded.call(subject.tool, subject.arguments, TIMEOUT_S)
        _check(subject, None if first.is_error else first.structured_content, f"call ({first.content})")
        steps = kind.steps(loaded, subject.tool, subject.arguments)
        store_s, instantiate_s, first_call_s = _fresh_instances(subject, steps, counts.instantiations)
        warm_s = _live_instance(subject, steps, WARM_CALLS) if steps.reusable else []
        call_s = _samples(counts.instantiations, lambda: loaded.call(subject.tool, subject.arguments, TIMEOUT_S))
        reused_s = _reused_calls(subject, engine_host, wasm_path, cache_dir) if steps.reusable else []
    finally:
        engine_host.stop()
    ms = 1000.0
    costs = {
        "tool": subject.name,
        "kind": kind.name,
        "language": subject.language,
        "path": str(wasm_path),
        "wasm_bytes": len(wasm),
        "cold_compile_ms": summary(cold, ms),
        "cached_load_ms": summary(cached, ms),
        "load_ms": summary(loads, ms),
        "store_ms": summary(store_s, ms),
        "instantiate_ms": summary(instantiate_s, ms),
        "fresh_instance_ms": summary([a + b for a, b in zip(store_s, instantiate_s, strict=True)], ms),
        "first_call_ms": summary(first_call_s, ms),
        "call_ms": summary(call_s, ms),
    }
    if warm_s:
        costs["warm_call_ms"] = summary(warm_s, ms)
    if reused_s:
        costs["reused_call_ms"] = summary(reused_s, ms)
    return costs


def _reused_calls(subject: Subject, engine_host: Any, wasm_path: Path, cache_dir: Path) -> list[float]:
    """``WARM_CALLS`` whole calls of a component loaded with ``reuse_instances = true``."""
    from bench.wasm_kinds import TIMEOUT_S

    settings = subject.settings.model_copy(update={"reuse_instances": True})
    loaded = subject.kind.load(engine_host, settings, wasm_path, cache_dir)
    try:
        result = loaded.call(subject.tool, subject.arguments, TIMEOUT_S)  # the instance that is reused
        _check(subject, None if result.is_error else result.structured_content, f"reused call ({result.content})")
        return _samples(WARM_CALLS, lambda: loaded.call(subject.tool, subject.arguments, TIMEOUT_S))
    finally:
        loaded.close()


def measure_in_process(
    cold_compiles: int, instantiations: int, cache_dir: Path | None = None, only: frozenset[str] | None = None
) -> dict[str, Any]:
    """Build (or find) each tool, then measure them one after the other.

    ``only`` names the tools to measure (all four by default); ``cache_dir`` defaults to the
    worker's (``TOOLBUS_CACHE_DIR`` or ``~/.cache/toolbus``), where earlier builds are.
    """
    from schemas.environment import default_cache_dir
    from workers.toolchains.errors import BuildError

    cache_dir = cache_dir or default_cache_dir()
    tools: list[dict[str, Any]] = []
    skipped: list[dict[str, Any]] = []
    for subject in subjects():
        if only is not None and subject.name not in only:
            continue
        try:
            if subject.toolchain is not None:
                apt.ensure_binary(*subject.toolchain)
            wasm_path, build = _build(subject, cache_dir)
        except (AptError, BuildError) as exc:
            if subject.toolchain is None:
                raise
            reason = str(exc)
            skipped.append(
                {"tool": subject.name, "kind": subject.kind.name, "language": subject.language, "reason": reason}
            )
            continue
        if subject.heavy:
            counts = Counts(cold_compiles, instantiations)
        else:
            counts = Counts(max(3, cold_compiles), instantiations * LIGHT_FACTOR)
        costs = _costs(subject, wasm_path, cache_dir, counts)
        if build is not None:
            costs["build"] = build
        tools.append(costs)
    return {"cache_dir": str(cache_dir), "tools": tools, "skipped": skipped}


def run(cold_compiles: int, instantiations: int) -> dict[str, Any]:
    """Measure in a child process; return its JSON.

    Raises:
        RuntimeError: the child failed (its stderr is in the message).
    """
    argv = [sys.executable, "-m", "bench.wasm_costs", str(cold_compiles), str(instantiations)]
    done = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=1800, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"wasm costs failed ({done.returncode}):\n{done.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def main() -> None:
    from cli.logs import configure_logging

    parser = argparse.ArgumentParser(description="Wasm cost measurements; prints one JSON line")
    parser.add_argument("cold_compiles", type=int)
    parser.add_argument("instantiations", type=int)
    args = parser.parse_args()
    configure_logging("json", level=logging.WARNING)  # structlog would otherwise print on stdout
    print(json.dumps(measure_in_process(args.cold_compiles, args.instantiations)), flush=True)


if __name__ == "__main__":
    main()
