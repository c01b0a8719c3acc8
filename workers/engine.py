"""The one wasmtime Engine of a worker process and the epoch ticker that bounds guest time.

Guests stop through wasmtime's epoch interruption, never through Python: a daemon thread
bumps the engine's epoch every ``EPOCH_TICK_S`` and each Store gets a deadline in ticks.
"""

from __future__ import annotations

import importlib.metadata
import math
import platform
import threading
from types import TracebackType
from typing import Any

import wasmtime

EPOCH_TICK_S = 0.01
"""Epoch period: the resolution of guest timeouts (10 ms is ~free and fine-grained enough)."""

DEFAULT_FUEL = 10_000_000_000
"""Fuel given to each call when fuel metering is on (roughly seconds of guest work)."""


class EngineHost:
    """Owns the Engine, its config flags and the epoch ticker thread."""

    def __init__(self, *, consume_fuel: bool = False) -> None:
        self.consume_fuel = consume_fuel
        config = wasmtime.Config()
        config.epoch_interruption = True
        # Fuel costs ~25% of guest speed, so it is off unless asked for; it changes the
        # compiled code, which is why it is part of the fingerprint.
        config.consume_fuel = consume_fuel
        self.engine: Any = wasmtime.Engine(config)
        self.fingerprint = engine_fingerprint(consume_fuel=consume_fuel)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._ticker: threading.Thread | None = None

    @property
    def running(self) -> bool:
        """True while the ticker thread runs (without it, timeouts never fire)."""
        return self._ticker is not None and self._ticker.is_alive()

    def start(self) -> None:
        """Start the epoch ticker (idempotent)."""
        with self._lock:
            if self.running:
                return
            self._stop.clear()
            self._ticker = threading.Thread(target=self._tick, name="wasm-epoch-ticker", daemon=True)
            self._ticker.start()

    def stop(self) -> None:
        """Stop the epoch ticker and wait for it (idempotent)."""
        with self._lock:
            ticker, self._ticker = self._ticker, None
            self._stop.set()
        if ticker is not None:
            ticker.join(timeout=1.0)

    def deadline_ticks(self, timeout_s: float) -> int:
        """Epoch ticks for ``timeout_s``, plus one because the current tick is already partly gone."""
        return max(1, math.ceil(timeout_s / EPOCH_TICK_S)) + 1

    def _tick(self) -> None:
        while not self._stop.wait(EPOCH_TICK_S):
            self.engine.increment_epoch()

    def __enter__(self) -> EngineHost:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def engine_fingerprint(*, consume_fuel: bool) -> str:
    """Identity of compiled code: a ``.cwasm`` only loads into an Engine with the same one."""
    version = importlib.metadata.version("wasmtime")
    return f"wasmtime-{version};{platform.machine()};epoch=1;fuel={int(consume_fuel)}"
