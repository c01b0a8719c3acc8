"""The ahead-of-time compile cache, with real compiles and real .cwasm files."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import wasmtime
from wasmtime import component as wc

from workers.sandbox.compile_cache import cache_key, load_component, load_module, read_wasm, wasm_digest, wat_to_wasm
from workers.sandbox.engine import EngineHost
from workers.sandbox.errors import ComponentLoadError


def constant_wat(value: int, extra_funcs: int = 0) -> str:
    """A component exporting ``f() -> s32`` returning ``value`` (plus padding to slow compiles)."""
    padding = "\n".join(
        f'(func (export "pad{n}") (param i32) (result i32)'
        " (i32.mul (i32.add (local.get 0) (i32.const 7)) (i32.const 3)))"
        for n in range(extra_funcs)
    )
    return f"""(component
      (core module $m (func (export "f") (result i32) (i32.const {value})) {padding})
      (core instance $i (instantiate $m))
      (func (export "f") (result s32) (canon lift (core func $i "f"))))"""


def call_f(engine_host: EngineHost, component: wc.Component) -> int:
    store = wasmtime.Store(engine_host.engine)
    store.set_wasi(wasmtime.WasiConfig())
    store.set_epoch_deadline(1000)
    linker = wc.Linker(engine_host.engine)
    instance = linker.instantiate(store, component)
    func = instance.get_func(store, "f")
    assert func is not None
    value: int = func(store)
    return value


def cached_file(engine_host: EngineHost, wasm: bytes, cache_dir: Path) -> Path:
    return cache_dir / "compiled" / f"{cache_key(engine_host, wasm_digest(wasm))}.cwasm"


def test_first_load_writes_the_cache_and_second_load_reads_it(engine_host: EngineHost, tmp_path: Path) -> None:
    wasm = wat_to_wasm(constant_wat(1))
    component = load_component(engine_host, wasm, tmp_path)
    path = cached_file(engine_host, wasm, tmp_path)
    assert path.is_file()
    assert call_f(engine_host, component) == 1
    # No temp files left behind; the build lock stays (workers.cache_lock).
    assert sorted(p.name for p in path.parent.iterdir()) == [path.name, f"{path.name}.lock"]

    # Put another component's compiled code under this key: a load that returns it read the cache.
    other = wc.Component(engine_host.engine, constant_wat(2))
    path.write_bytes(bytes(other.serialize()))
    assert call_f(engine_host, load_component(engine_host, wasm, tmp_path)) == 2


def test_cache_hit_is_faster_than_compiling(engine_host: EngineHost, tmp_path: Path) -> None:
    wasm = wat_to_wasm(constant_wat(3, extra_funcs=3000))
    started = time.perf_counter()
    load_component(engine_host, wasm, tmp_path)
    compile_s = time.perf_counter() - started
    started = time.perf_counter()
    component = load_component(engine_host, wasm, tmp_path)
    cached_s = time.perf_counter() - started
    assert call_f(engine_host, component) == 3
    assert cached_s * 2 < compile_s, (cached_s, compile_s)


@pytest.mark.parametrize(
    "damage",
    [
        lambda data: b"not a cwasm file" * 10,
        lambda data: data[: len(data) // 2],
        lambda data: b"",
        lambda data: data[:200] + bytes(len(data) - 400) + data[-200:],
    ],
    ids=["garbage", "truncated", "empty", "zeroed"],
)
def test_corrupt_cache_file_is_recompiled_and_replaced(engine_host: EngineHost, tmp_path: Path, damage: object) -> None:
    wasm = wat_to_wasm(constant_wat(4))
    load_component(engine_host, wasm, tmp_path)
    path = cached_file(engine_host, wasm, tmp_path)
    good = path.read_bytes()
    path.write_bytes(damage(good))  # type: ignore[operator]
    assert call_f(engine_host, load_component(engine_host, wasm, tmp_path)) == 4
    # The entry was rewritten and loads again.
    assert call_f(engine_host, wc.Component.deserialize_file(engine_host.engine, str(path))) == 4


def test_wat_text_is_accepted(engine_host: EngineHost, tmp_path: Path) -> None:
    assert call_f(engine_host, load_component(engine_host, constant_wat(5), tmp_path)) == 5
    wat_file = tmp_path / "c.wat"
    wat_file.write_text(constant_wat(5), encoding="utf-8")
    assert read_wasm(wat_file) == wat_to_wasm(constant_wat(5))
    assert wasm_digest(read_wasm(wat_file)).startswith("sha256:")


def test_invalid_input_raises_load_error(engine_host: EngineHost, tmp_path: Path) -> None:
    with pytest.raises(ComponentLoadError, match="not valid WAT"):
        load_component(engine_host, "(component (oops))", tmp_path)
    with pytest.raises(ComponentLoadError, match="not a valid component"):
        load_component(engine_host, b"\0asm\x01\0\0\0", tmp_path)


def test_key_depends_on_engine_config() -> None:
    wasm = wat_to_wasm(constant_wat(6))
    plain, fueled = EngineHost(), EngineHost(consume_fuel=True)
    assert plain.fingerprint != fueled.fingerprint
    assert cache_key(plain, wasm_digest(wasm)) != cache_key(fueled, wasm_digest(wasm))
    assert cache_key(plain, wasm_digest(wasm)) == cache_key(EngineHost(), wasm_digest(wasm))


def test_unwritable_cache_dir_still_loads(engine_host: EngineHost, tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory", encoding="utf-8")
    component = load_component(engine_host, constant_wat(7), blocker)
    assert call_f(engine_host, component) == 7


CONSTANT_MODULE = '(module (func (export "f") (result i32) (i32.const {value})))'
"""A core module exporting ``f() -> i32`` (command modules are core modules)."""


def call_module_f(engine_host: EngineHost, module: wasmtime.Module) -> int:
    store = wasmtime.Store(engine_host.engine)
    store.set_epoch_deadline(1000)
    func = wasmtime.Instance(store, module, []).exports(store)["f"]
    assert isinstance(func, wasmtime.Func)
    value: int = func(store)
    return value


def test_core_modules_are_cached_in_their_own_entries(engine_host: EngineHost, tmp_path: Path) -> None:
    wasm = wat_to_wasm(CONSTANT_MODULE.format(value=8))
    assert call_module_f(engine_host, load_module(engine_host, wasm, tmp_path)) == 8
    path = tmp_path / "compiled" / f"{cache_key(engine_host, wasm_digest(wasm))}.module.cwasm"
    assert sorted(p.name for p in path.parent.iterdir()) == [path.name, f"{path.name}.lock"]

    # Another module's compiled code under this key: a load that returns it read the cache.
    path.write_bytes(bytes(wasmtime.Module(engine_host.engine, CONSTANT_MODULE.format(value=9)).serialize()))
    assert call_module_f(engine_host, load_module(engine_host, wasm, tmp_path)) == 9

    # A damaged entry is recompiled and replaced.
    path.write_bytes(b"garbage" * 10)
    assert call_module_f(engine_host, load_module(engine_host, wasm, tmp_path)) == 8
    assert call_module_f(engine_host, wasmtime.Module.deserialize_file(engine_host.engine, str(path))) == 8


def test_a_component_is_not_a_core_module(engine_host: EngineHost, tmp_path: Path) -> None:
    with pytest.raises(ComponentLoadError, match="not a valid core module"):
        load_module(engine_host, constant_wat(10), tmp_path)
    assert call_module_f(engine_host, load_module(engine_host, CONSTANT_MODULE.format(value=10), tmp_path)) == 10
