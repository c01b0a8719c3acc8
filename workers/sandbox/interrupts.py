"""Stopping a running guest: at its wall-clock deadline, or when its call is cancelled.

Each Store's epoch deadline is one tick (10 ms) ahead, always; when it is reached wasmtime calls
``Interrupts.on_tick`` (through the C API's epoch-deadline callback, which wasmtime-py does not
wrap), which either grants one more tick or ends the guest with a trap naming the reason. So a
guest is stopped within a tick of its deadline — as with a plain epoch deadline — and also within
a tick of a cancellation, which a plain deadline cannot do: a Store's deadline can only be set
from the thread running it. The check is a few attribute reads, once per 10 ms of guest time.
"""

from __future__ import annotations

import math
import time
from typing import Any, Protocol

import wasmtime

from workers.sandbox.wasmtime_adapter import (
    CONTINUE,
    callback_data,
    delete_store_holding_gil,
    epoch_callback,
    set_epoch_deadline_callback,
    trap,
)

TIMED_OUT = "toolbus: deadline reached"
"""The root cause of the trap that ends a guest at its deadline."""
CANCELLED = "toolbus: call cancelled"
"""The root cause of the trap that ends a guest whose call was cancelled."""


class CancelSignal(Protocol):
    """What says a call was cancelled (``CallContext.cancelled``; a ``threading.Event`` will do)."""

    def is_set(self) -> bool: ...


class Interrupts:
    """When one Store's guest must stop. Re-armed before each call that uses the Store."""

    __slots__ = ("cancelled", "deadline")

    def __init__(self) -> None:
        self.deadline = math.inf
        """``time.monotonic()`` value at which the guest is stopped."""
        self.cancelled: CancelSignal | None = None

    def install(self, store: wasmtime.Store) -> None:
        """Make ``store`` consult these interrupts every epoch tick (once, at creation).

        The Store must keep them alive (``InterruptibleStore`` does): wasmtime holds only their address.
        """
        set_epoch_deadline_callback(store, _ON_TICK, self)

    def arm(self, store: wasmtime.Store, timeout_s: float, cancelled: CancelSignal | None) -> None:
        """Stop the guest ``timeout_s`` from now, or as soon as ``cancelled`` is set."""
        self.deadline = time.monotonic() + timeout_s
        self.cancelled = cancelled
        # The deadline must exist before instantiate: guests run code while instantiating.
        store.set_epoch_deadline(1)

    def on_tick(self, delta: Any, kind: Any) -> int:
        """Trap the guest if it must stop, else grant it one more tick."""
        cancelled = self.cancelled
        if cancelled is not None and cancelled.is_set():
            return trap(CANCELLED)
        if time.monotonic() >= self.deadline:
            return trap(TIMED_OUT)
        delta[0] = 1
        kind[0] = CONTINUE
        return 0


def _on_tick(_context: Any, data: Any, delta: Any, kind: Any) -> int:
    interrupts: Interrupts = callback_data(data)
    return interrupts.on_tick(delta, kind)


_ON_TICK = epoch_callback(_on_tick)
"""The one C callback of every Store (its ``data`` names the Store's ``Interrupts``): making a
ctypes callback per Store cost ~10 µs of each fresh-instance call."""


class InterruptibleStore(wasmtime.Store):
    """A Store that carries its ``Interrupts`` (and so keeps them alive while wasmtime may call back)."""

    def __init__(self, engine: wasmtime.Engine) -> None:
        super().__init__(engine)
        self.interrupts = Interrupts()
        self.interrupts.install(self)
        self.quiet_drop = False
        """Set by whoever made it when the Store has no output callbacks and no preopened
        directories: it is then freed without letting go of the GIL (``delete_store_holding_gil``)."""

    def _delete(self, ptr: Any) -> None:
        if self.quiet_drop:
            delete_store_holding_gil(ptr)
            self._Store__context = None  # what wasmtime-py's own _delete clears: the Store is closed
        else:
            super()._delete(ptr)
