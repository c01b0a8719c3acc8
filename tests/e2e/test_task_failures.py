"""Durable tasks against real processes (``toolbus up``: registry, gateway, two workers) and a
real nats-server: a worker killed with SIGKILL mid-task, and the nats-server itself stopped and
restarted under 200 tasks. No task may be lost; each ends in exactly one terminal status."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg

from bus.connection import connect
from bus.embedded import EmbeddedNatsServer, free_port
from bus.subjects import Subjects
from schemas.codec import decode
from schemas.config import TasksSettings
from schemas.wire import TERMINAL_STATUSES, TaskRecord
from stores import TaskStore
from tests.conftest import close_settled, eventually, task_reaches
from tests.e2e.conftest import start_up, stop_up, worker_pid, write_config

PREFIX = "toolbus"
TASKS = TasksSettings(ack_wait_s=2.0, max_deliver=5, ttl_s=600)
BURN_3S: dict[str, object] = {"iterations": 1_800_000_000}
"""About 3 s of guest time for testkit's burn on this machine."""


@dataclass
class System:
    nats: EmbeddedNatsServer
    nc: NatsClient
    store: TaskStore
    subjects: Subjects


@pytest.fixture
def nats(tmp_path: Path) -> Iterator[EmbeddedNatsServer]:
    """A nats-server of this test's own (file storage), so the test may stop and restart it."""
    server = EmbeddedNatsServer(state_dir=tmp_path / "nats")
    server.start()
    yield server
    server.stop()


@pytest.fixture
async def system(nats: EmbeddedNatsServer, tmp_path: Path) -> AsyncIterator[System]:
    config = write_config(tmp_path, nats_url=nats.url, mcp_port=free_port(), tasks=TASKS, components=["kit"])
    process, _ = await asyncio.to_thread(
        start_up, config, "--workers", "2", "--nats", nats.url, log_path=tmp_path / "up.log"
    )
    nc = await connect(nats.url, name="test")
    subjects = Subjects(PREFIX)
    try:
        yield System(nats, nc, await TaskStore.open(nc, subjects, TASKS), subjects)
    finally:
        await close_settled(nc)
        await asyncio.to_thread(stop_up, process)


@pytest.mark.slow
async def test_a_task_whose_worker_is_killed_is_finished_by_another_exactly_once(system: System) -> None:
    terminal: list[str] = []

    async def on_status(msg: Msg) -> None:
        record = decode(msg.data, TaskRecord)
        if record.status in TERMINAL_STATUSES:
            terminal.append(record.status)

    record = await system.store.submit("kit_burn", BURN_3S, principal="test")
    await system.nc.subscribe(system.subjects.task_status(record.task_id), cb=on_status)

    started = await task_reaches(
        system.store, record.task_id, running=True, timeout_s=30, what="the task never started"
    )
    victim = started.worker_id
    os.kill(worker_pid(victim), signal.SIGKILL)

    never_ended = "the task never ended after its worker was killed"
    await task_reaches(system.store, record.task_id, *TERMINAL_STATUSES, timeout_s=60, what=never_ended)
    done = await system.store.get(record.task_id)
    assert done.status == "completed", done
    assert done.attempts >= 2 and done.worker_id != victim
    await asyncio.sleep(0.5)
    assert terminal == ["completed"], terminal


@pytest.mark.slow
async def test_200_tasks_survive_a_nats_server_restart_under_real_processes(system: System) -> None:
    ids = [
        (await system.store.submit("kit_burn", {"iterations": 20_000_000}, principal="test")).task_id
        for _ in range(200)
    ]
    await asyncio.sleep(0.5)  # some done, some running, most queued
    system.nats.stop()
    await asyncio.sleep(1.0)
    system.nats.start()  # same port, same store directory

    statuses: dict[str, str] = {}

    async def all_ended() -> bool:
        nonlocal statuses
        try:
            statuses = {task_id: (await system.store.get(task_id)).status for task_id in ids}
        except Exception:
            return False
        return all(status in TERMINAL_STATUSES for status in statuses.values())

    await eventually(all_ended, timeout_s=120, interval_s=0.1, what="not every task ended after the restart")
    counts = {status: list(statuses.values()).count(status) for status in set(statuses.values())}
    assert counts == {"completed": 200}, counts
