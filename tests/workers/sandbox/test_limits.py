"""Hostile guests against real wasmtime: every limit hit is an ``isError`` result, and the
component keeps serving, including while other calls are running."""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from schemas.config import ComponentSettings, LimitsSettings
from tests.conftest import HOSTILE_WAT, TESTKIT_WAT, text
from workers.sandbox.component import LoadedComponent
from workers.sandbox.engine import EngineHost
from workers.sandbox.errors import ComponentLoadError
from workers.sandbox.guest_output import GUEST_LOG_LIMIT_BYTES

Load = Callable[..., LoadedComponent]


@pytest.fixture(scope="module")
def load(engine_host: EngineHost, cache_dir: Path) -> Load:
    """Load hostile.wat (or another WAT) as component ``name`` with the given limits."""

    def load(
        name: str = "bad", path: Path = HOSTILE_WAT, defaults: LimitsSettings | None = None, **limits: object
    ) -> LoadedComponent:
        settings = ComponentSettings.model_validate({"name": name, "path": path, "limits": limits or None})
        return LoadedComponent.load(engine_host, settings, path, cache_dir, defaults=defaults)

    return load


@pytest.fixture(scope="module")
def bad(load: Load) -> LoadedComponent:
    return load(memory_mib=16)


@pytest.fixture(scope="module")
def metered(load: Load) -> LoadedComponent:
    return load(fuel=5_000_000)


def still_serves(component: LoadedComponent) -> None:
    assert component.call(f"{component.name}_add", {"a": 2, "b": 3}, timeout_s=5).structured_content == 5


def test_memory_bomb_hits_the_memory_limit(bad: LoadedComponent) -> None:
    result = bad.call("bad_memory_bomb", {}, timeout_s=5)
    assert result.is_error
    assert text(result) == "exceeded its memory limit of 16 MiB\nstderr:\nout of memory"
    still_serves(bad)


def test_memory_limit_too_small_to_start_fails_at_load(load: Load) -> None:
    # testkit's memory starts at 2.5 MiB.
    with pytest.raises(ComponentLoadError, match="cannot be instantiated: exceeded its memory limit of 1 MiB"):
        load("small", TESTKIT_WAT, memory_mib=1)


def test_deep_recursion_is_a_stack_overflow_trap(bad: LoadedComponent) -> None:
    result = bad.call("bad_deep_recursion", {"depth": 0}, timeout_s=5)
    assert result.is_error and text(result) == "guest trapped: call stack exhausted"
    still_serves(bad)


def test_fuel_burn_runs_out_of_fuel(metered: LoadedComponent) -> None:
    started = time.monotonic()
    result = metered.call("bad_fuel_burn", {}, timeout_s=30)
    assert result.is_error and text(result) == "ran out of fuel (limit: 5,000,000 units)"
    assert time.monotonic() - started < 2  # fuel stopped it, not the 30 s timeout
    # Fuel is per call: the next call gets a full tank.
    for _ in range(3):
        still_serves(metered)


def test_fuel_engine_exists_only_for_components_that_ask(
    engine_host: EngineHost, bad: LoadedComponent, metered: LoadedComponent
) -> None:
    assert bad.engine_host is engine_host and not engine_host.consume_fuel
    assert metered.engine_host is engine_host.variant(consume_fuel=True)
    assert metered.engine_host.consume_fuel
    assert metered.engine_host.variant(consume_fuel=False) is engine_host
    assert metered.engine_host.fingerprint != engine_host.fingerprint


def test_metered_engine_is_ticked_too(load: Load) -> None:
    # With fuel for minutes of work, only the shared epoch ticker can stop it.
    tank = load("tank", fuel=10**15, timeout_s=0.2)
    assert tank.engine_host.consume_fuel
    result = tank.call("tank_fuel_burn", {}, timeout_s=30)
    assert result.is_error and text(result) == "exceeded its time limit of 0.2 s"


def test_tool_timeout_caps_the_call_deadline(load: Load) -> None:
    quick = load("quick", timeout_s=0.2)
    started = time.monotonic()
    result = quick.call("quick_fuel_burn", {}, timeout_s=30)
    assert result.is_error and text(result) == "exceeded its time limit of 0.2 s"
    assert time.monotonic() - started < 2
    # A shorter deadline still wins over the tool's limit.
    slow = load("slow", timeout_s=30).call("slow_fuel_burn", {}, timeout_s=0.1)
    assert (
        text(slow) == "timed out after 0.1 s, the time its caller's deadline left (the tool's own time limit is 30 s)"
    )
    still_serves(quick)


def test_effective_limits_are_exposed(load: Load) -> None:
    defaults = LimitsSettings(timeout_s=10, max_concurrency=4)
    component = load("merged", defaults=defaults, memory_mib=32)
    assert component.limits == LimitsSettings(timeout_s=10, memory_mib=32, max_concurrency=4)
    assert load("plain", defaults=defaults).limits == defaults
    assert load("builtin").limits == LimitsSettings()


def test_stdout_flood_is_logged_bounded_and_never_on_our_stdout(
    bad: LoadedComponent, capfd: pytest.CaptureFixture[str]
) -> None:
    kib = 4096  # 4 MiB
    with capture_logs() as logs:
        result = bad.call("bad_stdout_flood", {"kib": kib}, timeout_s=10)
    assert not result.is_error and result.structured_content == kib
    [entry] = [e for e in logs if e["event"] == "guest output"]
    assert entry["tool"] == "bad_stdout_flood"
    assert entry["stdout_bytes"] == kib * 1024
    dropped = kib * 1024 - GUEST_LOG_LIMIT_BYTES
    assert entry["stdout"] == "x" * GUEST_LOG_LIMIT_BYTES + f"\n[{dropped} more bytes truncated]"
    assert "stderr" not in entry
    out, err = capfd.readouterr()
    assert "xxxx" not in out and "xxxx" not in err
    still_serves(bad)


def test_stderr_is_logged_per_call(bad: LoadedComponent) -> None:
    with capture_logs() as logs:
        bad.call("bad_memory_bomb", {}, timeout_s=5)
        still_serves(bad)  # writes nothing: no entry
    [entry] = [e for e in logs if e["event"] == "guest output"]
    assert entry["tool"] == "bad_memory_bomb"
    assert entry["stderr"] == "out of memory\n" and entry["stderr_bytes"] == 14


HOSTILE_CALLS = {
    "memory bomb": ("bad_memory_bomb", {}, "exceeded its memory limit of 16 MiB"),
    "deep recursion": ("bad_deep_recursion", {"depth": 0}, "guest trapped: call stack exhausted"),
    "infinite loop": ("bad_fuel_burn", {}, "timed out after 0.3 s, the time its caller's deadline left"),
}


@pytest.mark.parametrize("case", list(HOSTILE_CALLS), ids=list(HOSTILE_CALLS))
def test_hostile_call_while_other_calls_flow(bad: LoadedComponent, case: str) -> None:
    tool, arguments, reason = HOSTILE_CALLS[case]

    def normal(i: int) -> object:
        return bad.call("bad_add", {"a": i, "b": 1}, timeout_s=5).structured_content == i + 1

    with ThreadPoolExecutor(max_workers=4) as pool:
        hostile = [pool.submit(bad.call, tool, arguments, 0.3) for _ in range(3)]
        assert all(pool.map(normal, range(300)))
        for future in hostile:
            result = future.result()
            assert result.is_error and text(result).startswith(reason)
    still_serves(bad)
