"""The wasmtime Engine of a worker process and the epoch ticker that bounds guest time.

Guests stop through wasmtime's epoch interruption, never through Python: a daemon thread
bumps the engine's epoch every ``EPOCH_TICK_S`` and each Store gets a deadline in ticks.

Fuel metering is compiled into the code and costs ~20% of a componentize-py guest's speed
(measured: 145 → 178 ms for a 1M-iteration Python loop; ~4% for a tight WAT loop), so it is
not paid by every tool: a second Engine with fuel on is created only when a component asks
for fuel (``EngineHost.variant``). Both engines share the one ticker.
"""

from __future__ import annotations

import importlib.metadata
import platform
import threading
from types import TracebackType
from typing import Any

import wasmtime

from schemas.config import MAX_MEMORY_MIB
from workers.sandbox.wasmtime_adapter import hold_gil_in_short_calls, install_per_thread_scratch, use_pooling_allocator

EPOCH_TICK_S = 0.01
"""Epoch period: the resolution of guest timeouts (10 ms is ~free and fine-grained enough)."""

DEFAULT_FUEL = 10_000_000_000
"""Fuel given to each call when fuel metering is on (roughly seconds of guest work)."""

POOLED_INSTANCES = 1000
"""Component instances (and, separately, core instances, linear memories, tables) an engine may
hold live at once: wasmtime's own pooling defaults. A worker holds at most ``concurrency +
waiting_guests`` running guests plus its warm instances, far fewer. Each memory slot reserves
4 GiB of address space (no memory), so an engine reserves ~4 TiB of the 128 TiB a process has."""
POOLED_TABLE_ELEMENTS = 1_000_000
"""Elements of the largest table a guest may have (wasmtime's default, 20,000, is below what a
big JavaScript or Python guest can declare; each slot reserves 8 bytes per element)."""
POOLED_INSTANCE_BYTES = 16 << 20
"""Largest instance state (vmctx) of one core or component instance (wasmtime's default: 1 MiB)."""


class EngineHost:
    """Owns the Engine, its config flags and the epoch ticker thread."""

    def __init__(self, *, consume_fuel: bool = False) -> None:
        self.consume_fuel = consume_fuel
        config = wasmtime.Config()
        config.epoch_interruption = True
        # Fuel changes the compiled code, which is why it is part of the fingerprint.
        config.consume_fuel = consume_fuel
        # Every call instantiates afresh: the pooling allocator reuses reserved slots instead of
        # mapping and unmapping memories, tables and instance state per Store (a small component's
        # Store + instantiate + drop: ~25 -> ~12 us). It does not change the compiled code.
        use_pooling_allocator(
            config,
            instances=POOLED_INSTANCES,
            core_instances=POOLED_INSTANCES,
            memories=POOLED_INSTANCES,
            tables=POOLED_INSTANCES,
            max_memory_bytes=MAX_MEMORY_MIB << 20,
            table_elements=POOLED_TABLE_ELEMENTS,
            instance_bytes=POOLED_INSTANCE_BYTES,
        )
        self.engine: Any = wasmtime.Engine(config)
        self.fingerprint = engine_fingerprint(consume_fuel=consume_fuel)
        # Guests run on many threads: wasmtime-py's variant-lowering scratch set must be per
        # thread before any guest call lowers a variant. Here, not at import: every guest runs
        # on an engine host, and importing a module should change nothing.
        install_per_thread_scratch()
        hold_gil_in_short_calls()  # the Store setup and value conversion of a call keep the GIL
        # The host that owns the ticker, and every engine it ticks (one per fuel setting).
        self._root = self
        self._variants: dict[bool, EngineHost] = {consume_fuel: self}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._ticker: threading.Thread | None = None

    def variant(self, *, consume_fuel: bool) -> EngineHost:
        """This host, or its twin with the other fuel setting (created on first use, same ticker).

        Components and Stores of the two never mix: load a component into the variant whose
        Stores will run it.
        """
        root = self._root
        with root._lock:
            host = root._variants.get(consume_fuel)
            if host is None:
                host = EngineHost(consume_fuel=consume_fuel)
                host._root = root
                root._variants[consume_fuel] = host
            return host

    @property
    def running(self) -> bool:
        """True while the ticker thread runs (without it, timeouts never fire)."""
        ticker = self._root._ticker
        return ticker is not None and ticker.is_alive()

    def start(self) -> None:
        """Start the epoch ticker (idempotent; cheap when it runs, as on every call)."""
        if self.running:
            return
        root = self._root
        with root._lock:
            if self.running:
                return
            root._stop.clear()
            root._ticker = threading.Thread(target=root._tick, name="wasm-epoch-ticker", daemon=True)
            root._ticker.start()

    def stop(self) -> None:
        """Stop the epoch ticker and wait for it (idempotent)."""
        root = self._root
        with root._lock:
            ticker, root._ticker = root._ticker, None
            root._stop.set()
        if ticker is not None:
            ticker.join(timeout=1.0)

    def _tick(self) -> None:
        while not self._stop.wait(EPOCH_TICK_S):
            for host in tuple(self._variants.values()):
                host.engine.increment_epoch()

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
