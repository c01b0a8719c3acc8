"""Tool source kinds: a source's Wasm is its ``path`` as given, or a cached build of its ``source``."""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import Future
from pathlib import Path

import pytest

from schemas.config import ComponentSettings, Settings
from tests.conftest import TESTKIT_WAT
from tests.workers.conftest import EXAMPLES_DIR
from workers.sandbox import EngineHost
from workers.sources import COMPONENT, Loading, loaded_as_ready

resolve_component_path = COMPONENT.resolve
"""How a worker finds a component's ``.wasm`` (moved here from the componentize toolchain)."""


@pytest.mark.slow
def test_resolve_component_path(calc_wasm: Path, cache_dir: Path, tmp_path: Path) -> None:
    built = tmp_path / "given.wasm"
    assert resolve_component_path(ComponentSettings(name="x", path=built), cache_dir) == built
    # `world` defaults to the component's name.
    from_source = ComponentSettings(name="calc", source=EXAMPLES_DIR / "calc")
    assert resolve_component_path(from_source, cache_dir) == calc_wasm


def test_loads_started_before_the_event_loop_are_all_served(engine_host: EngineHost, cache_dir: Path) -> None:
    # `toolbus worker` starts its loads before the bus and the loop exist (cli.worker); those
    # that finish before `loaded_as_ready` takes over are kept, and every one is yielded once.
    settings = Settings(
        cache_dir=cache_dir,
        components=[ComponentSettings(name=name, path=TESTKIT_WAT) for name in ("one", "two", "three")],
    )
    loading = Loading(settings, engine_host)
    time.sleep(0.3)  # not a timing assertion: either way every load must be yielded, this lets some finish first

    async def serve_all() -> list[str]:
        return [component.name async for component in loaded_as_ready(settings, engine_host, loading)]

    assert sorted(asyncio.run(serve_all())) == ["one", "three", "two"]


def test_loads_wait_for_an_engine_still_being_made(engine_host: EngineHost, cache_dir: Path) -> None:
    # `toolbus worker` makes its engine on a thread while the loaders find their Wasm
    # (cli.worker): a load waits for the engine, and is served once it is made.
    settings = Settings(cache_dir=cache_dir, components=[ComponentSettings(name="kit", path=TESTKIT_WAT)])
    engine: Future[EngineHost] = Future()
    loading = Loading(settings, engine)
    engine.set_result(engine_host)

    async def serve_all() -> list[str]:
        return [component.name async for component in loaded_as_ready(settings, loading.engine, loading)]

    assert asyncio.run(serve_all()) == ["kit"]


def test_an_engine_that_could_not_be_made_fails_the_loads(engine_host: EngineHost, cache_dir: Path) -> None:
    settings = Settings(cache_dir=cache_dir, components=[ComponentSettings(name="kit", path=TESTKIT_WAT)])
    engine: Future[EngineHost] = Future()
    loading = Loading(settings, engine)
    engine.set_exception(RuntimeError("no address space for the pooling allocator"))
    with pytest.raises(RuntimeError, match="pooling allocator"):
        loading.engine  # noqa: B018 - the property raises what making the engine raised

    async def serve_all() -> list[str]:
        return [component.name async for component in loaded_as_ready(settings, engine_host, loading)]

    with pytest.raises(RuntimeError, match="pooling allocator"):
        asyncio.run(serve_all())
