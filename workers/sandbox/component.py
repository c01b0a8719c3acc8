"""A loaded Wasm component and its tools: one tool per exported function, each call sandboxed.

Every call runs in a fresh Store by default: a trapped instance is dead, and a fresh Store also
means no state leaks between callers. A component configured with ``reuse_instances`` keeps a
few warm instances instead and discards one at its first trap or limit hit. Every Store comes
from ``workers.sandbox.limits.sandbox_store`` (WASI granting nothing, an epoch deadline, memory and fuel
limits), so a guest can neither abort the process nor run past its limits. What a guest writes
to stdout and stderr goes to the worker's log, one bounded entry per call.
"""

from __future__ import annotations

import atexit
import re
import threading
import time
import weakref
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog
import wasmtime
from wasmtime import component as wc

from bus.subjects import is_valid_tool_name
from schemas.codec import encode
from schemas.config import ComponentSettings, LimitsSettings
from schemas.errors import ArgumentError, ErrorCode, WitTypeError
from schemas.validation import invalid_arguments_message, join_problems
from schemas.wire import CallToolResult, ComponentSurface, TextContent, ToolDescriptor
from schemas.wit_schema import output_schema, params_schema
from schemas.wit_values import from_wasm, to_wasm, which_case
from workers.sandbox.artifact import Artifact
from workers.sandbox.call_context import CallContext, bind, running
from workers.sandbox.capabilities import Grants
from workers.sandbox.client_host import imports_client, link_client
from workers.sandbox.compile_cache import load_component
from workers.sandbox.engine import EngineHost
from workers.sandbox.errors import ComponentLoadError, UnknownTool
from workers.sandbox.failures import describe_trap, error_result, root_cause, with_stderr
from workers.sandbox.guest_output import GuestOutput
from workers.sandbox.interrupts import CancelSignal, InterruptibleStore
from workers.sandbox.limits import LOAD_CHECK_TIMEOUT_S, describe_limit_hit, effective_timeout_s, rearm, sandbox_store
from workers.sandbox.mcp_host import link_mcp
from workers.sandbox.notify_host import link_notify
from workers.sandbox.start_functions import may_run_code_at_instantiation
from workers.sandbox.surface import GuestBody, GuestSurface, SurfaceFailure, is_mcp_export
from workers.sandbox.wasmtime_adapter import ExportCall, instantiate_holding_gil
from workers.toolchains.wit_docs import FunctionDocs, function_docs, read_docs

log = structlog.get_logger(__name__)

WARM_INSTANCES_MAX = 16
"""Idle warm instances a component keeps (``reuse_instances``) unless its ``max_concurrency``
says fewer; more threads than this just instantiate afresh."""


HIDDEN_EXPORTS = frozenset({"exports"})
"""Top-level exports that are never tools (componentize-py adds an internal ``exports``)."""

_MISSING_IMPORT = re.compile(r"imports \w+ `([^`]+)`")

OUTPUT_INTERFACES = ("wasi:cli/stdout", "wasi:cli/stderr")
"""The only imports through which a guest gets a stream to write its output to."""

QUIET_INSTANTIATE_MAX_S = 50e-6
"""A component with no start function that instantiates within this (best of
``QUIET_INSTANTIATE_TRIALS`` at load) is instantiated keeping the GIL: letting go of it and taking
it back, with the event loop waiting for it, costs a guest thread more than that (two context
switches). A bigger one (componentize-py: ~0.8 ms of page faults) lets the loop run meanwhile."""
QUIET_INSTANTIATE_MAX_BYTES = 1 << 20
"""Components larger than this are not even timed for it."""
QUIET_INSTANTIATE_TRIALS = 3


@dataclass(frozen=True)
class _Tool:
    descriptor: ToolDescriptor
    index: Any  # wasmtime ExportIndex, valid for every instance of the component
    params: list[tuple[str, Any]]
    result: Any  # wasmtime value type, or None
    returns_result: bool
    call: ExportCall  # its types resolved once, here at load, not on every call


def _snake(name: str) -> str:
    return name.replace("-", "_")


def short_interface_name(name: str) -> str:
    """``docs:calc/math@1.0.0`` → ``math`` (the part after the last ``/``, before any ``@``)."""
    return name.rsplit("/", 1)[-1].split("@", 1)[0]


@dataclass
class _Warm:
    """A live instance kept for reuse (``reuse_instances``), idle between calls."""

    store: InterruptibleStore
    instance: Any
    output: GuestOutput


_NO_OUTPUT = GuestOutput()
"""The output of every call of a component that cannot write any (see ``_writes_output``): never
captured, so never written, and shared."""

_WARM_POOLS: weakref.WeakSet[LoadedComponent] = weakref.WeakSet()
"""Components holding warm Stores, closed at interpreter exit (see ``_close_warm_pools``)."""


def _close_warm_pools() -> None:
    for component in list(_WARM_POOLS):
        component.close()


# atexit runs handlers last-registered first: warm Stores are closed, then their output
# callbacks drained (a Store freed during interpreter teardown panics wasmtime's I/O thread).
atexit.register(_close_warm_pools)


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
        *,
        limits: LimitsSettings | None = None,
        reuse_instances: bool = False,
        grants: Grants | None = None,
        writes_output: bool = True,
    ) -> None:
        self.engine_host = engine_host
        self.name = name
        self.digest = digest
        self.limits = limits or LimitsSettings()
        """The effective limits of every tool of this component (defaults merged with overrides)."""
        self.reuse_instances = reuse_instances
        self.grants = grants or Grants()
        """What its guests may reach beyond clocks, random and their own stdio."""
        self._component = component
        self._writes_output = writes_output
        """It imports stdout or stderr; without them there is nothing to capture, and setting up
        the two capture callbacks was ~7 us of a small component's fresh Store."""
        self._quiet_drop = not writes_output and not self.grants.preopens
        """Its Stores get no output callbacks and no directories: they are freed keeping the GIL."""
        self.quiet_instantiate = False
        """Instantiated keeping the GIL: it runs no code of its own then and takes microseconds
        (decided at load, ``_decide_quiet_instantiate``)."""
        self._linker = linker
        self._tools = dict(tools)
        self._warm: list[_Warm] = []
        self._warm_lock = threading.Lock()
        self._warm_max = min(WARM_INSTANCES_MAX, self.limits.max_concurrency or WARM_INSTANCES_MAX)
        self.guest_surface = GuestSurface(name, {})
        """Its ``toolbus:mcp`` exports (resources, prompts, completion), found at load."""
        self.surface = ComponentSurface(component=name, digest=digest)
        """What they listed at load (empty when it exports none)."""
        if reuse_instances:
            _WARM_POOLS.add(self)

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
    ) -> LoadedComponent:
        """Read, compile (or load from cache) and check a component, deriving its tools.

        ``defaults`` are the worker's limits (``[worker.limits]``); the component's own
        ``limits`` override them field by field. A component with fuel runs on the engine
        variant that meters fuel. ``grants`` are its resolved capabilities (default: none).

        Raises:
            ComponentLoadError: the file cannot be read or compiled, the component needs an
                import the sandbox does not grant (the message names it), it cannot start
                within its limits, or it exports no function usable as a tool.
        """
        artifact = Artifact.read(engine_host, settings, wasm_path, cache_dir, defaults)
        component = artifact.compile(load_component, f"component {settings.name!r} ({wasm_path})")
        engine_host, limits, digest = artifact.engine_host, artifact.limits, artifact.digest
        grants = grants or Grants()
        imports = list(component.type.imports(engine_host.engine))
        grants.check_imports(imports, f"component {settings.name!r}")
        linker = wc.Linker(engine_host.engine)
        linker.add_wasip2()
        link_mcp(linker)
        link_client(linker)
        link_notify(linker, settings.name)
        grants.link(linker)
        guest_surface = GuestSurface.find(engine_host.engine, settings.name, component)
        docs = _docs_of(settings, artifact)
        tools = _derive_tools(
            engine_host,
            settings,
            component,
            digest,
            docs,
            asks=imports_client(imports),
            serves_surface=guest_surface.exported,
        )
        loaded = cls(
            engine_host,
            settings.name,
            component,
            linker,
            tools,
            digest,
            limits=limits,
            reuse_instances=settings.reuse_instances,
            grants=grants,
            writes_output=any(name.startswith(OUTPUT_INTERFACES) for name in imports),
        )
        loaded._check_instantiates(wasm_path)
        loaded._decide_quiet_instantiate(artifact)
        loaded.guest_surface = guest_surface
        if guest_surface.exported:
            try:
                loaded.surface = guest_surface.listed(loaded.run_sandboxed, LOAD_CHECK_TIMEOUT_S, digest=digest)
            except (SurfaceFailure, ArgumentError, KeyError, TypeError, ValueError) as exc:
                raise ComponentLoadError(
                    f"component {settings.name!r} ({wasm_path}): listing its resources or prompts failed: {exc}"
                ) from exc
        return loaded

    @property
    def tools(self) -> list[ToolDescriptor]:
        """The tools this component serves."""
        return [tool.descriptor for tool in self._tools.values()]

    def call(
        self, tool_name: str, arguments: Mapping[str, Any], timeout_s: float, context: CallContext | None = None
    ) -> CallToolResult:
        """Run one tool call in a sandbox; guest failures and limit hits come back as ``is_error`` results.

        ``timeout_s`` is what is left of the caller's deadline; the tool's own ``timeout_s``
        limit caps it. ``context`` connects the call to its caller: cancellation stops the
        guest within an epoch tick, and the guest's progress, logs and content go through it.

        Raises:
            UnknownTool: this component has no tool named ``tool_name``.
        """
        tool = self._tools.get(tool_name)
        if tool is None:
            raise UnknownTool(f"component {self.name!r} has no tool {tool_name!r}")
        try:
            args = _bind_arguments(tool.params, arguments)
        except ArgumentError as exc:
            return error_result(invalid_arguments_message(str(exc)))
        timeout_s = effective_timeout_s(timeout_s, self.limits)
        context = context or CallContext()
        context.deadline = min(context.deadline, time.monotonic() + timeout_s)
        self.engine_host.start()  # without the ticker a deadline never arrives
        warm = self._take_warm() if self.reuse_instances else None
        if warm is None:
            output = GuestOutput() if self._writes_output else _NO_OUTPUT
            store = self._new_store(output, timeout_s, context.cancelled)
            instance = None
        else:
            store, instance, output = warm.store, warm.instance, warm.output
            rearm(store, self.engine_host, self.limits, timeout_s, context.cancelled)
        context.interrupts = store.interrupts  # a wait for the client's answer re-arms them
        try:
            previous = bind(context)
            try:
                result, instance = self._run(store, instance, tool, args, output, timeout_s, context)
            finally:
                bind(previous)
            if context.content and not result.is_error:
                # Content the guest added replaces the text form of its return value.
                result = CallToolResult(content=list(context.content), structured_content=result.structured_content)
        finally:
            output.flush_to_log(tool_name)
            if instance is None or not self.reuse_instances or not self._keep_warm(_Warm(store, instance, output)):
                # Free the Store now, not whenever the GC breaks a traceback cycle: a Store
                # freed during interpreter exit calls our output callbacks from a wasmtime
                # thread after Python is gone, and the process panics on the way out.
                store.close()
        return result

    def run_sandboxed(self, timeout_s: float, body: GuestBody, context: CallContext | None = None) -> Any:
        """Run ``body(store, instance)`` in a fresh sandbox (the component's grants and limits,
        ``timeout_s`` capped by its own): how resources, prompts and completions reach the guest.
        ``context`` is what its host calls see (a prompt's ``Replay`` asker); a fresh one by default.

        Raises:
            SurfaceFailure: the guest trapped, exited or hit a limit (the message says which).
        """
        timeout_s = effective_timeout_s(timeout_s, self.limits)
        self.engine_host.start()
        output = GuestOutput()
        store = self._new_store(output, timeout_s)
        try:
            instance = self._linker.instantiate(store, self._component)
            context = context or CallContext()
            context.deadline = time.monotonic() + timeout_s
            with running(context):
                return body(store, instance)
        except wasmtime.ExitTrap as exc:
            reason = with_stderr(f"guest exited with code {exc.code}", output.stderr)
            raise SurfaceFailure(ErrorCode.INTERNAL, reason) from exc
        except wasmtime.WasmtimeError as exc:
            reason = describe_trap(exc, timeout_s, limits=self.limits, stderr=output.stderr)
            raise SurfaceFailure(ErrorCode.INTERNAL, with_stderr(reason, output.stderr)) from exc
        finally:
            output.flush_to_log(f"{self.name} (resources, prompts, completion)")
            store.close()

    def close(self) -> None:
        """Free the idle warm instances (a later call instantiates afresh)."""
        with self._warm_lock:
            idle, self._warm = self._warm, []
        for warm in idle:
            warm.store.close()

    def _run(
        self,
        store: InterruptibleStore,
        instance: Any,
        tool: _Tool,
        args: list[Any],
        output: GuestOutput,
        timeout_s: float,
        context: CallContext,
    ) -> tuple[CallToolResult, Any]:
        """Instantiate (unless warm) and call; the result, and the instance if it is still usable."""
        try:
            if instance is None:
                began = time.perf_counter()
                if self.quiet_instantiate:
                    instance = instantiate_holding_gil(self._linker, store, self._component)
                else:
                    instance = self._linker.instantiate(store, self._component)
                context.instantiate_s = time.perf_counter() - began  # the worker's instantiate histogram
            value = tool.call(store, instance, tool.index, args)
        except wasmtime.ExitTrap as exc:
            context.crashed = True
            return error_result(with_stderr(f"guest exited with code {exc.code}", output.stderr)), None
        except wasmtime.WasmtimeError as exc:
            context.crashed = True
            reason = describe_trap(exc, timeout_s, limits=self.limits, stderr=output.stderr)
            return error_result(with_stderr(reason, output.stderr)), None
        except (TypeError, ValueError) as exc:
            # wasmtime-py could not lower a value we produced: a corner of its untagged
            # variants. The instance may hold a half-done call, so it is not reused.
            return error_result(invalid_arguments_message(str(exc))), None
        return _to_result(tool, value), instance

    def _new_store(
        self, output: GuestOutput, timeout_s: float, cancelled: CancelSignal | None = None
    ) -> InterruptibleStore:
        wasi = self.grants.wasi()
        if self._writes_output:
            wasi = output.capture(wasi)
        store = sandbox_store(self.engine_host, wasi, self.limits, timeout_s, cancelled)
        store.quiet_drop = self._quiet_drop
        return store

    def _take_warm(self) -> _Warm | None:
        with self._warm_lock:
            return self._warm.pop() if self._warm else None

    def _keep_warm(self, warm: _Warm) -> bool:
        """Put an instance back in the idle pool; False when the pool is full (close it)."""
        with self._warm_lock:
            if len(self._warm) >= self._warm_max:
                return False
            self._warm.append(warm)  # LIFO: the most recently used instance is the warmest
            return True

    def _decide_quiet_instantiate(self, artifact: Artifact) -> None:
        """Instantiate keeping the GIL if the component has no start function and is quick to
        instantiate (best of a few trials: a preempted one only makes it look slower)."""
        if artifact.size > QUIET_INSTANTIATE_MAX_BYTES or may_run_code_at_instantiation(artifact.wasm()):
            return
        best = float("inf")
        for _ in range(QUIET_INSTANTIATE_TRIALS):
            store = self._new_store(GuestOutput(), LOAD_CHECK_TIMEOUT_S)
            try:
                began = time.perf_counter()
                self._linker.instantiate(store, self._component)
                best = min(best, time.perf_counter() - began)
            finally:
                store.close()
        self.quiet_instantiate = best <= QUIET_INSTANTIATE_MAX_S
        keeps_gil = self.quiet_instantiate
        log.debug("instantiation timed", component=self.name, best_us=round(best * 1e6), keeps_gil=keeps_gil)

    def _check_instantiates(self, wasm_path: Path) -> None:
        self.engine_host.start()
        output = GuestOutput()
        store = self._new_store(output, LOAD_CHECK_TIMEOUT_S)
        try:
            self._linker.instantiate(store, self._component)
        except wasmtime.WasmtimeError as exc:
            text = str(exc)
            missing = _MISSING_IMPORT.search(text)
            if missing:
                raise ComponentLoadError(
                    f"component {self.name!r} ({wasm_path}) imports `{missing.group(1)}`, "
                    "which the sandbox does not grant (it provides WASI 0.2, and toolbus:http/client to "
                    "components granted an `http` capability)"
                ) from exc
            # The trial instantiation has its own time limit, whatever the tool's is.
            check_limits = self.limits.model_copy(update={"timeout_s": LOAD_CHECK_TIMEOUT_S})
            reason = describe_limit_hit(root_cause(text), output.stderr.text(), check_limits, LOAD_CHECK_TIMEOUT_S)
            raise ComponentLoadError(
                f"component {self.name!r} ({wasm_path}) cannot be instantiated: {reason or root_cause(text)}"
            ) from exc
        finally:
            store.close()
            output.flush_to_log(f"{self.name} (load check)")


def _docs_of(settings: ComponentSettings, artifact: Artifact) -> dict[str, Any]:
    """The component's WIT doc comments (``{}`` without them: WAT, or a component built elsewhere).

    Raises:
        ComponentLoadError: the file changed or vanished since its digest was taken.
    """
    try:
        with artifact.opened() as wasm:
            return read_docs(wasm)
    except (ValueError, OSError) as exc:
        # wasmtime accepted the binary, so only the docs section itself can be damaged: the
        # tools still work, they just lose their descriptions.
        log.warning(
            "docs section unreadable; ignored", component=settings.name, path=str(artifact.path), error=str(exc)
        )
        return {}


def _derive_tools(
    engine_host: EngineHost,
    settings: ComponentSettings,
    component: Any,
    digest: str,
    docs: dict[str, Any],
    *,
    asks: bool = False,
    serves_surface: bool = False,
) -> dict[str, _Tool]:
    """The component's tools; ``asks``: it imports ``toolbus:mcp/client`` (every tool may ask)."""
    engine = engine_host.engine
    found: list[tuple[str, str, Any, Any, FunctionDocs]] = []  # (tool name, export path, func type, index, docs)
    for export_name, extern in component.type.exports(engine).items():
        item = extern.ty
        if export_name in HIDDEN_EXPORTS or is_mcp_export(export_name):
            continue  # toolbus:mcp/resources, prompts, completion: served, but not as tools
        if isinstance(item, wc.FuncType):
            tool_name = f"{settings.tool_prefix}{_snake(export_name)}"
            index = component.get_export_index(export_name)
            found.append((tool_name, export_name, item, index, function_docs(docs, export_name)))
        elif isinstance(item, wc.ComponentInstanceType):
            iface = short_interface_name(export_name)
            parent = component.get_export_index(export_name)
            for func_name, inner in item.exports(engine).items():
                func_type = inner.ty
                if not isinstance(func_type, wc.FuncType):
                    continue
                tool_name = f"{settings.tool_prefix}{_snake(iface)}_{_snake(func_name)}"
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
            task_support=settings.task_support(export, tool_name),
            client_capabilities=settings.needs(export, tool_name),
            asks=asks,
        )
        params, result = func_type.params, func_type.result
        tools[tool_name] = _Tool(descriptor, index, params, result, returns_result, ExportCall(func_type))
    if not tools and not serves_surface:
        raise ComponentLoadError(f"component {settings.name!r} exports no function usable as a tool")
    return tools


def _bind_arguments(params: Sequence[tuple[str, Any]], arguments: Mapping[str, Any]) -> list[Any]:
    """The guest's values for ``arguments``.

    Raises:
        ArgumentError: naming every parameter that does not fit (the first problem within each).
    """
    known = {name for name, _ in params}
    problems = [f"{key}: unexpected argument" for key in arguments if key not in known]
    values: list[Any] = []
    for name, ty in params:
        try:
            if name in arguments:
                values.append(to_wasm(ty, arguments[name], (name,)))
            elif isinstance(ty, wc.OptionType):
                values.append(to_wasm(ty, None, (name,)))
            else:
                problems.append(f"{name}: required argument is missing")
        except ArgumentError as exc:
            problems.append(str(exc))
    if problems:
        raise ArgumentError(join_problems(problems))
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
                return error_result(f"{tool.descriptor.export} returned an error")
            return error_result(_text_of(from_wasm(result_ty.err, payload)))
        result_ty, value = result_ty.ok, payload
        if result_ty is None:
            return CallToolResult(content=[])
    structured = from_wasm(result_ty, value)
    return CallToolResult(content=[TextContent(_text_of(structured))], structured_content=structured)
