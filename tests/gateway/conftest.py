"""Gateway fixtures: real NATS, a real gateway in the test's event loop, scripted workers.

A scripted worker is a real NATS responder in the workers' queue group; the real worker is
exercised end to end in tests/e2e. Task tests (``task_system``) run a real registry and real
workers with a ``TaskRunner``, serving the testkit component.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.js.kv import KeyValue

from bus.connection import caught_up, connect
from bus.embedded import EmbeddedNatsServer
from bus.provisioning import ensure_bucket
from bus.subjects import Subjects
from registry.service import RegistryService
from schemas.config import RegistrySettings, load_settings
from stores import TaskStore
from tests.conftest import FAST_TASKS, TEST_ANNOUNCE_INTERVAL_S, start_task_worker, steady_rate_window
from tests.gateway.auth_kit import PRINCIPAL_KEY, Issuer, auth_settings
from tests.gateway.responders import RunningGateway, ScriptedWorker, TaskSystem, ready, running_gateway
from workers.sandbox.component import LoadedComponent


@pytest.fixture
async def kv(nc: NatsClient, subjects: Subjects) -> KeyValue:
    """The tools bucket of the test's deployment, as the registry would create it."""
    return await ensure_bucket(nc, subjects.tools_bucket)


@pytest.fixture
async def worker(nc: NatsClient, subjects: Subjects) -> AsyncIterator[Callable[..., Awaitable[ScriptedWorker]]]:
    """Start scripted workers: ``await worker("add", result_reply(...))``."""
    subscriptions = []

    async def start(tool: str, reply: Callable[[Msg], Awaitable[Any]]) -> ScriptedWorker:
        scripted = ScriptedWorker(reply)

        async def on_msg(msg: Msg) -> None:
            await scripted.handle(nc, msg)

        subscriptions.append(await nc.subscribe(subjects.call(tool), queue=subjects.worker_queue, cb=on_msg))
        # Not ``nc.flush()``: its PING overtakes the SUB in nats-py's buffer, and a gateway calling at
        # once could get "no responders" (the race tests/bus/test_disconnect.py met).
        await caught_up(nc)
        return scripted

    yield start
    for sub in subscriptions:
        await sub.unsubscribe()


@pytest.fixture
async def start_gateway(
    nats_server: EmbeddedNatsServer, subjects: Subjects
) -> AsyncIterator[Callable[..., Awaitable[RunningGateway]]]:
    """Start a gateway for the test's deployment: ``await start_gateway(page_size=2)``."""
    stack: list[Any] = []

    async def start(**gateway: Any) -> RunningGateway:
        settings = load_settings(None, nats={"url": nats_server.url, "prefix": subjects.prefix}, gateway=gateway)
        context = running_gateway(settings)
        running = await context.__aenter__()
        stack.append(context)
        return running

    yield start
    for context in reversed(stack):
        await context.__aexit__(None, None, None)


@pytest.fixture
async def task_system(
    nats_server: EmbeddedNatsServer,
    nc: NatsClient,
    subjects: Subjects,
    kit: LoadedComponent,
    start_gateway: Callable[..., Awaitable[RunningGateway]],
) -> AsyncIterator[TaskSystem]:
    registry = RegistryService(
        nc, subjects, RegistrySettings(), announce_interval_s=TEST_ANNOUNCE_INTERVAL_S, tasks=FAST_TASKS
    )
    await registry.start()
    worker_nc = await connect(nats_server.url, name="task-worker")
    worker = await start_task_worker(worker_nc, subjects, [kit], FAST_TASKS)
    store = await TaskStore.open(nc, subjects, FAST_TASKS)
    yield TaskSystem(nats_server.url, nc, subjects, store, start_gateway)
    await worker.stop()
    await worker_nc.close()
    await registry.stop()


@pytest.fixture
def issuer(tmp_path: Path) -> Issuer:
    """The OAuth authorization server's half: a JWKS file and tokens signed with its key."""
    return Issuer(tmp_path)


@pytest.fixture
async def secured(task_system: TaskSystem, issuer: Issuer) -> AsyncIterator[Callable[..., Awaitable[RunningGateway]]]:
    """Start gateways with authentication (and any extra ``[auth]`` settings) on the task system."""
    contexts: list[Any] = []

    async def start(
        gateway: dict[str, Any] | None = None, rate_limits: dict[str, Any] | None = None, **auth: Any
    ) -> RunningGateway:
        settings = load_settings(
            None,
            nats={"url": task_system.nats_url, "prefix": task_system.subjects.prefix, "principal_key": PRINCIPAL_KEY},
            gateway=gateway or {},
            rate_limits=rate_limits or {},
            auth=auth_settings(issuer, **auth),
        )
        limits = settings.rate_limits
        for limit in (limits.per_principal, limits.per_tool, *limits.tools.values()):
            if limit is not None:
                await steady_rate_window(limit.per_s)
        context = running_gateway(settings)
        contexts.append(context)
        return await ready(await context.__aenter__())

    yield start
    for context in reversed(contexts):
        await context.__aexit__(None, None, None)
