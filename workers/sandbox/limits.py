"""The one Store factory, and the limits every Store is bound by.

Every Store a worker creates comes from ``sandbox_store``, which gives it WASI and its
interrupts (deadline and cancellation, see ``workers.sandbox.interrupts``) before the caller can touch
it: a Store without WASI aborts the whole process at the guest's first WASI call, and one
without an epoch deadline traps at once (or, with a stale one, runs forever). Memory and fuel
limits are set in the same place, so no call path can forget them.
"""

from __future__ import annotations

import re
import time

import wasmtime

from schemas.config import LimitsSettings
from workers.sandbox.engine import DEFAULT_FUEL, EngineHost
from workers.sandbox.interrupts import CANCELLED, TIMED_OUT, CancelSignal, InterruptibleStore

MIB = 1 << 20
LOAD_CHECK_TIMEOUT_S = 10.0
"""Time allowed for the trial instantiation at load (componentize-py guests need ~1 ms)."""

OUT_OF_MEMORY_MARKERS = ("MemoryError", "out of memory", "memory allocation of")
"""How guests report a failed allocation on stderr (CPython, C/WAT by convention, Rust).

The host cannot see a refused ``memory.grow``: wasmtime's store limiter returns -1 to the
guest and tells nobody, and what the guest does next (a trap, an exception) is its own
business. A trap whose stderr says one of these is reported as a memory-limit hit.
"""

_INSTANTIATE_OVER_LIMIT = re.compile(r"memory minimum size of \d+ pages exceeds memory limits")
REALLOC_BEYOND_MEMORY = "realloc return: beyond end of memory"
"""wasmtime's refusal of the pointer a guest's ``realloc`` gave for a value passed in (arguments of
many MiB): an allocator whose ``memory.grow`` the limit refused has nothing better to answer."""


def sandbox_store(
    engine_host: EngineHost,
    wasi: wasmtime.WasiConfig,
    limits: LimitsSettings,
    timeout_s: float,
    cancelled: CancelSignal | None = None,
) -> InterruptibleStore:
    """A Store on ``engine_host`` with WASI, interrupts, memory limits and (if metered) fuel.

    The WASI config is required, not optional: it is what keeps the process alive. The guest
    is stopped after ``timeout_s`` or once ``cancelled`` is set.
    """
    store = InterruptibleStore(engine_host.engine)
    store.set_wasi(wasi)
    store.set_limits(memory_size=limits.memory_mib * MIB)
    rearm(store, engine_host, limits, timeout_s, cancelled)
    return store


def rearm(
    store: InterruptibleStore,
    engine_host: EngineHost,
    limits: LimitsSettings,
    timeout_s: float,
    cancelled: CancelSignal | None = None,
) -> None:
    """Give a Store a fresh deadline and a full tank before a call (warm instances reuse Stores)."""
    store.interrupts.arm(store, timeout_s, cancelled)
    if engine_host.consume_fuel:
        # Stores start with 0 fuel, which would trap at the first instruction.
        store.set_fuel(limits.fuel if limits.fuel is not None else DEFAULT_FUEL)


def describe_limit_hit(cause: str, stderr_tail: str, limits: LimitsSettings, timeout_s: float) -> str | None:
    """The readable reason when a wasmtime error ``cause`` is a limit being hit, else None."""
    if cause == TIMED_OUT or cause.endswith("wasm trap: interrupt"):
        return time_limit_hit(timeout_s, limits)
    if cause == CANCELLED:
        return "cancelled"
    if "all fuel consumed" in cause:
        return f"ran out of fuel (limit: {limits.fuel:,} units)" if limits.fuel is not None else "ran out of fuel"
    if _INSTANTIATE_OVER_LIMIT.search(cause) or any(marker in stderr_tail for marker in OUT_OF_MEMORY_MARKERS):
        return f"exceeded its memory limit of {limits.memory_mib} MiB"
    if REALLOC_BEYOND_MEMORY in cause:
        return f"exceeded its memory limit of {limits.memory_mib} MiB: no room for the values passed to it"
    return None


ANSWER_MARGIN_S = 0.5
"""Time kept back from a call's deadline for the worker's answer to reach the caller: a guest
stopped exactly at the deadline would answer after its caller gave up, and the caller would see a
JSON-RPC deadline error instead of the ``isError`` result naming the limit."""
ANSWER_MARGIN_FRACTION = 0.1
"""For short deadlines the margin is this share of what is left, so the guest keeps most of it."""


def guest_budget_s(remaining_s: float) -> float:
    """What a guest may use of a call's ``remaining_s`` (> 0): all but the answer's margin."""
    return remaining_s - min(ANSWER_MARGIN_S, remaining_s * ANSWER_MARGIN_FRACTION)


def budget_before_deadline(deadline_ms: str | None, ceiling_s: float) -> float:
    """A request's guest budget from its ``Toolbus-Deadline-Ms`` header (epoch milliseconds; absent:
    ``ceiling_s``): ``guest_budget_s`` of what is left, never above ``ceiling_s``; ``<= 0`` when the
    deadline has passed. One reading for calls and surface requests alike.

    Raises:
        ValueError: the header is not epoch milliseconds.
    """
    if not deadline_ms:
        return ceiling_s
    remaining_s = int(deadline_ms) / 1000 - time.time()
    return min(ceiling_s, guest_budget_s(remaining_s)) if remaining_s > 0 else remaining_s


def time_limit_hit(timeout_s: float, limits: LimitsSettings) -> str:
    """Which wall-clock limit stopped a guest given ``timeout_s``: the tool's own, or its caller's
    deadline (less the answer's margin) when that came first, so a model knows which to blame."""
    if timeout_s >= limits.timeout_s:
        return f"exceeded its time limit of {limits.timeout_s:g} s"
    return (
        f"timed out after {timeout_s:.3g} s, the time its caller's deadline left "
        f"(the tool's own time limit is {limits.timeout_s:g} s)"
    )


def effective_timeout_s(deadline_s: float, limits: LimitsSettings) -> float:
    """A call's wall-clock budget: its deadline, but never more than the tool's own limit."""
    return min(deadline_s, limits.timeout_s)
