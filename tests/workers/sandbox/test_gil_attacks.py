"""Attacks on the GIL-held wasmtime bindings (``wasmtime_adapter.hold_gil_in_short_calls``).

The C functions re-bound through ``ctypes.PyDLL`` keep the GIL while they run. Were one of them
able to run guest code, a spinning guest would hold the GIL and the epoch ticker (a Python thread)
could never stop it: the whole worker would hang. Each test here spins a guest somewhere a call can
run guest code (an export, its post-return, a core module's start function at instantiation) with
the GIL-held bindings active, and asserts the guest is stopped while other calls on the same
component keep being served from another thread.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable
from pathlib import Path

import pytest
from wasmtime import _bindings

from schemas.config import ComponentSettings
from schemas.wire import CallToolResult
from tests.conftest import HOSTILE_WAT, text
from workers.sandbox import component as component_module
from workers.sandbox.component import LoadedComponent
from workers.sandbox.engine import EngineHost
from workers.sandbox.errors import ComponentLoadError
from workers.sandbox.wasmtime_adapter import GIL_HELD_FUNCTIONS, holds_gil

SPIN_WAT = """
(component
  (core module $M
    (func (export "one") (result i32) (i32.const 1))
    (func (export "spin") (param i32)
      (loop $l (br $l)))
    (func (export "spin-now") (result i32)
      (loop $l (br $l))
      (i32.const 0)))
  (core instance $m (instantiate $M))
  (func (export "spin-after") (result u32)
    (canon lift (core func $m "one") (post-return (core func $m "spin"))))
  (func (export "spin-now") (result u32) (canon lift (core func $m "spin-now")))
)
"""
"""An export whose post-return spins (the result is lifted, then the guest never lets go)."""

START_SPIN_WAT = """
(component
  (core module $M
    (func $spin (loop $l (br $l)))
    (start $spin)
    (func (export "one") (result i32) (i32.const 1)))
  (core instance $m (instantiate $M))
  (func (export "one") (result u32) (canon lift (core func $m "one")))
)
"""
"""A core module whose start function spins: instantiation itself never ends."""

START_ONCE_WAT = """
(component
  (core module $M
    (func $begin)
    (start $begin)
    (func (export "one") (result i32) (i32.const 1)))
  (core instance $m (instantiate $M))
  (func (export "one") (result u32) (canon lift (core func $m "one")))
)
"""
"""A start function that returns at once: the load check passes, yet the component could as well spin."""

STOP_BOUND_S = 20.0
"""How long a stopped guest may take to come back (a hang fails instead of blocking the run)."""

SAFE_HELD = re.compile(
    r"_(new|new_uninit|new_uninitialized|delete|message|exit_status|context|limiter|get_func"
    r"|epoch_deadline_callback|set_[a-z_]+|get_fuel)$"
)
"""What a GIL-held function may be: allocation, freeing plain data, setters, getters."""
RUNS_GUEST = re.compile(
    r"_call(_|$)|instantiate|post_return|store_delete|resource|compile|linker|module_new|component_new"
)
"""Names of C functions that may run guest code, wait, or call back into Python."""


def _in_thread(fn: Callable[[], object]) -> tuple[threading.Thread, list[object]]:
    outcome: list[object] = []

    def run() -> None:
        try:
            outcome.append(fn())
        except BaseException as exc:
            outcome.append(exc)

    thread = threading.Thread(target=run, daemon=False)
    thread.start()
    return thread, outcome


def _served_meanwhile(other: LoadedComponent, spinning: threading.Thread) -> int:
    """Calls ``other`` answered while ``spinning`` ran (at least one: the GIL was free)."""
    served = 0
    while spinning.is_alive() or served == 0:
        result = other.call(f"{other.name}_add", {"a": served, "b": 1}, timeout_s=5)
        assert result.structured_content == served + 1
        served += 1
    return served


@pytest.fixture(scope="module")
def loader(
    engine_host: EngineHost, cache_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Callable[..., LoadedComponent]:
    directory = tmp_path_factory.mktemp("gil")

    def load(name: str, wat: str | None = None, **limits: object) -> LoadedComponent:
        path = HOSTILE_WAT
        if wat is not None:
            path = directory / f"{name}.wat"
            path.write_text(wat)
        settings = ComponentSettings.model_validate({"name": name, "path": path, "limits": limits or None})
        return LoadedComponent.load(engine_host, settings, path, cache_dir)

    return load


def test_gil_held_functions_are_only_short_ones(engine_host: EngineHost) -> None:
    # engine_host made: the bindings are switched for the whole process.
    for name in GIL_HELD_FUNCTIONS:
        assert holds_gil(name)
        assert SAFE_HELD.search(name), f"{name} does not look like a setter, getter or allocation"
        assert not RUNS_GUEST.search(name), f"{name} may run guest code: it must release the GIL"
    # Every other binding that may run guest code still releases it.
    for attribute in dir(_bindings):
        name = attribute[1:]
        if attribute.startswith("_wasmtime_") and RUNS_GUEST.search(name) and callable(getattr(_bindings, attribute)):
            assert not holds_gil(name), f"{name} keeps the GIL: a spinning guest could never be stopped"


def test_spinning_export_is_stopped_while_other_calls_are_served(
    loader: Callable[..., LoadedComponent],
) -> None:
    spin, other = loader("spinner", SPIN_WAT), loader("beside")
    thread, outcome = _in_thread(lambda: spin.call("spinner_spin_now", {}, timeout_s=0.5))
    assert _served_meanwhile(other, thread) >= 1
    thread.join(STOP_BOUND_S)
    assert not thread.is_alive(), "the spinning export was never stopped"
    [result] = outcome
    assert isinstance(result, CallToolResult), result
    assert result.is_error and "timed out after 0.5 s" in text(result)


def test_spinning_post_return_is_stopped_while_other_calls_are_served(
    loader: Callable[..., LoadedComponent],
) -> None:
    spin, other = loader("after", SPIN_WAT), loader("beside2")
    thread, outcome = _in_thread(lambda: spin.call("after_spin_after", {}, timeout_s=0.5))
    assert _served_meanwhile(other, thread) >= 1
    thread.join(STOP_BOUND_S)
    assert not thread.is_alive(), "the spinning post-return was never stopped"
    [result] = outcome
    # Stopped in its post-return: the call is an error (its instance is unusable), never a hang.
    assert isinstance(result, CallToolResult), result
    assert result.is_error and "timed out after 0.5 s" in text(result), text(result)
    # The component still serves: the next call gets a fresh instance.
    thread, outcome = _in_thread(lambda: spin.call("after_spin_after", {}, timeout_s=0.2))
    thread.join(STOP_BOUND_S)
    assert not thread.is_alive()


def test_spinning_start_function_is_stopped_while_other_calls_are_served(
    loader: Callable[..., LoadedComponent], monkeypatch: pytest.MonkeyPatch
) -> None:
    other = loader("beside3")
    # The load check instantiates with its own limit: short here, so the test is quick.
    monkeypatch.setattr(component_module, "LOAD_CHECK_TIMEOUT_S", 0.5)
    thread, outcome = _in_thread(lambda: loader("starter", START_SPIN_WAT))
    assert _served_meanwhile(other, thread) >= 1
    thread.join(STOP_BOUND_S)
    assert not thread.is_alive(), "the spinning start function was never stopped"
    [error] = outcome
    assert isinstance(error, ComponentLoadError), error
    assert "cannot be instantiated" in str(error)


def test_only_quick_components_without_start_functions_instantiate_keeping_the_gil(
    loader: Callable[..., LoadedComponent], engine_host: EngineHost, cache_dir: Path, tmp_path: Path
) -> None:
    # A start function may spin, the load check's trial or not: such a component always lets go.
    path = tmp_path / "starts.wat"
    path.write_text(START_ONCE_WAT)
    settings = ComponentSettings.model_validate({"name": "starts", "path": path})
    starts = LoadedComponent.load(engine_host, settings, path, cache_dir)
    assert not starts.quiet_instantiate
    assert starts.call("starts_one", {}, timeout_s=5).structured_content == 1
    kit = loader("quick")
    assert kit.quiet_instantiate
    assert kit.call("quick_add", {"a": 2, "b": 3}, timeout_s=5).structured_content == 5
    # The default bindings still let go of the GIL: only these two callers keep it.
    assert not holds_gil("wasmtime_component_linker_instantiate")
    assert not holds_gil("wasmtime_store_delete")


def test_spinning_export_of_a_quick_component_is_still_stopped(loader: Callable[..., LoadedComponent]) -> None:
    # Instantiated keeping the GIL (no start function), its call still lets go: the ticker stops it.
    spin, other = loader("quickspin", SPIN_WAT), loader("beside4")
    assert spin.quiet_instantiate
    thread, outcome = _in_thread(lambda: spin.call("quickspin_spin_now", {}, timeout_s=0.5))
    assert _served_meanwhile(other, thread) >= 1
    thread.join(STOP_BOUND_S)
    assert not thread.is_alive(), "the spinning export was never stopped"
    [result] = outcome
    assert isinstance(result, CallToolResult) and result.is_error, result
