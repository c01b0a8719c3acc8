"""Ahead-of-time compile cache: compiled components and core modules kept as ``.cwasm`` files.

Compiling a componentize-py component takes seconds; deserializing its ``.cwasm`` takes
milliseconds. Entries are keyed by the Wasm bytes and the engine fingerprint, since a
``.cwasm`` only loads into an Engine with the same wasmtime version and config. Core modules
(WASI command tools) get their own file suffix, so an entry is never read back as the other kind.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol, TypeVar

import structlog
import wasmtime
from wasmtime import component as wc

from workers.cache_lock import building
from workers.sandbox.engine import EngineHost
from workers.sandbox.errors import ComponentLoadError

log = structlog.get_logger(__name__)


class _Serializable(Protocol):
    def serialize(self) -> bytearray: ...


_Compiled = TypeVar("_Compiled", bound=_Serializable)


def read_wasm(path: Path) -> bytes:
    """Read a component as Wasm bytes; a ``.wat`` file is assembled from text.

    Raises:
        ComponentLoadError: the file cannot be read or the text is not valid WAT.
    """
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise unreadable(path, exc) from exc
    if path.suffix == ".wat":
        return wat_to_wasm(data.decode("utf-8", errors="replace"), label=str(path))
    return data


def unreadable(path: Path, exc: OSError) -> ComponentLoadError:
    """The error of a Wasm file that cannot be read, as every load reports it."""
    return ComponentLoadError(f"{path}: cannot read: {exc.strerror or exc}")


def wat_to_wasm(text: str, label: str = "<wat>") -> bytes:
    """Assemble WAT text into Wasm bytes.

    Raises:
        ComponentLoadError: the text is not valid WAT.
    """
    try:
        return bytes(wasmtime.wat2wasm(text))
    except wasmtime.WasmtimeError as exc:
        raise ComponentLoadError(f"{label}: not valid WAT: {exc}") from exc


def wasm_digest(wasm: bytes) -> str:
    """``sha256:<hex>`` of Wasm bytes: the identity of a component everywhere in toolbus."""
    return "sha256:" + hashlib.sha256(wasm).hexdigest()


def cache_key(engine_host: EngineHost, digest: str) -> str:
    """File stem of a component's compiled form: its digest (``wasm_digest``) plus the engine fingerprint.

    Keyed by the digest rather than the bytes: a load has the digest already, and hashing a
    componentize-py component's 18 MB a second time cost ~13 ms of every restart (issue 17).
    """
    return hashlib.sha256(f"{digest}\0{engine_host.fingerprint}".encode()).hexdigest()


WasmSource = bytes | str | Callable[[], bytes]
"""Wasm bytes, WAT text, or a function that reads the bytes: called only when there is something to
compile, so a cache hit with a known digest never reads them."""


def load_component(engine_host: EngineHost, wasm: WasmSource, cache_dir: Path, digest: str | None = None) -> Any:
    """Compile ``wasm`` or load its compiled form from ``cache_dir``.

    ``digest`` is ``wasm_digest`` of the bytes when the caller has it (else it is computed here). A
    cache entry that cannot be loaded (corrupt, truncated, other wasmtime) is replaced.

    Raises:
        ComponentLoadError: the bytes are not a valid component (or, read here, cannot be read).
    """
    engine = engine_host.engine
    source, key = _source_and_key(engine_host, wasm, digest)
    return _load_or_compile(
        cache_dir / "compiled" / f"{key}.cwasm",
        lambda path: wc.Component.deserialize_file(engine, path),
        lambda: wc.Component(engine, source()),
        "component",
    )


def load_module(
    engine_host: EngineHost, wasm: WasmSource, cache_dir: Path, digest: str | None = None
) -> wasmtime.Module:
    """Compile a core Wasm module or load its compiled form from ``cache_dir``.

    ``digest`` is ``wasm_digest`` of the bytes when the caller has it (else it is computed here). A
    cache entry that cannot be loaded (corrupt, truncated, other wasmtime) is replaced.

    Raises:
        ComponentLoadError: the bytes are not a valid core module (or, read here, cannot be read).
    """
    engine = engine_host.engine
    source, key = _source_and_key(engine_host, wasm, digest)
    return _load_or_compile(
        cache_dir / "compiled" / f"{key}.module.cwasm",
        lambda path: wasmtime.Module.deserialize_file(engine, path),
        lambda: wasmtime.Module(engine, source()),
        "core module",
    )


def _source_and_key(engine_host: EngineHost, wasm: WasmSource, digest: str | None) -> tuple[Callable[[], bytes], str]:
    if isinstance(wasm, str):
        wasm = wat_to_wasm(wasm)
    if isinstance(wasm, bytes):
        data = wasm
        source: Callable[[], bytes] = lambda: data  # noqa: E731
    else:
        source = wasm
    return source, cache_key(engine_host, digest or wasm_digest(source()))


def _load_or_compile(
    path: Path, deserialize: Callable[[str], _Compiled], compile_: Callable[[], _Compiled], kind: str
) -> _Compiled:
    """The compiled artifact at ``path`` if it loads, else ``compile_()`` written to ``path``."""
    with building(path):  # workers starting together compile it once (workers.cache_lock)
        if path.is_file():
            try:
                return deserialize(str(path))
            except wasmtime.WasmtimeError as exc:
                log.warning("compile cache entry unusable; recompiling", path=str(path), error=str(exc))
        try:
            compiled = compile_()
        except wasmtime.WasmtimeError as exc:
            raise ComponentLoadError(f"not a valid {kind}: {exc}") from exc
        try:
            write_atomically(path, bytes(compiled.serialize()))
        except (OSError, wasmtime.WasmtimeError) as exc:
            # The cache only saves time; a read-only or full disk must not stop the worker.
            log.warning("compile cache not written", path=str(path), error=str(exc))
        return compiled


def write_atomically(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file and a rename: readers never see a
    half-written file, and concurrent writers of the same content are harmless."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        # Readers either see the old entry or the whole new one, even with concurrent workers.
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
