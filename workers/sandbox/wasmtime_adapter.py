"""Every reach into wasmtime-py's private names, in one place.

wasmtime-py does not wrap two C API functions the worker needs: the epoch-deadline *callback*
(to stop a guest on cancellation as well as at its deadline, see ``workers.sandbox.interrupts``) and
``wasi_config_set_stdin_bytes`` (a command's stdin without a temp file, see ``workers.sandbox.wasi_command``);
both are reached through ``wasmtime._ffi``. And one module global of ``wasmtime.component._types``
is made per-thread (see ``PerThreadSet``). None of this is a public API and it may change with any
release: ``tests/workers/sandbox/test_wasmtime_adapter.py`` pins the version these bindings were checked
against and fails, by name, when one of them is gone. The upstream change that would retire this
module: ``Store.set_epoch_deadline_callback`` and ``WasiConfig.stdin_bytes`` in wasmtime-py.
"""

from __future__ import annotations

import ctypes
import threading
from collections.abc import Callable
from typing import Any

import wasmtime
from wasmtime import _ffi as ffi
from wasmtime.component import _types as component_types

PRIVATE_NAMES = (
    "wasmtime_context_t",
    "wasmtime_update_deadline_kind_t",
    "wasmtime_error_new",
    "wasmtime_store_epoch_deadline_callback",
    "bytes_to_capi",
    "wasi_config_set_stdin_bytes",
)
"""The ``wasmtime._ffi`` names used below; the pinning test checks each one exists."""
COMPONENT_TYPES_NAMES = ("case_test_cache",)
"""The ``wasmtime.component._types`` globals replaced below; the pinning test checks each one exists."""

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


def set_epoch_deadline_callback(store: wasmtime.Store, callback: Any) -> None:
    """Make wasmtime call ``callback`` (from ``epoch_callback``) when ``store`` reaches its deadline."""
    ffi.wasmtime_store_epoch_deadline_callback(store.ptr(), callback, None, _no_finalizer)


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
