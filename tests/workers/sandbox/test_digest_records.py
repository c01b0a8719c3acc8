"""A large component's digest remembered by its stat: a restart skips the read, a changed file never does.

The components live where toolbus keeps what it builds (``CACHE_DIR/built``): only files in the cache
directory get records; a user's file elsewhere is hashed on every load (the last test).

Real files, real loads through wasmtime. The components are padded past ``RECORD_MIN_BYTES`` with
a custom section (wasmtime ignores it), and carry a docs section after the padding, so a load that
skips the read must still find the docs by seeking through the file.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import pytest
import wasmtime

from schemas.config import ComponentSettings
from workers.sandbox import digest_records
from workers.sandbox.compile_cache import wasm_digest
from workers.sandbox.component import LoadedComponent
from workers.sandbox.engine import EngineHost
from workers.sandbox.errors import ComponentLoadError
from workers.sandbox.wasi_command import LoadedCommand
from workers.toolchains.wit_docs import docs_section
from workers.wasm_sections import custom_section

SETTLE_S = 0.05


def component_wat(value: int) -> bytes:
    """A component exporting ``f() -> s32`` returning ``value``."""
    return bytes(
        wasmtime.wat2wasm(f"""(component
          (core module $m (func (export "f") (result i32) (i32.const {value})))
          (core instance $i (instantiate $m))
          (func (export "f") (result s32) (canon lift (core func $i "f"))))""")
    )


def constant_component(value: int, padding: int = digest_records.RECORD_MIN_BYTES) -> bytes:
    """``component_wat(value)`` padded past the record's threshold, with docs at the end."""
    docs = docs_section({"funcs": {"f": {"docs": f"Returns {value}."}}})
    return component_wat(value) + custom_section("padding", bytes(padding)) + docs


@pytest.fixture(autouse=True)
def quick_settling(monkeypatch: pytest.MonkeyPatch) -> None:
    """A file counts as settled 10 ms after its last change instead of 2 s: the rule is the same."""
    monkeypatch.setattr(digest_records, "SETTLED_NS", int(SETTLE_S / 5 * 1e9))


def write_settled(path: Path, wasm: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(wasm)
    time.sleep(SETTLE_S)
    return path


def load(engine_host: EngineHost, path: Path, cache_dir: Path) -> LoadedComponent:
    return LoadedComponent.load(engine_host, ComponentSettings(name="big", path=path), path, cache_dir)


def served(loaded: LoadedComponent) -> tuple[object, str, str]:
    """What the load serves: the call's answer, the tool's digest and its description."""
    [tool] = loaded.tools
    return loaded.call("big_f", {}, timeout_s=5).structured_content, tool.digest, tool.description


def reads_forbidden(monkeypatch: pytest.MonkeyPatch) -> None:
    def read(cache_dir: Path, path: Path) -> tuple[bytes, str]:
        raise AssertionError(f"{path} was read")

    monkeypatch.setattr(digest_records, "read", read)


def test_a_restart_loads_a_recorded_component_without_reading_it(
    engine_host: EngineHost, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    wasm = constant_component(1)
    path = write_settled(tmp_path / "cache" / "built" / "big.wasm", wasm)
    cache = tmp_path / "cache"
    first = served(load(engine_host, path, cache))
    assert first == (1, wasm_digest(wasm), "Returns 1.")

    with monkeypatch.context() as patch:
        reads_forbidden(patch)
        assert served(load(engine_host, path, cache)) == first  # its docs found by seeking

    # The compiled form gone (a wasmtime upgrade, a cleaned cache): the bytes are read after all.
    shutil.rmtree(cache / "compiled")
    assert served(load(engine_host, path, cache)) == first


def test_a_fresh_file_gets_no_record(engine_host: EngineHost, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Hashed within the settling time of its last change, a file may still change in the same tick."""
    monkeypatch.setattr(digest_records, "SETTLED_NS", 3_600 * 10**9)
    path = tmp_path / "cache" / "built" / "big.wasm"
    path.parent.mkdir(parents=True)
    path.write_bytes(constant_component(1))
    cache = tmp_path / "cache"
    load(engine_host, path, cache)
    assert digest_records.recall(cache, path) is None
    assert not (cache / "digests").exists()


def rewrite_in_place(path: Path, wasm: bytes) -> None:
    """Same inode, same size, and the old modification time put back."""
    before = path.stat()
    with path.open("r+b") as file:
        file.write(wasm)
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))


def replace_by_rename(path: Path, wasm: bytes) -> None:
    """A new inode, the same size, the old modification time."""
    before = path.stat()
    new = path.with_suffix(".new")
    new.write_bytes(wasm)
    os.utime(new, ns=(before.st_atime_ns, before.st_mtime_ns))
    new.replace(path)


@pytest.mark.parametrize("change", [rewrite_in_place, replace_by_rename])
def test_a_changed_component_is_loaded_as_it_is_now(engine_host: EngineHost, tmp_path: Path, change: object) -> None:
    """An attacker (or a careless deploy) swaps the bytes and keeps size and mtime: ctime gives it away."""
    path = write_settled(tmp_path / "cache" / "built" / "big.wasm", constant_component(1))
    cache = tmp_path / "cache"
    load(engine_host, path, cache)
    assert digest_records.recall(cache, path) is not None

    new = constant_component(2)
    before = path.stat()
    change(path, new)  # type: ignore[operator]
    after = path.stat()
    assert (after.st_size, after.st_mtime_ns) == (before.st_size, before.st_mtime_ns)
    assert digest_records.recall(cache, path) is None
    assert served(load(engine_host, path, cache)) == (2, wasm_digest(new), "Returns 2.")


def test_a_damaged_or_foreign_record_is_not_trusted(engine_host: EngineHost, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    one = write_settled(tmp_path / "cache" / "built" / "one.wasm", constant_component(1))
    two = write_settled(tmp_path / "cache" / "built" / "two.wasm", constant_component(2))
    load(engine_host, one, cache)
    load(engine_host, two, cache)
    [record_one, record_two] = [digest_records._record_path(cache, p) for p in (one, two)]

    record_two.write_bytes(record_one.read_bytes())  # another file's record under this file's name
    assert digest_records.recall(cache, two) is None
    for damaged in (b"", b"{", b'{"path": 1}', record_one.read_bytes()[:-5]):
        record_one.write_bytes(damaged)
        assert digest_records.recall(cache, one) is None
    assert served(load(engine_host, one, cache))[0] == 1


def test_a_record_that_disagrees_with_the_bytes_fails_the_load(engine_host: EngineHost, tmp_path: Path) -> None:
    """A record that lies about a file (it cannot, short of a clock set back) costs the load, never a wrong tool."""
    path = write_settled(tmp_path / "cache" / "built" / "big.wasm", constant_component(1))
    cache = tmp_path / "cache"
    load(engine_host, path, cache)
    record = digest_records._record_path(cache, path)
    record.write_bytes(record.read_bytes().replace(wasm_digest(constant_component(1)).encode(), b"sha256:" + b"0" * 64))
    with pytest.raises(ComponentLoadError, match="changed while it was loading"):
        load(engine_host, path, cache)  # no compiled form under the lying digest: the bytes are read and disagree


def test_a_read_only_cache_costs_the_record_not_the_load(engine_host: EngineHost, tmp_path: Path) -> None:
    path = write_settled(tmp_path / "cache" / "built" / "big.wasm", constant_component(1))
    cache = tmp_path / "cache"
    (cache / "digests").write_text("not a directory")
    assert served(load(engine_host, path, cache))[0] == 1
    assert digest_records.recall(cache, path) is None


BIG_COMMAND_WAT = '(module (memory (export "memory") 1) (func (export "_start")))'


def load_command(engine_host: EngineHost, path: Path, cache_dir: Path) -> LoadedCommand:
    settings = ComponentSettings(name="cmd", path=path, kind="command", input_schema={"type": "object"})
    return LoadedCommand.load(engine_host, settings, path, cache_dir)


def test_a_recorded_command_loads_without_reading_and_a_component_stays_refused(
    engine_host: EngineHost, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A command's kind is checked from its first bytes: read from the file when the rest is not."""
    padding = custom_section("padding", bytes(digest_records.RECORD_MIN_BYTES))
    cache = tmp_path / "cache"
    built = tmp_path / "cache" / "built"
    command = write_settled(built / "cmd.wasm", bytes(wasmtime.wat2wasm(BIG_COMMAND_WAT)) + padding)
    component = write_settled(built / "component.wasm", constant_component(1))
    digest = load_command(engine_host, command, cache).tools[0].digest
    with pytest.raises(ComponentLoadError, match="is a component, not a core module"):
        load_command(engine_host, component, cache)
    assert digest_records.recall(cache, component) is not None  # hashed, recorded, then refused

    reads_forbidden(monkeypatch)
    assert load_command(engine_host, command, cache).tools[0].digest == digest
    with pytest.raises(ComponentLoadError, match="is a component, not a core module"):
        load_command(engine_host, component, cache)


def test_a_file_outside_the_cache_is_hashed_on_every_load(
    engine_host: EngineHost, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A user's own file may change without its times moving (a write through a shared writable
    mapping: tests/workers/sandbox/test_digest_record_attacks.py), so it gets no record, also when a
    symlink in the cache points at it."""
    path = write_settled(tmp_path / "mine" / "big.wasm", constant_component(1))
    link = tmp_path / "cache" / "built" / "link.wasm"
    link.parent.mkdir(parents=True)
    link.symlink_to(path)
    cache = tmp_path / "cache"
    for configured in (path, link, path):
        assert served(load(engine_host, configured, cache))[0] == 1
    assert not (cache / "digests").exists()
