"""Wasm costs of one call's building blocks, for a componentize-py component and a small one.

Measured with toolbus's own APIs, in a process of its own (``python -m bench.wasm_costs``), so
that the bench's orchestrator never hosts a wasmtime Engine or its epoch ticker thread:

- **cold compile**: ``workers.compile_cache.load_component`` into an empty cache directory
  (compile, serialize, write the ``.cwasm``), as a worker's first start does;
- **cached load**: the same call against the warm cache (deserialize the ``.cwasm``);
- **component load**: ``LoadedComponent.load`` from the warm cache (also derives the tools and
  instantiates once to check the imports), what a worker restart pays per component;
- **fresh instance**: what every call pays before the guest runs, in raw wasmtime exactly as
  ``LoadedComponent`` does it: a new Store with WASI (stderr captured) and an epoch deadline
  (``store``), then ``Linker.instantiate`` (``instantiate``);
- **guest call**: the exported function called on a live instance (plus ``post_return``);
- **LoadedComponent.call**: the whole per-call path a worker thread runs (bind the JSON
  arguments, fresh Store, instantiate, call, convert the result).

The componentize-py component is ``examples/calc``, built with ``workers.build.build_component``
(cached by content hash; a first run builds it in about 6 s).
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final

from bench.processes import REPO
from bench.stats import summary
from bus.logs import configure_logging

CALC_SOURCE: Final = REPO / "examples" / "calc"
TESTKIT_WAT: Final = REPO / "examples" / "wat" / "testkit.wat"
CALL_TIMEOUT_S: Final = 30.0
WARM_CALLS: Final = 2000


def _timed(fn: Callable[[], Any]) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def _component_costs(
    name: str, kind: str, wasm_path: Path, cache_dir: Path, cold_compiles: int, instantiations: int
) -> dict[str, Any]:
    import wasmtime
    from wasmtime import component as wc

    from schemas.config import ComponentSettings
    from workers.compile_cache import load_component, read_wasm
    from workers.component import LoadedComponent
    from workers.engine import EngineHost

    engine_host = EngineHost()
    engine_host.start()
    try:
        wasm = read_wasm(wasm_path)
        cold = []
        for _ in range(cold_compiles):
            with tempfile.TemporaryDirectory(prefix="bench-cold-") as empty:
                cold.append(_timed(lambda: load_component(engine_host, wasm, Path(empty))))
        load_component(engine_host, wasm, cache_dir)  # make sure the real cache holds it
        component = load_component(engine_host, wasm, cache_dir)
        cached = [_timed(lambda: load_component(engine_host, wasm, cache_dir)) for _ in range(20)]
        settings = ComponentSettings(name=name, path=wasm_path)
        loads = [_timed(lambda: LoadedComponent.load(engine_host, settings, wasm_path, cache_dir)) for _ in range(5)]

        linker = wc.Linker(engine_host.engine)
        linker.add_wasip2()
        index = component.get_export_index("add")
        ticks = engine_host.deadline_ticks(CALL_TIMEOUT_S)
        stderr = bytearray()
        store_s, instantiate_s, first_call_s = [], [], []
        gc.collect()
        for _ in range(instantiations):
            t0 = time.perf_counter()
            store = wasmtime.Store(engine_host.engine)
            wasi = wasmtime.WasiConfig()
            wasi.stderr_custom = stderr.extend
            store.set_wasi(wasi)
            store.set_epoch_deadline(ticks)
            t1 = time.perf_counter()
            instance = linker.instantiate(store, component)
            t2 = time.perf_counter()
            func = instance.get_func(store, index)
            if func is None or func(store, 2, 3) != 5:
                raise RuntimeError(f"{name}: add(2, 3) did not return 5")
            func.post_return(store)
            t3 = time.perf_counter()
            store.close()
            store_s.append(t1 - t0)
            instantiate_s.append(t2 - t1)
            first_call_s.append(t3 - t2)
        fresh_s = [a + b for a, b in zip(store_s, instantiate_s, strict=True)]

        store = wasmtime.Store(engine_host.engine)
        store.set_wasi(wasmtime.WasiConfig())
        store.set_epoch_deadline(ticks)
        warm_func = linker.instantiate(store, component).get_func(store, index)
        if warm_func is None:
            raise RuntimeError(f"{name}: no export add")
        warm_s = []
        for _ in range(WARM_CALLS):
            t0 = time.perf_counter()
            warm_func(store, 2, 3)
            warm_func.post_return(store)
            warm_s.append(time.perf_counter() - t0)
        store.close()

        loaded = LoadedComponent.load(engine_host, settings, wasm_path, cache_dir)
        tool = f"{name}_add"
        assert loaded.call(tool, {"a": 2, "b": 3}, CALL_TIMEOUT_S).structured_content == 5
        call_s = [_timed(lambda: loaded.call(tool, {"a": 2, "b": 3}, CALL_TIMEOUT_S)) for _ in range(instantiations)]
    finally:
        engine_host.stop()
    ms = 1000.0
    return {
        "component": name,
        "kind": kind,
        "path": str(wasm_path),
        "wasm_bytes": len(wasm),
        "cold_compile_ms": summary(cold, ms),
        "cached_load_ms": summary(cached, ms),
        "component_load_ms": summary(loads, ms),
        "store_ms": summary(store_s, ms),
        "instantiate_ms": summary(instantiate_s, ms),
        "fresh_instance_ms": summary(fresh_s, ms),
        "first_call_ms": summary(first_call_s, ms),
        "warm_call_ms": summary(warm_s, ms),
        "loaded_call_ms": summary(call_s, ms),
    }


def measure_in_process(cold_compiles: int, instantiations: int) -> dict[str, Any]:
    """Build (or find) the componentize-py component, then measure both components."""
    from schemas.config import default_cache_dir
    from workers.build import build_component, source_key

    cache_dir = default_cache_dir()
    was_built = (cache_dir / "built" / f"{source_key(CALC_SOURCE, 'calc')}.wasm").is_file()
    started = time.perf_counter()
    calc_path = build_component(CALC_SOURCE, "calc", cache_dir)
    build_s = time.perf_counter() - started
    calc = _component_costs("calc", "componentize-py", calc_path, cache_dir, cold_compiles, instantiations)
    calc["build"] = {"cached": was_built, "seconds": round(build_s, 3)}
    small = _component_costs("kit", "WAT testkit", TESTKIT_WAT, cache_dir, max(3, cold_compiles), instantiations * 10)
    return {"cache_dir": str(cache_dir), "components": [calc, small]}


def run(cold_compiles: int, instantiations: int) -> dict[str, Any]:
    """Measure in a child process; return its JSON.

    Raises:
        RuntimeError: the child failed (its stderr is in the message).
    """
    argv = [sys.executable, "-m", "bench.wasm_costs", str(cold_compiles), str(instantiations)]
    done = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=900, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"wasm costs failed ({done.returncode}):\n{done.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description="Wasm cost measurements; prints one JSON line")
    parser.add_argument("cold_compiles", type=int)
    parser.add_argument("instantiations", type=int)
    args = parser.parse_args()
    configure_logging("json", level=logging.WARNING)  # structlog would otherwise print on stdout
    print(json.dumps(measure_in_process(args.cold_compiles, args.instantiations)), flush=True)


if __name__ == "__main__":
    main()
