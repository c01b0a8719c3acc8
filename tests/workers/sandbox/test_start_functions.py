"""Which components run code of their own when instantiated (``workers.sandbox.start_functions``)."""

from __future__ import annotations

import wasmtime

from tests.conftest import HOSTILE_WAT, TESTKIT_WAT
from tests.workers.sandbox.test_gil_attacks import SPIN_WAT, START_SPIN_WAT
from workers.sandbox.compile_cache import read_wasm
from workers.sandbox.start_functions import may_run_code_at_instantiation

NESTED_START_WAT = (
    "(component (component $C" + START_SPIN_WAT.strip().removeprefix("(component") + " (instance (instantiate $C)))"
)
"""The spinning start function one component deeper."""

CORE_START_WAT = "(module (func $s) (start $s))"


def test_components_without_start_functions() -> None:
    assert not may_run_code_at_instantiation(read_wasm(TESTKIT_WAT))
    assert not may_run_code_at_instantiation(read_wasm(HOSTILE_WAT))
    assert not may_run_code_at_instantiation(wasmtime.wat2wasm(SPIN_WAT))  # spins in calls, not at start


def test_a_start_function_anywhere_is_found() -> None:
    assert may_run_code_at_instantiation(wasmtime.wat2wasm(START_SPIN_WAT))
    assert may_run_code_at_instantiation(wasmtime.wat2wasm(NESTED_START_WAT))
    assert may_run_code_at_instantiation(wasmtime.wat2wasm(CORE_START_WAT))


def test_a_binary_it_does_not_understand_may_run_code() -> None:
    kit = read_wasm(TESTKIT_WAT)
    assert may_run_code_at_instantiation(b"")
    assert may_run_code_at_instantiation(b"not wasm at all")
    assert may_run_code_at_instantiation(kit[: len(kit) // 2])  # a section runs past the end
    assert may_run_code_at_instantiation(kit[:8] + b"\x01\xff\xff\xff\xff\xff")  # a size longer than a u32
