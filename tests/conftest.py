"""Shared fixtures (fresh prefixes per test, a client of the session's nats-server, which the
repository's conftest.py starts) and the helpers that test modules across the packages share."""

from __future__ import annotations

import asyncio
import inspect
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import httpx2
import pytest
import wasmtime
from nats.aio.client import Client as NatsClient
from prometheus_client.parser import text_string_to_metric_families

from bus.connection import connect
from bus.embedded import EmbeddedNatsServer
from bus.subjects import Header, Subjects
from schemas.config import ComponentSettings, Settings, TasksSettings, WorkerSettings
from schemas.wire import CallToolResult, TaskRecord, TextContent
from stores import PackageStore, TaskStore
from workers.package_follower import PackageFollower
from workers.routes import CallableComponent
from workers.sandbox.component import LoadedComponent
from workers.sandbox.engine import EngineHost
from workers.service import WorkerService
from workers.task_runner import TaskRunner

T = TypeVar("T")


@pytest.fixture
def subjects() -> Subjects:
    """A subject catalogue under a prefix unique to the test, so tests never hear each other."""
    return Subjects(prefix=f"t{uuid.uuid4().hex[:10]}")


@pytest.fixture
async def nc(nats_server: EmbeddedNatsServer) -> AsyncIterator[NatsClient]:
    """A client connection to the session's nats-server."""
    client = await connect(nats_server.url, name="test")
    yield client
    await client.close()


async def close_settled(nc: NatsClient, timeout_s: float = 5.0) -> None:
    """Close ``nc`` once it is not in the middle of reconnecting (tests that restart a server).

    nats-py can leave the socket of a reconnect attempt open when the client is closed during
    it (seen after a server restart): wait (bounded) for the attempt to settle first.
    """
    deadline = asyncio.get_running_loop().time() + timeout_s
    while nc.is_reconnecting:
        if asyncio.get_running_loop().time() >= deadline:
            break
        await asyncio.sleep(0.05)  # nats-py offers no event for "reconnect attempt over"
    await nc.close()


WAT_DIR = Path(__file__).resolve().parents[1] / "examples" / "wat"
TESTKIT_WAT = WAT_DIR / "testkit.wat"
"""The hand-written WAT component: instantiates in microseconds, has a trap and an endless loop."""
HOSTILE_WAT = WAT_DIR / "hostile.wat"
"""The hand-written WAT component that misbehaves: memory bombs, deep recursion, output floods."""


@pytest.fixture(scope="session")
def engine_host() -> Iterator[EngineHost]:
    """One wasmtime engine (with its epoch ticker) for the session, as a worker has."""
    with EngineHost() as host:
        yield host


@pytest.fixture(scope="session")
def kit(engine_host: EngineHost, cache_dir: Path) -> LoadedComponent:
    """The testkit component loaded as a worker loads it; its tools are ``kit_*``."""
    return LoadedComponent.load(engine_host, ComponentSettings(name="kit", path=TESTKIT_WAT), TESTKIT_WAT, cache_dir)


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Build/compile cache shared by the session (components are built once)."""
    return tmp_path_factory.mktemp("cache")


async def steady_rate_window(per_s: float = 600.0, needed_s: float = 20.0) -> None:
    """Wait, if need be, until the current rate-limit window of ``per_s`` has ``needed_s`` left.

    Limits count in fixed windows aligned to multiples of ``per_s`` in Unix time
    (``gateway.ratelimit``): a test that straddles a boundary would see its count reset halfway
    and admit a call its limit should refuse.
    """
    left_s = per_s - time.time() % per_s
    if left_s < needed_s:
        await asyncio.sleep(left_s + 0.05)


async def eventually(
    condition: Callable[[], T | Awaitable[T]],
    *,
    timeout_s: float = 5.0,
    interval_s: float = 0.02,
    what: str | Callable[[], str] = "condition never held",
) -> T:
    """Poll ``condition`` (a plain or an async callable) until it returns something truthy; return that.

    Fails with ``what`` (or what it returns, when it is callable) once ``timeout_s`` has passed.
    """
    deadline = time.monotonic() + timeout_s
    while True:
        value = condition()
        if inspect.isawaitable(value):
            value = await value
        if value:
            return value  # type: ignore[return-value]
        assert time.monotonic() < deadline, what() if callable(what) else what
        await asyncio.sleep(interval_s)


async def task_reaches(
    store: TaskStore,
    task_id: str,
    *statuses: str,
    running: bool = False,
    timeout_s: float = 20,
    what: str | None = None,
) -> TaskRecord:
    """The task's record once its status is one of ``statuses`` (any, if none is given) and, with
    ``running``, it is on a worker."""
    last: list[TaskRecord] = []

    async def reached() -> TaskRecord | None:
        record = await store.get(task_id)
        last[:] = [record]
        if statuses and record.status not in statuses:
            return None
        return record if record.running or not running else None

    def stayed() -> str:
        record = last[0]
        return what or f"task stayed {record.status} ({record.status_message}, running={record.running})"

    return await eventually(reached, timeout_s=timeout_s, what=stayed)


TEST_ANNOUNCE_INTERVAL_S = 0.5
"""Workers' announcement interval in in-process test deployments; their registries must be given
the same (``RegistryService(announce_interval_s=...)``): a registry expecting announcements more
often than workers send them withdraws their tools between announcements."""
FAST_TASKS = TasksSettings(ack_wait_s=1.5, max_deliver=3, ttl_s=60)
"""Short enough that a dead worker's task is redelivered within a test."""


@dataclass
class TaskWorker:
    """A worker serving components and running tasks on its own connection (``nc``, closed by its owner)."""

    nc: NatsClient
    service: WorkerService
    runner: TaskRunner

    async def stop(self) -> None:
        await self.runner.stop(grace_s=1)
        await self.service.stop(grace_s=0.5)


async def start_task_worker(
    worker_nc: NatsClient,
    subjects: Subjects,
    components: Iterable[CallableComponent],
    tasks: TasksSettings,
    concurrency: int = 2,
) -> TaskWorker:
    """A started worker with a ``TaskRunner`` taking ``concurrency`` tasks at a time."""
    settings = WorkerSettings(concurrency=concurrency, announce_interval_s=TEST_ANNOUNCE_INTERVAL_S)
    service = WorkerService(worker_nc, subjects, settings, list(components))
    await service.start()
    runner = TaskRunner(worker_nc, subjects, await TaskStore.open(worker_nc, subjects, tasks), service, concurrency)
    await runner.start()
    return TaskWorker(worker_nc, service, runner)


def text(result: CallToolResult) -> str:
    """The text of a result made of one text block."""
    [block] = result.content
    assert isinstance(block, TextContent)
    return block.text


def deadline_in(seconds: float) -> dict[str, str]:
    """Call headers with a deadline ``seconds`` from now."""
    return {Header.DEADLINE_MS: str(int((time.time() + seconds) * 1000))}


def toolbus(*args: str) -> subprocess.CompletedProcess[str]:
    """Run the real ``toolbus`` CLI (the venv's entry point)."""
    return subprocess.run(
        [str(Path(sys.executable).parent / "toolbus"), *args], capture_output=True, text=True, timeout=120, check=False
    )


def nats_settings(directory: Path, url: str, prefix: str) -> Path:
    """A ``toolbus.toml`` in ``directory`` with only the ``[nats]`` section: where the CLI finds the bus."""
    path = directory / "toolbus.toml"
    path.write_text(f'[nats]\nurl = "{url}"\nprefix = "{prefix}"\n')
    return path


@dataclass(frozen=True)
class MetricSamples:
    """One Prometheus scrape, parsed with prometheus-client's own parser."""

    samples: dict[tuple[str, frozenset[tuple[str, str]]], float]

    def value(self, name: str, **labels: str) -> float | None:
        """The sample ``name`` with exactly ``labels``, or ``None`` when the scrape has none."""
        return self.samples.get((name, frozenset(labels.items())))

    def names(self) -> set[str]:
        return {name for name, _ in self.samples}


async def scrape(url: str) -> MetricSamples:
    """GET a Prometheus endpoint and parse the text it answers."""
    async with httpx2.AsyncClient(timeout=10) as http:
        response = await http.get(url)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain"), response.headers
    samples = {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }
    return MetricSamples(samples)


def answer_component(answer: int, *, extra_export: str | None = None) -> bytes:
    """A component whose ``answer`` returns ``answer``; optionally one more export returning 0."""
    extra = f'(func (export "{extra_export}") (result u32) (canon lift (core func $i "zero")))' if extra_export else ""
    return bytes(
        wasmtime.wat2wasm(
            f"""(component
              (core module $m
                (func (export "answer") (result i32) i32.const {answer})
                (func (export "zero") (result i32) i32.const 0))
              (core instance $i (instantiate $m))
              (func (export "answer") (result u32) (canon lift (core func $i "answer")))
              {extra})"""
        )
    )


async def start_package_worker(
    nats_url: str, subjects: Subjects, engine_host: EngineHost, settings: Settings
) -> tuple[WorkerService, PackageFollower, NatsClient]:
    """A worker serving the published packages (it also loads them for the registry at publish
    time), caught up with the package store; its owner stops the three."""
    worker_nc = await connect(nats_url, name="package-worker")
    service = WorkerService(worker_nc, subjects, settings.worker, [])
    await service.start()
    follower = PackageFollower(
        worker_nc, subjects, await PackageStore.open(worker_nc, subjects), service, engine_host, settings
    )
    await follower.start()
    await asyncio.wait_for(follower.caught_up.wait(), 30)
    return service, follower, worker_nc
