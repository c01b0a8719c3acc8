"""wasmtime-py's private names the worker uses (all in ``workers.sandbox.wasmtime_adapter``) still exist,
and the adapter's export call (types resolved once) lowers and lifts every WIT value type as
wasmtime-py's own ``Func`` does.

A wasmtime-py upgrade that renames one fails here, by name, instead of in a guest that can no
longer be cancelled, a command that no longer gets its stdin, or a value that no longer lowers.
"""

from __future__ import annotations

import ast
from importlib.metadata import version
from pathlib import Path
from typing import Any

import pytest
import wasmtime
from wasmtime import _bindings, _ffi
from wasmtime.component import _enter as component_enter
from wasmtime.component import _types as component_types

from schemas.wit_values import from_wasm, to_wasm
from tests.schemas.test_wit_values import ROUND_TRIPS
from tests.schemas.wit_zoo import Zoo, get_zoo
from workers.sandbox.wasmtime_adapter import (
    COMPONENT_TYPES_NAMES,
    ENTER_NAMES,
    GIL_HELD_FUNCTIONS,
    HELD_ON_REQUEST,
    PRIVATE_NAMES,
    RESOLVED_MEMBERS,
    ExportCall,
    PerThreadSet,
    hold_gil_in_short_calls,
    holds_gil,
    install_per_thread_scratch,
)

WORKERS = Path(__file__).resolve().parents[3] / "workers"
PINNED_WASMTIME = "51."
"""The wasmtime-py release line these private names were checked against (pyproject pins ``<52``);
a new major version must be checked again."""


def test_the_pinned_wasmtime_is_installed() -> None:
    assert version("wasmtime").startswith(PINNED_WASMTIME), (
        "wasmtime-py changed: re-check workers/sandbox/wasmtime_adapter.py"
    )


def test_every_private_name_exists_on_the_installed_wasmtime() -> None:
    for name in PRIVATE_NAMES:
        assert hasattr(_ffi, name), f"wasmtime._ffi.{name} is gone from wasmtime {version('wasmtime')}"
    for name in COMPONENT_TYPES_NAMES:
        assert hasattr(component_types, name), f"wasmtime.component._types.{name} is gone"
    for name in ENTER_NAMES:
        assert hasattr(component_enter, name), f"wasmtime.component._enter.{name} is gone"
    for cls, members in RESOLVED_MEMBERS.items():
        for member in members:
            assert hasattr(cls, member), f"{cls.__name__}.{member} is gone: re-check wasmtime_adapter.resolve"
    install_per_thread_scratch()
    assert isinstance(component_types.case_test_cache, PerThreadSet), "the per-thread scratch set is not installed"


@pytest.fixture(scope="module")
def zoo() -> Zoo:
    return get_zoo()


@pytest.mark.parametrize(("name", "value"), ROUND_TRIPS, ids=[f"{n}-{i}" for i, (n, _) in enumerate(ROUND_TRIPS)])
def test_export_call_lowers_and_lifts_every_type_as_wasmtime_does(zoo: Zoo, name: str, value: Any) -> None:
    """One ExportCall per function (types resolved once), called twice: the second call uses
    the same resolved types, as every call after a tool's load does."""
    call = ExportCall(zoo.funcs[name])
    ty = zoo.types[name]
    store = wasmtime.Store(zoo.engine)
    store.set_wasi(wasmtime.WasiConfig())
    store.set_epoch_deadline(1_000_000)
    try:
        instance = zoo.linker.instantiate(store, zoo.component)
        index = zoo.component.get_export_index(f"echo-{name}")
        for _ in range(2):
            echoed, _pad = call(store, instance, index, [to_wasm(ty, value), *([0] * 16)])
            assert from_wasm(ty, echoed) == value
            assert echoed == zoo.echo(name, to_wasm(ty, value))
    finally:
        store.close()


def test_export_call_refuses_a_value_that_does_not_lower(zoo: Zoo) -> None:
    call = ExportCall(zoo.funcs["point"])
    store = wasmtime.Store(zoo.engine)
    store.set_wasi(wasmtime.WasiConfig())
    store.set_epoch_deadline(1_000_000)
    try:
        instance = zoo.linker.instantiate(store, zoo.component)
        index = zoo.component.get_export_index("echo-point")
        with pytest.raises((TypeError, AttributeError)):
            call(store, instance, index, ["not a record", *([0] * 16)])
        with pytest.raises(TypeError, match="wrong number of parameters"):
            call(store, instance, index, [])
    finally:
        store.close()


def test_short_calls_keep_the_gil_and_guest_runs_release_it() -> None:
    for name in GIL_HELD_FUNCTIONS:
        released = getattr(_bindings, f"_{name}", None)
        assert released is not None, f"wasmtime._bindings._{name} is gone: re-check hold_gil_in_short_calls"
    hold_gil_in_short_calls()
    hold_gil_in_short_calls()  # idempotent
    for name in GIL_HELD_FUNCTIONS:
        assert holds_gil(name), f"{name} still releases the GIL"
    # Anything that may run guest code (or wait for wasmtime's I/O thread) must let the epoch
    # ticker run: a spinning guest is stopped only because these release the GIL.
    for name in (
        "wasmtime_component_func_call",
        "wasmtime_component_func_post_return",
        "wasmtime_component_linker_instantiate",
        "wasmtime_func_call",
        "wasmtime_linker_instantiate",
        "wasmtime_store_delete",
        "wasmtime_component_new",
    ):
        assert name not in GIL_HELD_FUNCTIONS
        assert not holds_gil(name), f"{name} must release the GIL"
    # Bound a second time for the callers that know it is safe (instantiate_holding_gil and
    # delete_store_holding_gil); the names must exist, with their C types, in wasmtime-py.
    for name in HELD_ON_REQUEST:
        assert getattr(_bindings, f"_{name}").argtypes, f"wasmtime._bindings._{name} is gone"


def test_no_other_worker_module_imports_wasmtime_private_modules() -> None:
    for path in sorted(WORKERS.rglob("*.py")):
        if path.name == "wasmtime_adapter.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("wasmtime"):
                private = [alias.name for alias in node.names if alias.name.startswith("_")]
                where = f"{path.name}:{node.lineno}"
                assert not private, f"{where}: wasmtime.{private} belongs in workers/sandbox/wasmtime_adapter.py"
                assert "._" not in (node.module or ""), f"{path.name}:{node.lineno}: {node.module}"
            if isinstance(node, ast.Import):
                for alias in node.names:
                    assert "._" not in alias.name, f"{path.name}:{node.lineno}: {alias.name}"
