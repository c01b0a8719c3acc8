"""A WASI command module (core wasm32-wasi) served as one tool: JSON in on stdin, JSON out on stdout.

The second tool kind, for code that is not a component: anything that compiles to a WASI
preview 1 command (C with wasi-libc, Rust's ``wasm32-wasip1``, hand-written WAT). The tool is
named after the configured component and its input schema and description come from config.
Each call runs ``_start`` in a fresh Store whose WASI context grants nothing but the three
standard streams: stdin holds the arguments, stdout and stderr go to bounded buffers. Exit 0
with JSON on stdout is the result; a non-zero exit, a trap, a timeout or output that is not
JSON is an ``isError`` result.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import structlog
import wasmtime

from bus.subjects import is_valid_tool_name
from schemas.codec import DecodeError, decode_json, encode
from schemas.config import ComponentSettings, LimitsSettings
from schemas.validation import compile_validator
from schemas.wire import CallToolResult, TextContent, ToolDescriptor
from workers.sandbox.artifact import Artifact
from workers.sandbox.call_context import CallContext
from workers.sandbox.capabilities import Grants
from workers.sandbox.compile_cache import load_module
from workers.sandbox.engine import EngineHost
from workers.sandbox.errors import ComponentLoadError, UnknownTool
from workers.sandbox.failures import describe_trap, error_result, root_cause, with_stderr
from workers.sandbox.guest_output import HeadLog, TailBuffer
from workers.sandbox.interrupts import CancelSignal, InterruptibleStore
from workers.sandbox.limits import LOAD_CHECK_TIMEOUT_S, effective_timeout_s, sandbox_store
from workers.sandbox.wasmtime_adapter import set_stdin_bytes

log = structlog.get_logger(__name__)

STDOUT_LIMIT_BYTES = 1 << 20
"""Most stdout kept per call: the bus's default max payload, so a larger result could not be
delivered anyway. A guest writing more gets an ``isError`` result, not a worker out of memory."""

ENTRY_POINT = "_start"
"""The export a WASI command runs (wasi-libc's crt1-command calls ``main`` from it)."""

WASI_PREVIEW1 = "wasi_snapshot_preview1"
"""The only import module the sandbox provides to a core module."""

_CORE_MODULE_VERSION = b"\x01\x00\x00\x00"
"""Bytes 4-8 of a core module's header; components carry another version/layer there."""


class LoadedCommand:
    """A compiled WASI command module ready to serve its one tool; ``call`` is thread-safe."""

    def __init__(
        self,
        engine_host: EngineHost,
        descriptor: ToolDescriptor,
        pre: wasmtime.InstancePre,
        output_schema: dict[str, Any] | None,
        limits: LimitsSettings,
        grants: Grants | None = None,
    ) -> None:
        self.engine_host = engine_host
        self.name = descriptor.name
        self.digest = descriptor.digest
        self.limits = limits
        """The effective limits of the tool (``[worker.limits]`` merged with the entry's own)."""
        self.grants = grants or Grants()
        """Its capabilities' environment variables and directories (config refuses HTTP for commands)."""
        self._descriptor = descriptor
        # Imports are resolved once here; each call only creates the instance.
        self._pre = pre
        # jsonschema alone costs more than the guest's whole run (~0.3 ms for a small object);
        # the compiled validator proves common flat results valid in microseconds first.
        self._output_check = compile_validator(output_schema) if output_schema is not None else None

    @classmethod
    def load(
        cls,
        engine_host: EngineHost,
        settings: ComponentSettings,
        wasm_path: Path,
        cache_dir: Path,
        *,
        defaults: LimitsSettings | None = None,
        grants: Grants | None = None,
    ) -> LoadedCommand:
        """Read, compile (or load from cache) and check a command module.

        ``defaults`` are the worker's limits; the entry's own ``limits`` override them field by
        field, as for components. With fuel the module runs on the engine variant that meters it.
        ``grants`` are its resolved capabilities (default: none).

        Raises:
            ComponentLoadError: the file cannot be read or compiled, is a component rather than
                a core module, has no ``_start``, or imports something other than WASI
                preview 1 (the message names the import).
        """
        label = f"command {settings.name!r} ({wasm_path})"
        if settings.input_schema is None:  # ComponentSettings requires it for commands
            raise ComponentLoadError(f"{label}: input_schema is required for a command")
        if not is_valid_tool_name(settings.name):
            raise ComponentLoadError(f"{label}: {settings.name!r} is not a valid tool name")
        artifact = Artifact.read(engine_host, settings, wasm_path, cache_dir, defaults)
        engine_host, limits = artifact.engine_host, artifact.limits
        with artifact.opened() as wasm:
            preamble = wasm[:8] if isinstance(wasm, bytes) else wasm.read(8)
        if preamble[:4] == b"\0asm" and preamble[4:8] != _CORE_MODULE_VERSION:
            raise ComponentLoadError(f"{label} is a component, not a core module; use kind = 'component'")
        module = artifact.compile(load_module, label)
        _check_interface(module, label)
        linker = wasmtime.Linker(engine_host.engine)
        linker.define_wasi()
        try:
            pre = linker.instantiate_pre(module)
        except wasmtime.WasmtimeError as exc:
            raise ComponentLoadError(f"{label} cannot be linked: {root_cause(str(exc))}") from exc
        descriptor = ToolDescriptor(
            name=settings.name,
            description=settings.description or f"Runs the WASI command module {settings.name}",
            input_schema=settings.input_schema,
            output_schema=settings.output_schema,
            component=settings.name,
            export=ENTRY_POINT,
            digest=artifact.digest,
            task_support=settings.task,
            client_capabilities=settings.needs(ENTRY_POINT, settings.name),
        )
        loaded = cls(engine_host, descriptor, pre, settings.output_schema, limits, grants)
        loaded._check_instantiates(label)
        return loaded

    @property
    def tools(self) -> list[ToolDescriptor]:
        """The one tool this module serves."""
        return [self._descriptor]

    def call(
        self, tool_name: str, arguments: Mapping[str, Any], timeout_s: float, context: CallContext | None = None
    ) -> CallToolResult:
        """Run the command once in a fresh sandbox; guest failures come back as ``is_error`` results.

        A cancellation in ``context`` stops the guest within an epoch tick (a command module
        has no access to progress or logs: it only has WASI preview 1).

        Raises:
            UnknownTool: ``tool_name`` is not this command's tool.
        """
        if tool_name != self.name:
            raise UnknownTool(f"command {self.name!r} has no tool {tool_name!r}")
        timeout_s = effective_timeout_s(timeout_s, self.limits)
        self.engine_host.start()  # without the ticker a deadline never arrives
        stdout = HeadLog(STDOUT_LIMIT_BYTES)
        stderr = TailBuffer()
        cancelled = context.cancelled if context is not None else None
        store = self._new_store(timeout_s, encode(arguments), stdout, stderr, cancelled)
        exit_code = 0
        try:
            began = time.perf_counter()
            instance = self._pre.instantiate(store)
            if context is not None:
                context.instantiate_s = time.perf_counter() - began  # the worker's instantiate histogram
            start = instance.exports(store)[ENTRY_POINT]
            assert isinstance(start, wasmtime.Func)  # checked at load
            start(store)
        except wasmtime.ExitTrap as exc:
            exit_code = exc.code  # wasi-libc only calls proc_exit for a non-zero status, but exit(0) exists
        except (wasmtime.Trap, wasmtime.WasmtimeError) as exc:
            if context is not None:
                context.crashed = True
            reason = describe_trap(exc, timeout_s, limits=self.limits, stderr=stderr)
            return error_result(with_stderr(reason, stderr))
        finally:
            # Free the Store now (see LoadedComponent.call): its output callbacks must be released
            # while the interpreter is alive.
            store.close()
            if stderr.total:
                # stdout is the result; stderr is the guest's own log, kept like a component's.
                log.info("guest output", tool=self.name, stderr=stderr.log_text(), stderr_bytes=stderr.total)
        if exit_code != 0:
            return error_result(with_stderr(f"guest exited with code {exit_code}", stderr))
        return self._result(stdout, stderr)

    def _result(self, stdout: HeadLog, stderr: TailBuffer) -> CallToolResult:
        if stdout.overflowed:
            return error_result(with_stderr(f"output is larger than {STDOUT_LIMIT_BYTES} bytes", stderr))
        raw = stdout.raw()
        try:
            value = decode_json(raw)
        except DecodeError as exc:
            shown = stdout.text()
            shown = f"{shown[:200]}…" if len(shown) > 200 else shown
            return error_result(with_stderr(f"output is not valid JSON ({exc}): {shown!r}", stderr))
        problem = self._output_check.error(value) if self._output_check is not None else None
        if problem is not None:
            where = "/".join(str(p) for p in problem.absolute_path) or "output"
            return error_result(f"output does not match the output schema: {where}: {problem.message}")
        return CallToolResult(content=[TextContent(stdout.text())], structured_content=value)

    def _new_store(
        self,
        timeout_s: float,
        stdin: bytes,
        stdout: HeadLog,
        stderr: TailBuffer,
        cancelled: CancelSignal | None = None,
    ) -> InterruptibleStore:
        wasi = self.grants.wasi()  # its capabilities' env and directories; no network, nothing inherited
        wasi.argv = [self.name]
        set_stdin_bytes(wasi, stdin)
        wasi.stdout_custom = stdout.write
        wasi.stderr_custom = stderr.write
        # The one Store factory: WASI, the epoch deadline, memory and fuel limits, all before
        # anything runs (a start section runs while instantiating).
        return sandbox_store(self.engine_host, wasi, self.limits, timeout_s, cancelled)

    def _check_instantiates(self, label: str) -> None:
        """Instantiate once (without running ``_start``) so a broken start section fails at load."""
        self.engine_host.start()
        store = self._new_store(LOAD_CHECK_TIMEOUT_S, b"", HeadLog(STDOUT_LIMIT_BYTES), TailBuffer())
        try:
            self._pre.instantiate(store)
        except (wasmtime.Trap, wasmtime.WasmtimeError) as exc:
            raise ComponentLoadError(f"{label} cannot be instantiated: {root_cause(str(exc))}") from exc
        finally:
            store.close()


def _check_interface(module: wasmtime.Module, label: str) -> None:
    for imported in module.imports:
        if imported.module != WASI_PREVIEW1:
            raise ComponentLoadError(
                f"{label} imports `{imported.module}::{imported.name}`, which the sandbox does not grant "
                f"(only {WASI_PREVIEW1} is provided)"
            )
    exports = {export.name: export.type for export in module.exports}
    entry = exports.get(ENTRY_POINT)
    if not isinstance(entry, wasmtime.FuncType) or entry.params or entry.results:
        raise ComponentLoadError(f"{label} exports no `{ENTRY_POINT}: () -> ()`, so it is not a WASI command")
