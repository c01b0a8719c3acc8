"""Building ``source`` components: real componentize-py, real files, real wasmtime."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from structlog.testing import capture_logs
from wasmtime import Engine, Store, WasiConfig
from wasmtime.component import Component, Instance, Linker

from schemas.config import load_settings
from workers.toolchains import componentize
from workers.toolchains.componentize import build_component
from workers.toolchains.errors import BuildError
from workers.toolchains.wit_docs import read_docs

EXAMPLES_DIR = Path(__file__).resolve().parents[3] / "examples"


def source_key(source_dir: Path, world: str) -> str:
    """The cache key of building ``source_dir`` against ``world`` (the built file's stem)."""
    # Only these tests need the key on its own; the build computes it from the same two steps.
    return componentize._build_key(componentize._componentize_inputs(source_dir), world, javascript=False)


@pytest.fixture(scope="session")
def wasm_engine() -> Engine:
    """A default-config Engine for compiling the built examples."""
    return Engine()


@pytest.fixture(scope="session")
def calc_component(wasm_engine: Engine, calc_wasm: Path) -> Component:
    """The calc example compiled by wasmtime (~5 s, once)."""
    return Component.from_file(wasm_engine, calc_wasm)


def _instantiate(engine: Engine, component: Component) -> tuple[Store, Instance]:
    linker = Linker(engine)
    linker.add_wasip2()
    store = Store(engine)
    # A store without WASI aborts the process at the guest's first WASI call; always set it.
    store.set_wasi(WasiConfig())
    return store, linker.instantiate(store, component)


def _call(store: Store, instance: Instance, name: str, *args: Any, interface: str | None = None) -> Any:
    parent = instance.get_export_index(store, interface) if interface else None
    index = instance.get_export_index(store, name, parent)
    assert index is not None, f"no export {name!r}"
    func = instance.get_func(store, index)
    assert func is not None
    result = func(store, *args)
    func.post_return(store)
    return result


def _copy_calc(tmp_path: Path) -> Path:
    target = tmp_path / "calc"
    shutil.copytree(EXAMPLES_DIR / "calc", target, ignore=shutil.ignore_patterns("__pycache__"))
    return target


@pytest.mark.slow
def test_cold_build_produces_a_component_wasmtime_accepts(
    calc_wasm: Path, calc_component: Component, cache_dir: Path, wasm_engine: Engine
) -> None:
    assert calc_wasm == cache_dir / "built" / f"{source_key(EXAMPLES_DIR / 'calc', 'calc')}.wasm"
    exports = set(calc_component.type.exports(wasm_engine))
    assert {"add", "divide"} <= exports
    # Nothing but the finished file is left behind: scratch directories are removed.
    assert [p.name for p in (cache_dir / "built").iterdir() if p.name.startswith(".")] == []


@pytest.mark.slow
def test_second_build_is_a_cache_hit(calc_wasm: Path, cache_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    before = calc_wasm.stat().st_mtime_ns

    def no_subprocess(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError(f"a cache hit must not run {args[0]!r}")

    monkeypatch.setattr(subprocess, "run", no_subprocess)
    with capture_logs() as logs:
        again = build_component(EXAMPLES_DIR / "calc", "calc", cache_dir)

    assert again == calc_wasm
    assert calc_wasm.stat().st_mtime_ns == before
    assert [entry["event"] for entry in logs] == ["build cache hit"]


def test_cache_key_follows_content_not_location(tmp_path: Path) -> None:
    original = source_key(EXAMPLES_DIR / "calc", "calc")
    copy = _copy_calc(tmp_path)
    assert source_key(copy, "calc") == original

    # Byte-code caches and dot-files are not part of the project.
    (copy / "__pycache__").mkdir()
    (copy / "__pycache__" / "app.cpython-314.pyc").write_bytes(b"junk")
    (copy / "stray.pyc").write_bytes(b"junk")
    (copy / ".editorconfig").write_text("root = true\n")
    assert source_key(copy, "calc") == original

    assert source_key(copy, "other-world") != original
    with (copy / "app.py").open("a") as app:
        app.write("\n# an edit\n")
    edited = source_key(copy, "calc")
    assert edited != original
    (copy / "wit" / "extra.wit").write_text("package toolbus:extra;\n")
    assert source_key(copy, "calc") not in {original, edited}


@pytest.mark.slow
def test_broken_app_raises_build_error_with_the_compiler_message(tmp_path: Path) -> None:
    copy = _copy_calc(tmp_path)
    (copy / "app.py").write_text(
        "import wit_world\n\nclass WitWorld(wit_world.WitWorld):\n    def add(self, a, b) -> int\n"
    )
    own_cache = tmp_path / "cache"

    with pytest.raises(BuildError) as caught:
        build_component(copy, "calc", own_cache)

    message = str(caught.value)
    assert str(copy) in message
    assert "SyntaxError" in message
    assert "stack backtrace" not in message.lower()
    assert [p.suffix for p in (own_cache / "built").iterdir()] == [".lock"]  # no build, no scratch left


def test_missing_source_raises_build_error(tmp_path: Path) -> None:
    with pytest.raises(BuildError, match="not a directory"):
        build_component(tmp_path / "nowhere", "calc", tmp_path / "cache")


def test_example_config_lists_the_examples_and_the_conformance_tools() -> None:
    settings = load_settings(EXAMPLES_DIR / "toolbus.toml")
    assert [(c.name, c.kind, c.source or c.path, c.world) for c in settings.components] == [
        ("calc", "component", EXAMPLES_DIR / "calc", "calc"),
        ("inventory", "component", EXAMPLES_DIR / "inventory", "inventory"),
        ("test", "component", EXAMPLES_DIR / "conformance", "test"),
        ("tasks", "component", EXAMPLES_DIR / "tasks", "tasks"),
        ("asking_tasks", "component", EXAMPLES_DIR / "asking_tasks", "asking-tasks"),
        ("json_schema_2020_12_tool", "command", EXAMPLES_DIR / "wat" / "echo.wat", None),
        ("echo_region", "command", EXAMPLES_DIR / "wat" / "echo.wat", None),
    ]


@pytest.mark.slow
def test_calc_runs(wasm_engine: Engine, calc_component: Component) -> None:
    store, instance = _instantiate(wasm_engine, calc_component)
    assert _call(store, instance, "add", 2, 3) == 5
    assert _call(store, instance, "add", 2**31 - 1, 1) == -(2**31)
    assert _call(store, instance, "divide", 1.0, 4.0) == 0.25
    # result<f64, string> comes back untagged: the error case is the string.
    assert _call(store, instance, "divide", 1.0, 0.0) == "division by zero"


@pytest.mark.slow
def test_inventory_runs(wasm_engine: Engine, inventory_wasm: Path) -> None:
    store, instance = _instantiate(wasm_engine, Component.from_file(wasm_engine, inventory_wasm))
    bolt = SimpleNamespace(name="M6 bolt", category="part", price=0.12, tags=["steel"])

    quote = _call(store, instance, "price-quote", bolt, 20)
    assert vars(quote) == {
        "name": "M6 bolt",
        "category": "part",
        "quantity": 20,
        "total": 2.16,
        "discounted": True,
        "tags": ["steel", "bulk"],
    }
    unpriced_tool = SimpleNamespace(name="hammer", category="tool", price=None, tags=[])
    quote = _call(store, instance, "price-quote", unpriced_tool, 50)
    assert (quote.total, quote.discounted, quote.tags) == (None, False, [])

    description = _call(store, instance, "describe", bolt, interface="toolbus:inventory/catalog")
    assert description == "M6 bolt (part, 0.12 EUR; steel)"


@pytest.mark.slow
def test_docs_are_carried_into_the_artifact(calc_wasm: Path, inventory_wasm: Path) -> None:
    calc = read_docs(calc_wasm.read_bytes())
    assert calc["world"] == "Integer and floating-point arithmetic, one tool per operation."
    assert calc["funcs"]["add"]["docs"].startswith("Add two 32-bit integers")
    assert calc["interfaces"] == {}

    inventory = read_docs(inventory_wasm.read_bytes())
    quote = inventory["funcs"]["price-quote"]
    assert quote["docs"].startswith("Quote `quantity` units")
    item = quote["params"]["item"]
    assert item["docs"] == "One line of the catalogue."
    assert item["fields"]["price"]["docs"].startswith("Unit price in euros")
    assert item["fields"]["category"]["cases"]["tool"]["docs"].startswith("A hand or power tool")
    assert quote["result"]["fields"]["discounted"]["docs"].startswith("True when")
    catalog = inventory["interfaces"]["toolbus:inventory/catalog"]
    assert catalog["docs"] == "Read-only questions about catalogue items."
    # `use`d types keep the docs of the type they alias.
    assert catalog["funcs"]["describe"]["params"]["item"]["docs"] == "One line of the catalogue."


def test_toolbus_wit_packages_key_componentize_builds_but_not_c_builds(tmp_path: Path) -> None:
    # toolbus's own WIT (schemas/wit) is an input of componentize-py builds only.
    from workers.toolchains import componentize as build

    (tmp_path / "app.c").write_text("int main(void) { return 0; }\n", encoding="utf-8")
    own = build.project_files(tmp_path)
    assert [relative for relative, _ in own] == ["app.c"]
    with_wit = build._componentize_inputs(tmp_path)
    assert {relative for relative, _ in with_wit} - {"app.c"} == {
        f"wit/deps/{path.relative_to(build.HOST_WIT_DIR).as_posix()}" for path in build.HOST_WIT_DIR.rglob("*.wit")
    }
