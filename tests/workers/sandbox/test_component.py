"""LoadedComponent against real wasmtime: tools, conversions, traps and timeouts."""

from __future__ import annotations

import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from schemas.codec import encode
from schemas.config import ComponentSettings, ToolOverride
from schemas.wire import UNSET, CallToolResult, TextContent
from tests.conftest import TESTKIT_WAT, text
from workers.sandbox.component import LoadedComponent, short_interface_name
from workers.sandbox.engine import EngineHost
from workers.sandbox.errors import ComponentLoadError, UnknownTool


@pytest.fixture(scope="module")
def calc_wat_path() -> Path:
    return TESTKIT_WAT


@pytest.fixture(scope="module")
def calc(engine_host: EngineHost, calc_wat_path: Path, tmp_path_factory: pytest.TempPathFactory) -> LoadedComponent:
    settings = ComponentSettings(
        name="calc", path=calc_wat_path, tools={"add": ToolOverride(description="Adds two numbers.")}
    )
    return LoadedComponent.load(engine_host, settings, calc_wat_path, tmp_path_factory.mktemp("cache"))


def test_one_tool_per_exported_function(calc: LoadedComponent) -> None:
    assert sorted(t.name for t in calc.tools) == [
        "calc_add",
        "calc_burn",
        "calc_danger_boom",
        "calc_danger_do_nothing",
        "calc_danger_spin",
        "calc_divide",
        "calc_echo_item",
        "calc_greet",
    ]
    by_name = {t.name: t for t in calc.tools}
    assert by_name["calc_add"].export == "add"
    assert by_name["calc_danger_do_nothing"].export == "danger/do-nothing"
    assert all(t.component == "calc" and t.digest == calc.digest for t in calc.tools)
    assert all(t.task_support == "optional" for t in calc.tools)  # the default
    assert calc.digest.startswith("sha256:") and len(calc.digest) == 7 + 64


def test_a_prefix_and_task_settings_reach_the_descriptors(
    engine_host: EngineHost, calc_wat_path: Path, tmp_path: Path
) -> None:
    settings = ComponentSettings(
        name="calc",
        path=calc_wat_path,
        prefix="",
        task="forbidden",
        tools={"add": ToolOverride(task="required"), "danger_spin": ToolOverride(task="optional")},
    )
    tools = {t.name: t for t in LoadedComponent.load(engine_host, settings, calc_wat_path, tmp_path).tools}
    assert {"add", "divide", "danger_spin"} <= set(tools)  # named after the exports alone
    assert tools["add"].task_support == "required"  # keyed by export name
    assert tools["danger_spin"].task_support == "optional"  # keyed by tool name
    assert tools["divide"].task_support == "forbidden"  # the component's own


def test_descriptors_carry_schemas_and_descriptions(calc: LoadedComponent) -> None:
    by_name = {t.name: t for t in calc.tools}
    add = by_name["calc_add"]
    assert add.description == "Adds two numbers."
    assert add.input_schema == {
        "type": "object",
        "properties": {
            "a": {"type": "integer", "minimum": -(2**31), "maximum": 2**31 - 1},
            "b": {"type": "integer", "minimum": -(2**31), "maximum": 2**31 - 1},
        },
        "required": ["a", "b"],
        "additionalProperties": False,
    }
    assert add.output_schema == {"type": "integer", "minimum": -(2**31), "maximum": 2**31 - 1}
    divide = by_name["calc_divide"]
    assert divide.description == "Calls divide of component calc"
    assert divide.output_schema == {"type": "number"}
    assert by_name["calc_danger_boom"].output_schema is None


def test_add(calc: LoadedComponent) -> None:
    result = calc.call("calc_add", {"a": 2, "b": 3}, timeout_s=5)
    assert result == CallToolResult(content=[TextContent("5")], structured_content=5)
    assert encode(result) == b'{"content":[{"type":"text","text":"5"}],"structuredContent":5,"isError":false}'


def test_result_ok_and_err(calc: LoadedComponent) -> None:
    ok = calc.call("calc_divide", {"a": 1, "b": 4}, timeout_s=5)
    assert ok == CallToolResult(content=[TextContent("0.25")], structured_content=0.25)
    err = calc.call("calc_divide", {"a": 1, "b": 0}, timeout_s=5)
    assert err.is_error and text(err) == "division by zero"
    assert err.structured_content is UNSET


def test_record_enum_option_list(calc: LoadedComponent) -> None:
    item = {"name": "héllo", "color": "green-blue", "count": 3, "tags": ["a", "b"]}
    result = calc.call("calc_echo_item", {"item": item}, timeout_s=5)
    assert not result.is_error
    assert result.structured_content == item
    assert text(result) == encode(item).decode()
    without_count = calc.call("calc_echo_item", {"item": {**item, "count": None}}, timeout_s=5)
    assert without_count.structured_content == {**item, "count": None}


def test_string_result_is_the_text_itself(calc: LoadedComponent) -> None:
    result = calc.call("calc_greet", {"name": "wörld"}, timeout_s=5)
    assert text(result) == "wörld"
    assert result.structured_content == "wörld"


def test_no_result_means_no_content(calc: LoadedComponent) -> None:
    assert calc.call("calc_danger_do_nothing", {}, timeout_s=5) == CallToolResult(content=[])


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"a": 3_000_000_000, "b": 1}, "invalid arguments: a: 3000000000 is out of range for s32"),
        ({"a": 1}, "invalid arguments: b: required argument is missing"),
        ({"a": 1, "b": 2, "c": 3}, "invalid arguments: c: unexpected argument"),
        ({"a": 1, "b": "2"}, "invalid arguments: b: expected integer, got string"),
        (
            {"z": 0, "b": "2"},
            "invalid arguments: a: required argument is missing; b: expected integer, got string; "
            "z: unexpected argument",
        ),
    ],
)
def test_invalid_arguments(calc: LoadedComponent, arguments: dict[str, object], message: str) -> None:
    result = calc.call("calc_add", arguments, timeout_s=5)
    assert result.is_error and text(result) == message


def test_invalid_nested_argument_names_the_field(calc: LoadedComponent) -> None:
    item = {"name": "x", "color": "red", "count": None, "tags": ["a", 1]}
    result = calc.call("calc_echo_item", {"item": item}, timeout_s=5)
    assert text(result) == "invalid arguments: item.tags[1]: expected string, got integer"


def test_trap_is_an_error_and_the_next_call_works(calc: LoadedComponent) -> None:
    result = calc.call("calc_danger_boom", {}, timeout_s=5)
    assert result.is_error
    assert text(result) == "guest trapped: wasm `unreachable` instruction executed"
    assert calc.call("calc_add", {"a": 1, "b": 1}, timeout_s=5).structured_content == 2


def test_timeout_interrupts_the_guest(calc: LoadedComponent) -> None:
    started = time.monotonic()
    result = calc.call("calc_danger_spin", {}, timeout_s=0.2)
    elapsed = time.monotonic() - started
    assert (
        result.is_error
        and text(result)
        == "timed out after 0.2 s, the time its caller's deadline left (the tool's own time limit is 30 s)"
    )
    assert 0.15 < elapsed < 2.0
    assert calc.call("calc_add", {"a": 1, "b": 1}, timeout_s=5).structured_content == 2


def test_unknown_tool(calc: LoadedComponent) -> None:
    with pytest.raises(UnknownTool, match="no tool 'calc_nope'"):
        calc.call("calc_nope", {}, timeout_s=5)
    with pytest.raises(KeyError):
        calc.call("calc_nope", {}, timeout_s=5)


def test_calls_from_many_threads(calc: LoadedComponent) -> None:
    def one(i: int) -> object:
        item = {"name": f"n{i}", "color": "red", "count": None if i % 2 else i, "tags": [str(i)]}
        result = calc.call("calc_echo_item", {"item": item}, timeout_s=5)
        return result.structured_content == item

    with ThreadPoolExecutor(max_workers=8) as pool:
        assert all(pool.map(one, range(400)))


def test_missing_import_is_named(engine_host: EngineHost, tmp_path: Path) -> None:
    path = tmp_path / "needs.wat"
    path.write_text(
        """(component
          (import "foo:bar/baz" (instance $b (export "f" (func))))
          (core module $m (func (export "g")))
          (core instance $i (instantiate $m))
          (func (export "g") (canon lift (core func $i "g"))))""",
        encoding="utf-8",
    )
    settings = ComponentSettings(name="needs", path=path)
    with pytest.raises(ComponentLoadError, match="imports `foo:bar/baz`, which the sandbox does not grant"):
        LoadedComponent.load(engine_host, settings, path, tmp_path)


def test_unreadable_and_invalid_files(engine_host: EngineHost, tmp_path: Path) -> None:
    missing = tmp_path / "missing.wasm"
    settings = ComponentSettings(name="bad", path=missing)
    with pytest.raises(ComponentLoadError, match="cannot read"):
        LoadedComponent.load(engine_host, settings, missing, tmp_path)
    junk = tmp_path / "junk.wasm"
    junk.write_bytes(b"\0asm junk")
    with pytest.raises(ComponentLoadError, match="not a valid component"):
        LoadedComponent.load(engine_host, settings, junk, tmp_path)


def test_short_interface_name() -> None:
    assert short_interface_name("docs:calc/math@1.0.0") == "math"
    assert short_interface_name("wasi:cli/run") == "run"
    assert short_interface_name("local") == "local"


# --- a real componentize-py guest (slow: ~6 s to build, ~9 s to compile) -------------------

PY_WIT = """package test:py;
world py {
  export boom: func() -> string;
  export spin: func() -> u32;
  export chatty: func(times: u32) -> u32;
}
"""

PY_APP = """import sys
import wit_world

class WitWorld(wit_world.WitWorld):
    def boom(self) -> str:
        raise ValueError("kaboom from python")

    def spin(self) -> int:
        while True:
            pass

    def chatty(self, times: int) -> int:
        for _ in range(times):
            print("to stderr", file=sys.stderr)
        return times
"""

# Loads the component from the compile cache, calls a stderr-writing tool and exits: the
# process must exit cleanly (wasmtime's I/O thread used to outlive the interpreter).
EXIT_SCRIPT = """import sys
from pathlib import Path
from schemas.config import ComponentSettings
from workers.sandbox.component import LoadedComponent
from workers.sandbox.engine import EngineHost
host = EngineHost()
wasm, cache = Path(sys.argv[1]), Path(sys.argv[2])
component = LoadedComponent.load(host, ComponentSettings(name="py", path=wasm), wasm, cache)
for _ in range(3):
    assert component.call("py_chatty", {"times": 2}, timeout_s=5).structured_content == 2
"""


@pytest.fixture(scope="module")
def python_guest(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("pyguest")
    (root / "wit").mkdir()
    (root / "wit" / "py.wit").write_text(PY_WIT, encoding="utf-8")
    (root / "app.py").write_text(PY_APP, encoding="utf-8")
    tool = Path(sys.executable).parent / "componentize-py"
    out = root / "py.wasm"
    subprocess.run(
        [str(tool), "-d", "wit", "-w", "py", "componentize", "app", "-o", str(out)],
        cwd=root,
        check=True,
        capture_output=True,
        timeout=300,
    )
    return out, root / "cache"


@pytest.fixture(scope="module")
def py(engine_host: EngineHost, python_guest: tuple[Path, Path]) -> LoadedComponent:
    wasm, cache = python_guest
    return LoadedComponent.load(engine_host, ComponentSettings(name="py", path=wasm), wasm, cache)


@pytest.mark.slow
def test_python_guest_tools_hide_internal_exports(py: LoadedComponent) -> None:
    assert sorted(t.name for t in py.tools) == ["py_boom", "py_chatty", "py_spin"]


@pytest.mark.slow
def test_python_exception_carries_its_traceback(py: LoadedComponent) -> None:
    result = py.call("py_boom", {}, timeout_s=5)
    assert result.is_error
    assert text(result).startswith("guest trapped: wasm `unreachable` instruction executed\nstderr:\n")
    assert "ValueError: kaboom from python" in text(result)
    assert py.call("py_chatty", {"times": 1}, timeout_s=5).structured_content == 1


@pytest.mark.slow
def test_python_guest_times_out(py: LoadedComponent) -> None:
    result = py.call("py_spin", {}, timeout_s=0.3)
    assert (
        result.is_error
        and text(result)
        == "timed out after 0.3 s, the time its caller's deadline left (the tool's own time limit is 30 s)"
    )


@pytest.mark.slow
def test_process_exits_cleanly_after_guest_output(py: LoadedComponent, python_guest: tuple[Path, Path]) -> None:
    wasm, cache = python_guest  # ``py`` compiled it into ``cache`` already
    for _ in range(3):
        done = subprocess.run(
            [sys.executable, "-c", EXIT_SCRIPT, str(wasm), str(cache)], capture_output=True, text=True, timeout=60
        )
        assert done.returncode == 0, done.stderr
        assert "panicked" not in done.stderr
