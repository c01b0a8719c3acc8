"""A loaded Wasm component and its tools: one tool per exported function, each call sandboxed.

Every call runs in a fresh Store: a trapped instance is dead, and a fresh Store also means no
state leaks between callers. Each Store gets WASI (granting nothing) and an epoch deadline
before anything runs, so a guest can neither abort the process nor run forever.
"""

from __future__ import annotations

import atexit
import re
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog
import wasmtime
from wasmtime import component as wc
from wasmtime.component import _types as wc_types

from bus.subjects import is_valid_tool_name
from schemas.codec import encode
from schemas.config import ComponentSettings
from schemas.errors import ArgumentError, WitTypeError
from schemas.wire import CallToolResult, TextContent, ToolDescriptor
from schemas.wit_schema import output_schema, params_schema
from schemas.wit_values import from_wasm, to_wasm, which_case
from workers.compile_cache import load_component, read_wasm, wasm_digest
from workers.docs import FunctionDocs, function_docs, read_docs
from workers.engine import DEFAULT_FUEL, EngineHost
from workers.errors import ComponentLoadError, UnknownTool

log = structlog.get_logger(__name__)

STDERR_LIMIT_BYTES = 4096
"""Tail of a guest's stderr kept per call, appended to trap messages (Python guests print
their traceback there)."""

LOAD_CHECK_TIMEOUT_S = 10.0
"""Time allowed for the trial instantiation at load (componentize-py guests need ~1 ms)."""

EXIT_DRAIN_TIMEOUT_S = 1.0
"""Longest wait at interpreter exit for wasmtime to release guest output callbacks."""

HIDDEN_EXPORTS = frozenset({"exports"})
"""Top-level exports that are never tools (componentize-py adds an internal ``exports``)."""

_MISSING_IMPORT = re.compile(r"imports \w+ `([^`]+)`")


class _PerThreadSet:
    """Per-thread stand-in for wasmtime-py's module-global scratch set.

    wasmtime-py lowers an untagged variant (e.g. ``option<string>``) by clearing, filling and
    reading one global set, and the GIL can switch threads in between; with several calls in
    flight that picks the wrong case. Only ``clear``, ``add`` and iteration are used on it.
    """

    def __init__(self) -> None:
        self._local = threading.local()

    def _set(self) -> set[type[Any]]:
        scratch: set[type[Any]] | None = getattr(self._local, "scratch", None)
        if scratch is None:
            scratch = self._local.scratch = set()
        return scratch

    def clear(self) -> None:
        self._set().clear()

    def add(self, cls: type[Any]) -> None:
        self._set().add(cls)

    def __iter__(self) -> Any:
        return iter(self._set())


wc_types.case_test_cache = _PerThreadSet()  # type: ignore[assignment]


class _TailBuffer:
    """Keeps the last ``limit`` bytes written (a guest's stderr).

    wasmtime calls ``write`` and releases it from its own I/O thread, possibly after the call
    returned. If that happens while the interpreter is exiting, the thread dies inside Rust and
    the process aborts; so live buffers are counted and exit waits for them
    (``_drain_output_callbacks``).
    """

    live = 0
    _live_lock = threading.RLock()  # re-entrant: __del__ may run from a GC inside __init__

    def __init__(self, limit: int = STDERR_LIMIT_BYTES) -> None:
        self._limit = limit
        self._data = bytearray()
        with _TailBuffer._live_lock:
            _TailBuffer.live += 1

    def __del__(self) -> None:
        with _TailBuffer._live_lock:
            _TailBuffer.live -= 1

    def write(self, data: bytes) -> None:
        self._data += data
        if len(self._data) > self._limit:
            del self._data[: len(self._data) - self._limit]

    def text(self) -> str:
        return self._data.decode("utf-8", errors="replace").strip()


def _drain_output_callbacks(timeout_s: float = EXIT_DRAIN_TIMEOUT_S) -> None:
    """Wait (bounded) until wasmtime has released every stderr callback, then a little more."""
    deadline = time.monotonic() + timeout_s
    while _TailBuffer.live > 0 and time.monotonic() < deadline:
        time.sleep(0.005)
    # The I/O thread may still be returning through the callback trampoline.
    time.sleep(0.02)


atexit.register(_drain_output_callbacks)


@dataclass(frozen=True)
class _Tool:
    descriptor: ToolDescriptor
    index: Any  # wasmtime ExportIndex, valid for every instance of the component
    params: list[tuple[str, Any]]
    result: Any  # wasmtime value type, or None
    returns_result: bool


def _snake(name: str) -> str:
    return name.replace("-", "_")


def short_interface_name(name: str) -> str:
    """``docs:calc/math@1.0.0`` → ``math`` (the part after the last ``/``, before any ``@``)."""
    return name.rsplit("/", 1)[-1].split("@", 1)[0]


class LoadedComponent:
    """A compiled component ready to serve its tools; ``call`` is thread-safe."""

    def __init__(
        self,
        engine_host: EngineHost,
        name: str,
        component: Any,
        linker: Any,
        tools: Mapping[str, _Tool],
        digest: str,
    ) -> None:
        self.engine_host = engine_host
        self.name = name
        self.digest = digest
        self._component = component
        self._linker = linker
        self._tools = dict(tools)

    @classmethod
    def load(
        cls, engine_host: EngineHost, settings: ComponentSettings, wasm_path: Path, cache_dir: Path
    ) -> LoadedComponent:
        """Read, compile (or load from cache) and check a component, deriving its tools.

        Raises:
            ComponentLoadError: the file cannot be read or compiled, the component needs an
                import the sandbox does not grant (the message names it), or it exports no
                function usable as a tool.
        """
        wasm = read_wasm(wasm_path)
        try:
            component = load_component(engine_host, wasm, cache_dir)
        except ComponentLoadError as exc:
            raise ComponentLoadError(f"component {settings.name!r} ({wasm_path}): {exc}") from exc
        digest = wasm_digest(wasm)
        linker = wc.Linker(engine_host.engine)
        linker.add_wasip2()
        tools = _derive_tools(engine_host, settings, component, digest, _docs_of(settings, wasm_path, wasm))
        loaded = cls(engine_host, settings.name, component, linker, tools, digest)
        loaded._check_instantiates(wasm_path)
        return loaded

    @property
    def tools(self) -> list[ToolDescriptor]:
        """The tools this component serves."""
        return [tool.descriptor for tool in self._tools.values()]

    def call(self, tool_name: str, arguments: Mapping[str, Any], timeout_s: float) -> CallToolResult:
        """Run one tool call in a fresh sandbox; guest failures come back as ``is_error`` results.

        Raises:
            UnknownTool: this component has no tool named ``tool_name``.
        """
        tool = self._tools.get(tool_name)
        if tool is None:
            raise UnknownTool(f"component {self.name!r} has no tool {tool_name!r}")
        try:
            args = _bind_arguments(tool.params, arguments)
        except ArgumentError as exc:
            return _error(f"invalid arguments: {exc}")
        self.engine_host.start()  # without the ticker a deadline never arrives
        stderr = _TailBuffer()
        store = self._new_store(timeout_s, stderr)
        try:
            instance = self._linker.instantiate(store, self._component)
            func = instance.get_func(store, tool.index)
            value = func(store, *args)
            func.post_return(store)
        except wasmtime.ExitTrap as exc:
            return _error(_with_stderr(f"guest exited with code {exc.code}", stderr))
        except wasmtime.WasmtimeError as exc:
            return _error(_with_stderr(_describe_trap(exc, timeout_s), stderr))
        except (TypeError, ValueError) as exc:
            # wasmtime-py could not lower a value we produced: a corner of its untagged variants.
            return _error(f"invalid arguments: {exc}")
        finally:
            # Free the Store now, not whenever the GC breaks a traceback cycle: a Store freed
            # during interpreter exit calls our stderr callback from a wasmtime thread after
            # Python is gone, and the process panics on the way out.
            store.close()
        return _to_result(tool, value)

    def _new_store(self, timeout_s: float, stderr: _TailBuffer) -> Any:
        store = wasmtime.Store(self.engine_host.engine)
        wasi = wasmtime.WasiConfig()  # grants nothing: no env, args, preopens, stdin or network
        wasi.stderr_custom = stderr.write
        # Without WASI the first WASI call aborts the whole process, so every Store gets it here.
        store.set_wasi(wasi)
        # The deadline must exist before instantiate: guests run code while instantiating.
        store.set_epoch_deadline(self.engine_host.deadline_ticks(timeout_s))
        if self.engine_host.consume_fuel:
            store.set_fuel(DEFAULT_FUEL)
        return store

    def _check_instantiates(self, wasm_path: Path) -> None:
        self.engine_host.start()
        store = self._new_store(LOAD_CHECK_TIMEOUT_S, _TailBuffer())
        try:
            self._linker.instantiate(store, self._component)
        except wasmtime.WasmtimeError as exc:
            text = str(exc)
            missing = _MISSING_IMPORT.search(text)
            if missing:
                raise ComponentLoadError(
                    f"component {self.name!r} ({wasm_path}) imports `{missing.group(1)}`, "
                    "which the sandbox does not grant (only WASI 0.2 is provided)"
                ) from exc
            raise ComponentLoadError(
                f"component {self.name!r} ({wasm_path}) cannot be instantiated: {_cause(text)}"
            ) from exc
        finally:
            store.close()


def load(engine_host: EngineHost, settings: ComponentSettings, wasm_path: Path, cache_dir: Path) -> LoadedComponent:
    """Load a component and derive its tools (see ``LoadedComponent.load``).

    Raises:
        ComponentLoadError: the component cannot be loaded; the message names it.
    """
    return LoadedComponent.load(engine_host, settings, wasm_path, cache_dir)


def _docs_of(settings: ComponentSettings, wasm_path: Path, wasm: bytes) -> dict[str, Any]:
    """The component's WIT doc comments (``{}`` without them: WAT, or a component built elsewhere)."""
    try:
        return read_docs(wasm)
    except ValueError as exc:
        # wasmtime accepted the binary, so only the docs section itself can be damaged: the
        # tools still work, they just lose their descriptions.
        log.warning("docs section unreadable; ignored", component=settings.name, path=str(wasm_path), error=str(exc))
        return {}


def _derive_tools(
    engine_host: EngineHost, settings: ComponentSettings, component: Any, digest: str, docs: dict[str, Any]
) -> dict[str, _Tool]:
    engine = engine_host.engine
    found: list[tuple[str, str, Any, Any, FunctionDocs]] = []  # (tool name, export path, func type, index, docs)
    for export_name, extern in component.type.exports(engine).items():
        item = extern.ty
        if export_name in HIDDEN_EXPORTS:
            continue
        if isinstance(item, wc.FuncType):
            tool_name = f"{settings.name}_{_snake(export_name)}"
            index = component.get_export_index(export_name)
            found.append((tool_name, export_name, item, index, function_docs(docs, export_name)))
        elif isinstance(item, wc.ComponentInstanceType):
            iface = short_interface_name(export_name)
            parent = component.get_export_index(export_name)
            for func_name, inner in item.exports(engine).items():
                func_type = inner.ty
                if not isinstance(func_type, wc.FuncType):
                    continue
                tool_name = f"{settings.name}_{_snake(iface)}_{_snake(func_name)}"
                index = component.get_export_index(func_name, parent)
                func_docs = function_docs(docs, func_name, interface=export_name)
                found.append((tool_name, f"{iface}/{func_name}", func_type, index, func_docs))

    tools: dict[str, _Tool] = {}
    for tool_name, export, func_type, index, func_docs in found:
        if not is_valid_tool_name(tool_name):
            log.warning("export skipped: not a valid tool name", component=settings.name, export=export)
            continue
        if tool_name in tools:
            raise ComponentLoadError(
                f"component {settings.name!r}: exports {tools[tool_name].descriptor.export!r} and "
                f"{export!r} both map to tool {tool_name!r}"
            )
        try:
            inputs = func_docs.annotate_params(params_schema(func_type))
            outputs, returns_result = output_schema(func_type)
            outputs = func_docs.annotate_result(outputs, returns_result)
        except WitTypeError as exc:
            log.warning("export skipped: no JSON form", component=settings.name, export=export, error=str(exc))
            continue
        override = settings.tools.get(export) or settings.tools.get(tool_name)
        description = (
            (override.description if override else None)
            or func_docs.description
            or settings.description
            or f"Calls {export} of component {settings.name}"
        )
        descriptor = ToolDescriptor(
            name=tool_name,
            description=description,
            input_schema=inputs,
            output_schema=outputs,
            component=settings.name,
            export=export,
            digest=digest,
        )
        tools[tool_name] = _Tool(descriptor, index, func_type.params, func_type.result, returns_result)
    if not tools:
        raise ComponentLoadError(f"component {settings.name!r} exports no function usable as a tool")
    return tools


def _bind_arguments(params: Sequence[tuple[str, Any]], arguments: Mapping[str, Any]) -> list[Any]:
    known = {name for name, _ in params}
    for key in arguments:
        if key not in known:
            raise ArgumentError(f"{key}: unexpected argument", (key,))
    values: list[Any] = []
    for name, ty in params:
        if name in arguments:
            values.append(to_wasm(ty, arguments[name], (name,)))
        elif isinstance(ty, wc.OptionType):
            values.append(to_wasm(ty, None, (name,)))
        else:
            raise ArgumentError(f"{name}: required argument is missing", (name,))
    return values


def _text_of(json_value: Any) -> str:
    return json_value if isinstance(json_value, str) else encode(json_value).decode("utf-8")


def _to_result(tool: _Tool, value: Any) -> CallToolResult:
    result_ty = tool.result
    if result_ty is None:
        return CallToolResult(content=[])
    if tool.returns_result:
        tag, payload = which_case(result_ty, value)
        if tag == "err":
            if result_ty.err is None:
                return _error(f"{tool.descriptor.export} returned an error")
            return _error(_text_of(from_wasm(result_ty.err, payload)))
        result_ty, value = result_ty.ok, payload
        if result_ty is None:
            return CallToolResult(content=[])
    structured = from_wasm(result_ty, value)
    return CallToolResult(content=[TextContent(_text_of(structured))], structured_content=structured)


def _error(message: str) -> CallToolResult:
    return CallToolResult(content=[TextContent(message)], is_error=True)


def _cause(text: str) -> str:
    """The root cause of a wasmtime error: the last line after ``Caused by:``."""
    _, _, causes = text.rpartition("Caused by:")
    lines = [line.strip() for line in (causes or text).strip().splitlines() if line.strip()]
    cause = lines[-1] if lines else text.strip()
    return re.sub(r"^\d+:\s*", "", cause)


def _describe_trap(exc: wasmtime.WasmtimeError, timeout_s: float) -> str:
    cause = _cause(str(exc))
    if cause.endswith("wasm trap: interrupt"):
        return f"timed out after {timeout_s:g}s"
    if "all fuel consumed" in cause:
        return "ran out of fuel"
    return f"guest trapped: {cause.removeprefix('wasm trap: ')}"


def _with_stderr(message: str, stderr: _TailBuffer) -> str:
    tail = stderr.text()
    return f"{message}\nstderr:\n{tail}" if tail else message
