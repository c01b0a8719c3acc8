"""``reuse_instances``: warm instances are reused across calls, and discarded at a trap or limit hit."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from schemas.config import ComponentSettings
from schemas.wire import TextContent
from tests.conftest import HOSTILE_WAT
from workers.sandbox.component import WARM_INSTANCES_MAX, LoadedComponent
from workers.sandbox.engine import EngineHost


def load(engine_host: EngineHost, cache_dir: Path, name: str, **settings: object) -> LoadedComponent:
    config = ComponentSettings.model_validate({"name": name, "path": HOSTILE_WAT, **settings})
    return LoadedComponent.load(engine_host, config, HOSTILE_WAT, cache_dir)


@pytest.fixture
def warm(engine_host: EngineHost, cache_dir: Path) -> LoadedComponent:
    return load(engine_host, cache_dir, "warm", reuse_instances=True, limits={"memory_mib": 16, "timeout_s": 0.3})


def count(component: LoadedComponent) -> object:
    result = component.call(f"{component.name}_count", {}, timeout_s=5)
    assert not result.is_error
    return result.structured_content


def test_fresh_instance_per_call_by_default(engine_host: EngineHost, cache_dir: Path) -> None:
    fresh = load(engine_host, cache_dir, "fresh")
    assert [count(fresh) for _ in range(3)] == [1, 1, 1]


def test_warm_instance_is_reused(warm: LoadedComponent) -> None:
    assert [count(warm) for _ in range(3)] == [1, 2, 3]


@pytest.mark.parametrize(
    ("tool", "arguments", "reason"),
    [
        ("warm_deep_recursion", {"depth": 0}, "guest trapped: call stack exhausted"),
        ("warm_memory_bomb", {}, "exceeded its memory limit of 16 MiB"),
        ("warm_fuel_burn", {}, "exceeded its time limit of 0.3 s"),
    ],
)
def test_trap_or_limit_hit_discards_the_instance(
    warm: LoadedComponent, tool: str, arguments: dict[str, object], reason: str
) -> None:
    assert [count(warm) for _ in range(2)] == [1, 2]
    result = warm.call(tool, arguments, timeout_s=5)
    [block] = result.content
    assert result.is_error and isinstance(block, TextContent) and block.text.startswith(reason)
    assert [count(warm) for _ in range(2)] == [1, 2]  # a new instance


def test_warm_fuel_is_refilled_per_call(engine_host: EngineHost, cache_dir: Path) -> None:
    # `count` costs a few units; 50 calls on one instance would exhaust a tank that is not refilled.
    tank = load(engine_host, cache_dir, "tank", reuse_instances=True, limits={"fuel": 100})
    assert [count(tank) for _ in range(50)] == list(range(1, 51))


def test_deadline_is_rearmed_per_call(warm: LoadedComponent) -> None:
    # The first call's deadline (0.3 s) has long passed when the later calls run.
    count(warm)
    time.sleep(0.5)
    assert count(warm) == 2


def test_many_threads_share_a_bounded_pool(warm: LoadedComponent) -> None:
    with ThreadPoolExecutor(max_workers=8) as pool:
        counts = list(pool.map(lambda _: count(warm), range(800)))
    assert all(isinstance(c, int) and c >= 1 for c in counts)
    assert counts.count(1) <= 8  # at most one new instance per concurrent thread
    assert len(warm._warm) <= min(8, WARM_INSTANCES_MAX)
    warm.close()
    assert count(warm) == 1


def test_pool_size_follows_max_concurrency(engine_host: EngineHost, cache_dir: Path) -> None:
    single = load(engine_host, cache_dir, "single", reuse_instances=True, limits={"max_concurrency": 1})
    with ThreadPoolExecutor(max_workers=4) as pool:
        list(pool.map(lambda _: count(single), range(200)))
    assert len(single._warm) == 1


# Loads a warm component, leaves instances that wrote to stdout and stderr idle, and exits:
# the warm Stores must be closed before the interpreter goes, or wasmtime's I/O thread panics.
EXIT_SCRIPT = """import sys
from pathlib import Path
from cli.logs import configure_logging
from schemas.config import ComponentSettings
from schemas.wire import TextContent
from workers.sandbox.component import LoadedComponent
from workers.sandbox.engine import EngineHost
configure_logging("json")
host = EngineHost()
wasm, cache = Path(sys.argv[1]), Path(sys.argv[2])
settings = ComponentSettings(name="w", path=wasm, reuse_instances=True)
component = LoadedComponent.load(host, settings, wasm, cache)
for _ in range(3):
    assert component.call("w_stdout_flood", {"kib": 64}, timeout_s=5).structured_content == 64
    assert component.call("w_memory_bomb", {}, timeout_s=5).is_error
    assert component.call("w_count", {}, timeout_s=5).structured_content >= 1
"""


def test_process_exits_cleanly_with_warm_instances(cache_dir: Path) -> None:
    for _ in range(3):
        done = subprocess.run(
            [sys.executable, "-c", EXIT_SCRIPT, str(HOSTILE_WAT), str(cache_dir)],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 0, done.stderr
        assert "panicked" not in done.stderr
        # Guest output goes to the worker's log (stderr), never raw to the worker's stdout.
        assert done.stdout == ""
        events = [json.loads(line)["event"] for line in done.stderr.splitlines() if line.startswith("{")]
        assert "guest output" in events
