"""Every reach into wasmtime-py's private names, in one place.

wasmtime-py does not wrap two C API functions the worker needs: the epoch-deadline *callback*
(to stop a guest on cancellation as well as at its deadline, see ``workers.sandbox.interrupts``) and
``wasi_config_set_stdin_bytes`` (a command's stdin without a temp file, see ``workers.sandbox.wasi_command``);
both are reached through ``wasmtime._ffi``. One module global of ``wasmtime.component._types``
is made per-thread (see ``PerThreadSet``). And a component export is called through ``ExportCall``,
which resolves the function's types once, at load: wasmtime-py's ``Func.__call__`` asks the C API
for the function's type and every nested type (record fields, list elements, variant cases) again
on every call, which was most of the Python cost of a small call. None of this is a public API and
it may change with any release: ``tests/workers/sandbox/test_wasmtime_adapter.py`` pins the version
these bindings were checked against and fails, by name, when one of them is gone.

The short C functions of a call (Store and WASI setup, value conversion) are also re-bound to keep
the GIL (``hold_gil_in_short_calls``): ctypes releases and re-takes it around every foreign call,
and with the event loop busy in another thread each of those is a chance to lose it and wait.

The upstream changes that would retire this module: ``Store.set_epoch_deadline_callback`` and
``WasiConfig.stdin_bytes`` in wasmtime-py; a ``Func.call`` taking types resolved once (or
``FuncType`` and the value types caching their reflection, which is immutable per component); and,
for the fresh-instance cost, a component ``InstancePre`` in the C API (wasmtime 51's C API has
``wasmtime_linker_instantiate_pre`` for core modules only, so every component instantiation still
re-runs the linker's type checks and import resolution).
"""

from __future__ import annotations

import ctypes
import threading
from collections.abc import Callable
from typing import Any

import wasmtime
from wasmtime import _bindings as bindings
from wasmtime import _ffi as ffi
from wasmtime import component as wc
from wasmtime.component import _enter as component_enter
from wasmtime.component import _types as component_types

PRIVATE_NAMES = (
    "wasmtime_context_t",
    "wasmtime_component_val_t",
    "wasmtime_component_func_t",
    "wasmtime_component_instance_get_func",
    "wasmtime_component_func_call",
    "wasmtime_component_func_post_return",
    "wasmtime_component_val_delete",
    "wasmtime_pooling_allocation_config_new",
    "wasmtime_pooling_allocation_config_delete",
    "wasmtime_pooling_allocation_strategy_set",
    "wasmtime_pooling_allocation_config_total_component_instances_set",
    "wasmtime_pooling_allocation_config_total_core_instances_set",
    "wasmtime_pooling_allocation_config_total_memories_set",
    "wasmtime_pooling_allocation_config_total_tables_set",
    "wasmtime_pooling_allocation_config_max_memory_size_set",
    "wasmtime_pooling_allocation_config_table_elements_set",
    "wasmtime_pooling_allocation_config_max_core_instance_size_set",
    "wasmtime_pooling_allocation_config_max_component_instance_size_set",
    "wasmtime_update_deadline_kind_t",
    "wasmtime_error_new",
    "wasmtime_store_epoch_deadline_callback",
    "bytes_to_capi",
    "wasi_config_set_stdin_bytes",
    "filename",
    "wasmtime_component_instance_t",
    "wasmtime_component_linker_instantiate",
    "wasmtime_store_delete",
)
"""The ``wasmtime._ffi`` names used below; the pinning test checks each one exists."""
COMPONENT_TYPES_NAMES = ("case_test_cache", "VariantLikeType")
"""The ``wasmtime.component._types`` names used below; the pinning test checks each one exists."""
RESOLVED_MEMBERS: dict[type[Any], tuple[str, ...]] = {
    wc.RecordType: ("fields",),
    wc.TupleType: ("elements",),
    wc.ListType: ("element", "_is_bytes"),
    wc.VariantType: ("_cases", "_tagged"),
    wc.OptionType: ("_cases", "_tagged"),
    wc.ResultType: ("_cases", "_tagged"),
}
"""Per value type, the members its (inherited) lowering and lifting read on every call; ``resolve``
reads them once. The pinning test checks each is still a member of its class."""
GIL_HELD_FUNCTIONS = (
    "wasi_config_new",
    "wasi_config_delete",
    "wasi_config_set_stdin_bytes",
    "wasi_config_set_argv",
    "wasi_config_set_env",
    "wasmtime_store_new",
    "wasmtime_store_context",
    "wasmtime_store_limiter",
    "wasmtime_store_epoch_deadline_callback",
    "wasmtime_context_set_wasi",
    "wasmtime_context_set_epoch_deadline",
    "wasmtime_context_set_fuel",
    "wasmtime_context_get_fuel",
    "wasmtime_component_instance_get_func",
    "wasmtime_component_val_new",
    "wasmtime_component_val_delete",
    "wasmtime_component_vallist_new_uninit",
    "wasmtime_component_vallist_delete",
    "wasmtime_component_valrecord_new_uninit",
    "wasmtime_component_valrecord_delete",
    "wasmtime_component_valtuple_new_uninit",
    "wasmtime_component_valtuple_delete",
    "wasmtime_component_valflags_new_uninit",
    "wasmtime_component_valflags_delete",
    "wasm_byte_vec_new",
    "wasm_byte_vec_new_uninitialized",
    "wasm_byte_vec_delete",
    "wasmtime_error_message",
    "wasmtime_error_exit_status",
    "wasmtime_error_delete",
)
"""C functions called on a call's path that never run guest code, never call back into Python and
never wait (allocation, setters, value conversion): bound to keep the GIL. Everything else keeps
wasmtime-py's binding, which releases it: calls and post-returns and instantiation run guest code
(the epoch ticker, a Python thread, must run meanwhile or a spinning guest is never stopped),
compilation takes long, and dropping a Store may meet wasmtime's I/O thread calling our output
callbacks (which need the GIL)."""
HELD_ON_REQUEST = ("wasmtime_component_linker_instantiate", "wasmtime_store_delete")
"""C functions bound a second time, to keep the GIL, for the callers that know it is safe
(``instantiate_holding_gil``, ``delete_store_holding_gil``); wasmtime-py's own bindings of them
still release it. Not in ``GIL_HELD_FUNCTIONS``: in general both may run guest code or meet
wasmtime's I/O thread calling back into Python."""
ENTER_NAMES = ("enter_wasm",)
"""The ``wasmtime.component._enter`` names used below (host callbacks' exceptions re-raised)."""

CONTINUE = 0
"""WASMTIME_UPDATE_DEADLINE_CONTINUE: keep running, the deadline moved by ``delta`` ticks."""

EpochCallback = ctypes.CFUNCTYPE(
    ctypes.c_size_t,
    ctypes.POINTER(ffi.wasmtime_context_t),
    ctypes.c_void_p,
    ctypes.POINTER(ctypes.c_uint64),
    ctypes.POINTER(ffi.wasmtime_update_deadline_kind_t),
)
"""The C signature of an epoch-deadline callback: (context, data, *delta, *kind) -> error or 0."""

_Finalizer = ctypes.CFUNCTYPE(None, ctypes.c_void_p)


def _finalize(_data: Any) -> None:
    return None


_no_finalizer = _Finalizer(_finalize)


def epoch_callback(on_tick: Callable[[Any, Any, Any, Any], int]) -> Any:
    """Wrap ``on_tick`` as a C callback; the caller keeps the result alive as long as the Store."""
    return EpochCallback(on_tick)


def set_epoch_deadline_callback(store: wasmtime.Store, callback: Any, data: object) -> None:
    """Make wasmtime call ``callback`` (from ``epoch_callback``) when ``store`` reaches its deadline.

    ``callback`` gets ``data`` back as its second argument (read it with ``callback_data``), so one
    C callback serves every Store: making a ctypes callback costs ~10 µs, too much per Store. The
    caller keeps ``data`` alive as long as the Store (wasmtime holds only its address).
    """
    ffi.wasmtime_store_epoch_deadline_callback(store.ptr(), callback, ctypes.c_void_p(id(data)), _no_finalizer)


def use_pooling_allocator(
    config: wasmtime.Config,
    *,
    instances: int,
    core_instances: int,
    memories: int,
    tables: int,
    max_memory_bytes: int,
    table_elements: int,
    instance_bytes: int,
) -> None:
    """Make engines of ``config`` allocate instances from pre-reserved slots (wasmtime's pooling
    allocator), which wasmtime-py does not expose. ``instances``, ``core_instances``, ``memories`` and
    ``tables`` bound what may be live at once in the engine; the rest bound each one.
    """
    pool = ffi.wasmtime_pooling_allocation_config_new()
    try:
        ffi.wasmtime_pooling_allocation_config_total_component_instances_set(pool, instances)
        ffi.wasmtime_pooling_allocation_config_total_core_instances_set(pool, core_instances)
        ffi.wasmtime_pooling_allocation_config_total_memories_set(pool, memories)
        ffi.wasmtime_pooling_allocation_config_total_tables_set(pool, tables)
        ffi.wasmtime_pooling_allocation_config_max_memory_size_set(pool, max_memory_bytes)
        ffi.wasmtime_pooling_allocation_config_table_elements_set(pool, table_elements)
        ffi.wasmtime_pooling_allocation_config_max_core_instance_size_set(pool, instance_bytes)
        ffi.wasmtime_pooling_allocation_config_max_component_instance_size_set(pool, instance_bytes)
        ffi.wasmtime_pooling_allocation_strategy_set(config.ptr(), pool)  # copies the settings
    finally:
        ffi.wasmtime_pooling_allocation_config_delete(pool)


def callback_data(data: int) -> Any:
    """The object given as ``data`` to ``set_epoch_deadline_callback``, from its address."""
    return ctypes.cast(data, ctypes.py_object).value


def trap(message: str) -> int:
    """A ``wasmtime_error_t*`` for wasmtime to raise in the guest (it takes ownership)."""
    error = ffi.wasmtime_error_new(ctypes.create_string_buffer(message.encode()))
    return ctypes.cast(error, ctypes.c_void_p).value or 0


def set_stdin_bytes(wasi: wasmtime.WasiConfig, data: bytes) -> None:
    """Give the guest ``data`` as its whole stdin.

    wasmtime-py only offers a stdin *file*; the C API takes the bytes directly and halves the cost
    of a small call (a temp file costs ~0.25 ms). wasmtime takes ownership of the vector's buffer
    (it leaves the vector empty), so nothing is freed here.
    """
    vec = ffi.bytes_to_capi(data)
    ffi.wasi_config_set_stdin_bytes(wasi.ptr(), ctypes.byref(vec))


def hold_gil_in_short_calls() -> None:
    """Re-bind ``GIL_HELD_FUNCTIONS`` to keep the GIL (once per process; idempotent).

    wasmtime-py loads libwasmtime with ``ctypes.CDLL``, whose functions release the GIL for the
    call and take it back afterwards. A fresh-instance call makes ~17 such calls; whenever the
    event loop's thread waits for the GIL, each release hands it over and the guest thread then
    sleeps on a futex until the loop lets go again (measured: ~11 futex syscalls and ~6 context
    switches per call at 16 connections). ``ctypes.PyDLL`` opens the same library (the loader
    returns the one already mapped) with functions that keep the GIL. wasmtime-py's wrappers read
    the private ``_<name>`` globals of ``wasmtime._bindings`` at every call, so replacing those
    switches all of wasmtime-py at once; argument and result types are copied.
    """
    if getattr(bindings, "_toolbus_gil_held", False):
        return
    library = ctypes.PyDLL(str(ffi.filename))
    for name in GIL_HELD_FUNCTIONS:
        released = getattr(bindings, f"_{name}")
        held = getattr(library, name)
        held.argtypes = released.argtypes
        held.restype = released.restype
        setattr(bindings, f"_{name}", held)
    bindings._toolbus_gil_held = True  # type: ignore[attr-defined]


_held_on_request: dict[str, Any] = {}


def _held(name: str) -> Any:
    """``name`` (one of ``HELD_ON_REQUEST``) bound to keep the GIL, with wasmtime-py's C types."""
    held = _held_on_request.get(name)
    if held is None:
        released = getattr(bindings, f"_{name}")
        held = getattr(ctypes.PyDLL(str(ffi.filename)), name)
        held.argtypes = released.argtypes
        held.restype = released.restype
        _held_on_request[name] = held
    return held


def instantiate_holding_gil(linker: wc.Linker, store: wasmtime.Store, component: wc.Component) -> wc.Instance:
    """``linker.instantiate(store, component)`` without letting go of the GIL.

    Only for a component that runs no code of its own while instantiated (no start function:
    ``workers.sandbox.start_functions``) and instantiates in microseconds: a guest spinning here
    would hold the GIL, and the epoch ticker (a Python thread) could never stop it. Handing the
    GIL over and taking it back costs more than such an instantiation when the event loop waits.
    """
    linker._assert_not_locked()
    instance = ffi.wasmtime_component_instance_t()
    error = _held("wasmtime_component_linker_instantiate")(
        linker.ptr(), store._context(), component.ptr(), ctypes.byref(instance)
    )
    if error:
        raise wasmtime.WasmtimeError._from_ptr(error)
    return wc.Instance._from_raw(instance)


def delete_store_holding_gil(ptr: Any) -> None:
    """Free a Store (``ptr``) without letting go of the GIL.

    Only for a Store given no output callbacks and no preopened directories: dropping one with
    output callbacks may wait for wasmtime's I/O thread, which calls them and needs the GIL.
    """
    _held("wasmtime_store_delete")(ptr)


def holds_gil(name: str) -> bool:
    """Whether wasmtime-py's binding of C function ``name`` keeps the GIL (for the pinning test)."""
    function = getattr(bindings, f"_{name}")
    return bool(function._flags_ & ctypes._FUNCFLAG_PYTHONAPI)  # type: ignore[attr-defined]


class PerThreadSet:
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


def install_per_thread_scratch() -> None:
    """Make wasmtime-py's variant-lowering scratch set per-thread (once per process; idempotent)."""
    if not isinstance(component_types.case_test_cache, PerThreadSet):
        component_types.case_test_cache = PerThreadSet()  # type: ignore[assignment]


class _Resolved:
    """Mixin of a value type whose reflected members were read once (see ``resolve``).

    It shares the C type of the wasmtime-py object it was made from and keeps that object alive,
    so it must not free the pointer itself.
    """

    _source: Any

    def _delete(self, _ptr: Any) -> None:
        return None


_RESOLVED_CLASSES: dict[type[Any], type[Any]] = {}


def _resolved_class(cls: type[Any]) -> type[Any]:
    resolved = _RESOLVED_CLASSES.get(cls)
    if resolved is None:
        # Plain class attributes shadow the parent's properties, so instances can hold the values.
        members = dict.fromkeys(name for name in RESOLVED_MEMBERS[cls] if not name.startswith("_"))
        resolved = _RESOLVED_CLASSES[cls] = type(f"Resolved{cls.__name__}", (_Resolved, cls), members)
    return resolved


def resolve(ty: Any) -> Any:
    """``ty`` (a wasmtime-py value type) with the members its lowering and lifting read on each call
    read once, recursively; it lowers and lifts exactly as ``ty`` does, with wasmtime-py's own code.
    Types with nothing to resolve (numbers, strings, enums, flags, resources) are returned as they are.
    """
    cls = type(ty)
    if cls not in RESOLVED_MEMBERS:
        return ty
    resolved_cls = _resolved_class(cls)
    resolved: Any = object.__new__(resolved_cls)  # no __init__: wasmtime-py's types refuse one
    resolved._source = ty
    resolved._Managed__ptr = ty.ptr()  # Managed's private slot: the same C type, freed by ``ty`` alone
    if isinstance(ty, wc.RecordType):
        resolved.fields = [(name, resolve(field)) for name, field in ty.fields]
    elif isinstance(ty, wc.TupleType):
        resolved.elements = [resolve(element) for element in ty.elements]
    elif isinstance(ty, wc.ListType):
        resolved.element = resolve(ty.element)
        is_bytes = ty._is_bytes()
        resolved._is_bytes = lambda: is_bytes
    else:
        cases = [(name, None if case is None else resolve(case)) for name, case in ty._cases()]
        tagged = ty._tagged()
        resolved._cases = lambda: cases
        resolved._tagged = lambda: tagged
    return resolved


class ExportCall:
    """How to call one exported function of a component, its types resolved once (at load).

    Does what wasmtime-py's ``Instance.get_func`` + ``Func.__call__`` + ``Func.post_return`` do,
    minus the per-call type reflection and the wrapper objects; values are lowered and lifted by
    wasmtime-py's own value types (``resolve``d). Raises what they raise: ``WasmtimeError`` (and
    ``ExitTrap``) from the guest, ``TypeError``/``ValueError`` for a value that does not lower.
    """

    __slots__ = ("_params", "_result", "_values")

    def __init__(self, func_type: Any) -> None:
        self._params = tuple(resolve(ty) for _, ty in func_type.params)
        result = func_type.result
        self._result = None if result is None else resolve(result)
        self._values = ffi.wasmtime_component_val_t * len(self._params)

    def __call__(self, store: wasmtime.Store, instance: Any, index: Any, args: list[Any]) -> Any:
        """Call export ``index`` of ``instance`` (in ``store``) with ``args``; post-return done."""
        context = store._context()
        func = ffi.wasmtime_component_func_t()
        if not ffi.wasmtime_component_instance_get_func(
            ctypes.byref(instance._instance), context, index.ptr(), ctypes.byref(func)
        ):
            raise ValueError("the export is not a function of this instance")
        if len(args) != len(self._params):
            raise TypeError(f"wrong number of parameters: given {len(args)}, expected {len(self._params)}")
        values = self._values()
        lowered = 0
        try:
            for ty, value in zip(self._params, args, strict=True):
                ty.convert_to_c(store, value, ctypes.pointer(values[lowered]))
                lowered += 1
            result = None if self._result is None else ffi.wasmtime_component_val_t()
            result_ref = None if result is None else ctypes.byref(result)
            count = 0 if result is None else 1
            component_enter.enter_wasm(
                lambda: ffi.wasmtime_component_func_call(
                    ctypes.byref(func), context, values, lowered, result_ref, count
                )
            )
            value = None if self._result is None else self._result.convert_from_c(result)
        finally:
            for i in range(lowered):
                ffi.wasmtime_component_val_delete(ctypes.byref(values[i]))
        component_enter.enter_wasm(lambda: ffi.wasmtime_component_func_post_return(ctypes.byref(func), context))
        return value
