"""A tool source's Wasm as every load starts from it: bytes, digest, limits, engine, compiled form.

Both tool kinds (``workers.sandbox.component``, ``workers.sandbox.wasi_command``) begin a load
with the same steps, written once here: the worker's limits merged with the source's own, the
engine variant those limits need (fuel or not), the bytes read from disk and their digest, and
a compile (or compile-cache hit) whose error names the source.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from schemas.config import ComponentSettings, LimitsSettings
from workers.sandbox.compile_cache import read_wasm, wasm_digest
from workers.sandbox.engine import EngineHost
from workers.sandbox.errors import ComponentLoadError

Compiled = TypeVar("Compiled")


@dataclass(frozen=True)
class Artifact:
    """One tool source's Wasm, read and ready to compile on the engine its limits need."""

    engine_host: EngineHost
    """The engine variant the source runs on (with fuel metering when its limits set fuel)."""
    limits: LimitsSettings
    """The worker's limits with the fields the source gives replaced (``LimitsSettings.merged``)."""
    wasm: bytes
    digest: str
    """``sha256:<hex>`` of ``wasm`` (``compile_cache.wasm_digest``)."""

    @classmethod
    def read(
        cls, engine_host: EngineHost, settings: ComponentSettings, wasm_path: Path, defaults: LimitsSettings | None
    ) -> Artifact:
        """Read ``wasm_path`` for the source ``settings``, with ``defaults`` as the worker's limits.

        Raises:
            ComponentLoadError: the file cannot be read (or, for ``.wat``, parsed), or the worker's
                limits with the source's own break a rule (``LimitsSettings``).
        """
        try:
            limits = (defaults or LimitsSettings()).merged(settings.limits)
        except ValueError as exc:  # each half valid alone, not merged (inline with a long timeout_s)
            raise ComponentLoadError(f"component {settings.name!r}: limits: {exc}") from exc
        engine_host = engine_host.variant(consume_fuel=limits.fuel is not None)
        wasm = read_wasm(wasm_path)
        return cls(engine_host, limits, wasm, wasm_digest(wasm))

    def compile(
        self, compile: Callable[[EngineHost, bytes, Path, str], Compiled], cache_dir: Path, label: str
    ) -> Compiled:
        """``compile`` the Wasm (given with its digest) through the compile cache in ``cache_dir``.

        Raises:
            ComponentLoadError: it does not compile; the message starts with ``label``.
        """
        try:
            return compile(self.engine_host, self.wasm, cache_dir, self.digest)  # hashed once, in read()
        except ComponentLoadError as exc:
            raise ComponentLoadError(f"{label}: {exc}") from exc
