"""Attack instantiation and Store drop keeping the GIL (s25, ``LoadedComponent.quiet_instantiate``).

A component judged to have no start function is instantiated through a binding that keeps the
GIL: were a start function hidden from ``workers.sandbox.start_functions``, a guest spinning there
would hold the GIL and the epoch ticker (a Python thread) could never stop it. These hide start
functions where a walk might miss them (nested deeper, behind custom sections, past the walk's
depth) and check each is found, that such a component still instantiates letting go of the GIL,
and that a quiet component's spinning calls are still stopped while other calls are served.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

import pytest
import wasmtime

from schemas.config import ComponentSettings
from tests.workers.sandbox.test_gil_attacks import (
    SPIN_WAT,
    START_ONCE_WAT,
    STOP_BOUND_S,
    _in_thread,
    _served_meanwhile,
    loader,  # noqa: F401  # the fixture, shared
)
from workers.sandbox.component import LoadedComponent
from workers.sandbox.engine import EngineHost
from workers.sandbox.start_functions import may_run_code_at_instantiation


def _body(wat: str) -> str:
    """A component's fields, without its ``(component`` and closing parenthesis."""
    return wat.strip().removeprefix("(component").removesuffix(")")


def _nested(wat: str, depth: int) -> str:
    """``wat`` wrapped ``depth`` components deep, each level instantiating the one inside and
    exporting its ``one`` again (so the outermost still serves a tool)."""
    for level in range(depth):
        wat = (
            f"(component (component $C{level} {_body(wat)}) (instance $i{level} (instantiate $C{level}))"
            f' (export "one" (func $i{level} "one")))'
        )
    return wat


CUSTOM_BEFORE_START_WAT = """
(component
  (core module $M
    (@custom "name-like" "\\08\\01\\00")
    (func $begin)
    (start $begin)
    (func (export "one") (result i32) (i32.const 1)))
  (core instance $m (instantiate $M))
  (func (export "one") (result u32) (canon lift (core func $m "one")))
)
"""
"""A custom section whose bytes look like a start section (id 8, size 1) comes before the real one."""


@pytest.mark.parametrize("depth", [1, 2, 5])
def test_a_start_function_components_deep_is_found_and_lets_go_of_the_gil(
    depth: int, engine_host: EngineHost, cache_dir: Path, tmp_path: Path
) -> None:
    wat = _nested(START_ONCE_WAT, depth)
    assert may_run_code_at_instantiation(wasmtime.wat2wasm(wat))
    path = tmp_path / "deep.wat"
    path.write_text(wat)
    settings = ComponentSettings.model_validate({"name": f"deep{depth}", "path": path})
    deep = LoadedComponent.load(engine_host, settings, path, cache_dir)
    assert not deep.quiet_instantiate
    assert deep.call(f"deep{depth}_one", {}, timeout_s=5).structured_content == 1


def test_a_start_function_behind_a_custom_section_is_found() -> None:
    assert may_run_code_at_instantiation(wasmtime.wat2wasm(CUSTOM_BEFORE_START_WAT))


def test_nesting_past_the_walk_s_depth_counts_as_may_run_code() -> None:
    # No start function anywhere, but deeper than the walk goes: any doubt answers "it can".
    quiet = _nested(SPIN_WAT.replace('(func (export "spin-after")', '(func (export "unused")'), 1)
    assert not may_run_code_at_instantiation(wasmtime.wat2wasm(quiet))
    assert may_run_code_at_instantiation(wasmtime.wat2wasm(_nested(START_ONCE_WAT.replace("(start $begin)", ""), 40)))


def test_quiet_components_spinning_in_many_threads_at_once_are_all_stopped(
    loader: Callable[..., LoadedComponent],  # noqa: F811
) -> None:
    # Fresh instances made keeping the GIL, back to back from several threads, each call spinning:
    # every one is stopped at its deadline while another component is served.
    spin, other = loader("quietmany", SPIN_WAT), loader("besidemany")
    assert spin.quiet_instantiate
    spinners = [_in_thread(lambda: spin.call("quietmany_spin_now", {}, timeout_s=0.5)) for _ in range(4)]
    barrier = threading.Thread(target=lambda: [t.join(STOP_BOUND_S) for t, _ in spinners])
    barrier.start()
    assert _served_meanwhile(other, barrier) >= 1
    barrier.join(STOP_BOUND_S)
    for thread, outcome in spinners:
        assert not thread.is_alive()
        [result] = outcome
        assert getattr(result, "is_error", False), result
    assert spin.call("quietmany_spin_after", {}, timeout_s=0.5).is_error  # its post-return spins: stopped too
