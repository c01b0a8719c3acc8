"""A tool source's Wasm as every load starts from it: digest, limits, engine, compiled form.

Both tool kinds (``workers.sandbox.component``, ``workers.sandbox.wasi_command``) begin a load
with the same steps, written once here: the worker's limits merged with the source's own, the
engine variant those limits need (fuel or not), the file's digest, and a compile (or
compile-cache hit) whose error names the source. A large file whose digest is on record
(``workers.sandbox.digest_records``) is not read at all unless the compile cache misses: a
restart then loads an 18 MB component's compiled form without reading or hashing its Wasm.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, TypeVar

from schemas.config import ComponentSettings, LimitsSettings
from workers.sandbox import digest_records
from workers.sandbox.compile_cache import read_wasm, unreadable, wasm_digest
from workers.sandbox.engine import EngineHost
from workers.sandbox.errors import ComponentLoadError

Compiled = TypeVar("Compiled")


@dataclass
class Artifact:
    """One tool source's Wasm, identified and ready to compile on the engine its limits need."""

    engine_host: EngineHost
    """The engine variant the source runs on (with fuel metering when its limits set fuel)."""
    limits: LimitsSettings
    """The worker's limits with the fields the source gives replaced (``LimitsSettings.merged``)."""
    path: Path
    size: int
    digest: str
    """``sha256:<hex>`` of the Wasm (``compile_cache.wasm_digest``)."""
    cache_dir: Path
    _wasm: bytes | None = field(default=None, repr=False)
    """The bytes, once read (None: the digest came from its record and nothing needed them yet)."""
    _stat: os.stat_result | None = field(default=None, repr=False)
    """The file as its record matched it, when the bytes were not read."""

    @classmethod
    def read(
        cls,
        engine_host: EngineHost,
        settings: ComponentSettings,
        wasm_path: Path,
        cache_dir: Path,
        defaults: LimitsSettings | None,
    ) -> Artifact:
        """Identify ``wasm_path`` for the source ``settings``, with ``defaults`` as the worker's limits.

        Raises:
            ComponentLoadError: the file cannot be read (or, for ``.wat``, parsed), or the worker's
                limits with the source's own break a rule (``LimitsSettings``).
        """
        try:
            limits = (defaults or LimitsSettings()).merged(settings.limits)
        except ValueError as exc:  # each half valid alone, not merged (inline with a long timeout_s)
            raise ComponentLoadError(f"component {settings.name!r}: limits: {exc}") from exc
        engine_host = engine_host.variant(consume_fuel=limits.fuel is not None)
        if wasm_path.suffix == ".wat":  # text: the Wasm is what it assembles to, never a file's bytes
            wasm = read_wasm(wasm_path)
            return cls(engine_host, limits, wasm_path, len(wasm), wasm_digest(wasm), cache_dir, wasm)
        recalled = digest_records.recall(cache_dir, wasm_path)
        if recalled is not None:
            digest, stat = recalled
            return cls(engine_host, limits, wasm_path, stat.st_size, digest, cache_dir, _stat=stat)
        wasm, digest = digest_records.read(cache_dir, wasm_path)
        return cls(engine_host, limits, wasm_path, len(wasm), digest, cache_dir, wasm)

    def wasm(self) -> bytes:
        """The Wasm bytes, read now if the load has not needed them yet.

        Raises:
            ComponentLoadError: the file cannot be read, or no longer has the recorded digest.
        """
        if self._wasm is None:
            wasm, digest = digest_records.read(self.cache_dir, self.path)
            if digest != self.digest:
                raise ComponentLoadError(f"{self.path}: changed while it was loading; load it again")
            self._wasm = wasm
        return self._wasm

    @contextmanager
    def opened(self) -> Iterator[bytes | BinaryIO]:
        """The bytes if they were read, else the file open for reading: for reading a part of the
        Wasm (a custom section) without reading it whole.

        Raises:
            ComponentLoadError: the file cannot be opened, or is no longer the one recorded.
        """
        if self._wasm is not None or self._stat is None:
            yield self.wasm()
            return
        try:
            file = self.path.open("rb")
        except OSError as exc:
            raise unreadable(self.path, exc) from exc
        with file:
            self._check_unchanged(file)
            yield file
            self._check_unchanged(file)  # and not written to in place while it was read

    def _check_unchanged(self, file: BinaryIO) -> None:
        assert self._stat is not None
        if not digest_records.same_file(os.fstat(file.fileno()), self._stat):
            raise ComponentLoadError(f"{self.path}: changed while it was loading; load it again")

    def compile(
        self, compile: Callable[[EngineHost, Callable[[], bytes], Path, str], Compiled], label: str
    ) -> Compiled:
        """``compile`` the Wasm (given with its digest) through the compile cache.

        Raises:
            ComponentLoadError: it does not compile; the message starts with ``label``.
        """
        try:
            # hashed once (or recalled) in read(); the bytes are read only if the cache misses
            return compile(self.engine_host, self.wasm, self.cache_dir, self.digest)
        except ComponentLoadError as exc:
            raise ComponentLoadError(f"{label}: {exc}") from exc
