"""Attack the compile cache keyed by the Wasm's digest (s25, a97bd6b): wrong code must never run.

The key is now the digest ``Artifact.read`` computed rather than a hash of the bytes taken again.
A component rewritten in place (same path, same size, one byte changed) runs its new code, and
its old bytes again their own entry; WAT text and its binary share one. (An entry swapped for
another component's valid one is trusted, as before: the cache directory is trusted, and wasmtime
deserialises compiled code without checking what it was compiled from.)
"""

from __future__ import annotations

from pathlib import Path

import wasmtime

from schemas.config import ComponentSettings
from workers.sandbox.compile_cache import cache_key, wasm_digest
from workers.sandbox.component import LoadedComponent
from workers.sandbox.engine import EngineHost

ONE_WAT = """
(component
  (core module $M (func (export "one") (result i32) (i32.const {value})))
  (core instance $m (instantiate $M))
  (func (export "one") (result u32) (canon lift (core func $m "one")))
)
"""


def _load(engine_host: EngineHost, path: Path, cache_dir: Path) -> int:
    settings = ComponentSettings.model_validate({"name": "v", "path": path})
    loaded = LoadedComponent.load(engine_host, settings, path, cache_dir)
    result = loaded.call("v_one", {}, timeout_s=5).structured_content
    assert isinstance(result, int)
    return result


def test_a_component_rewritten_in_place_runs_its_new_code(engine_host: EngineHost, tmp_path: Path) -> None:
    path, cache = tmp_path / "v.wasm", tmp_path / "cache"
    first, second = wasmtime.wat2wasm(ONE_WAT.format(value=1)), wasmtime.wat2wasm(ONE_WAT.format(value=2))
    assert len(first) == len(second) and first != second  # one byte apart
    path.write_bytes(first)
    assert _load(engine_host, path, cache) == 1
    path.write_bytes(second)
    assert _load(engine_host, path, cache) == 2
    path.write_bytes(first)
    assert _load(engine_host, path, cache) == 1  # from the cache, its own entry
    assert len(list((cache / "compiled").glob("*.cwasm"))) == 2


def test_wat_text_and_its_binary_share_one_entry(engine_host: EngineHost, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    text, binary = tmp_path / "t.wat", tmp_path / "b.wasm"
    text.write_text(ONE_WAT.format(value=7))
    binary.write_bytes(wasmtime.wat2wasm(ONE_WAT.format(value=7)))
    assert _load(engine_host, text, cache) == 7
    assert _load(engine_host, binary, cache) == 7
    assert len(list((cache / "compiled").glob("*.cwasm"))) == 1


def test_the_key_is_the_digest_of_the_bytes_and_the_engine(engine_host: EngineHost) -> None:
    first, second = wasmtime.wat2wasm(ONE_WAT.format(value=1)), wasmtime.wat2wasm(ONE_WAT.format(value=2))
    keys = {
        cache_key(engine_host, wasm_digest(first)),
        cache_key(engine_host, wasm_digest(second)),
        cache_key(engine_host.variant(consume_fuel=True), wasm_digest(first)),
    }
    assert len(keys) == 3
    # A digest is "sha256:<hex>": no other digest string and fingerprint can spell the same key input.
    assert wasm_digest(first).startswith("sha256:") and "\0" not in engine_host.fingerprint
