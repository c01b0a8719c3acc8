"""Worker processes end to end: graceful drain on SIGTERM, queue-group sharing, a SIGKILL mid-run.

Each test starts real ``toolbus worker`` processes against the session's nats-server, with a
prefix of its own and only the WAT testkit component (no registry: "no responders" is what a
caller sees when nobody serves a tool).
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import nats.errors
import pytest
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg

from bus.embedded import EmbeddedNatsServer
from bus.subjects import Subjects, micro_control
from schemas.codec import decode
from schemas.micro import MicroStats
from schemas.wire import CallToolResult, TextContent, WorkerAnnouncement
from tests.conftest import deadline_in, eventually
from tests.e2e.conftest import REPO, worker_pid, write_config
from workers.discovery import SERVICE_NAME
from workers.runner import DRAIN_GRACE_S

READY_TIMEOUT_S = 60.0
"""A worker loads the WAT testkit in well under a second; this covers a loaded machine."""
CALL_TIMEOUT_S = 2.0


@dataclass
class WorkerProcess:
    """A ``toolbus worker`` process and the id it announces itself with."""

    process: subprocess.Popen[bytes]
    log: Path
    worker_id: str = ""

    def log_tail(self) -> str:
        return self.log.read_text()[-3000:]


class Announcements:
    """Every ``WorkerAnnouncement`` on the test's prefix, to wait on."""

    def __init__(self) -> None:
        self.heard: list[WorkerAnnouncement] = []
        self._changed = asyncio.Event()

    async def on_msg(self, msg: Msg) -> None:
        self.heard.append(decode(msg.data, WorkerAnnouncement))
        self._changed.set()

    async def wait_for(self, worker_id: str, state: str, timeout_s: float) -> None:
        async with asyncio.timeout(timeout_s):
            while not any(a.worker_id == worker_id and a.state == state for a in self.heard):
                self._changed.clear()
                await self._changed.wait()

    def ready_pids(self) -> dict[int, str]:
        """Worker id by process id (the id is ``host-PID-random``) of the workers serving every
        configured component (a worker announces itself before its components have loaded)."""
        return {worker_pid(a.worker_id): a.worker_id for a in self.heard if a.state == "ready" and not a.loading}


@pytest.fixture
def config(tmp_path: Path, nats_server: EmbeddedNatsServer, subjects: Subjects) -> Path:
    return write_config(
        tmp_path, nats_url=nats_server.url, prefix=subjects.prefix, cache_dir=tmp_path / "cache", components=["kit"]
    )


@pytest.fixture
async def announcements(nc: NatsClient, subjects: Subjects) -> AsyncIterator[Announcements]:
    heard = Announcements()
    sub = await nc.subscribe(subjects.announce, cb=heard.on_msg)
    yield heard
    await sub.unsubscribe()


@pytest.fixture
def spawn(config: Path, tmp_path: Path) -> Iterator[list[WorkerProcess]]:
    """The worker processes a test starts (see ``start_workers``); any still running is killed at the end."""
    started: list[WorkerProcess] = []
    yield started
    for worker in started:
        if worker.process.poll() is None:
            worker.process.kill()
        worker.process.wait(10)


def spawn_worker(config: Path, log: Path) -> WorkerProcess:
    """Start ``toolbus worker`` (it takes no time to start; readiness is awaited separately)."""
    with log.open("wb") as log_file:  # the child keeps its own copy of the descriptor
        process = subprocess.Popen(
            [sys.executable, "-m", "cli.main", "worker", "--config", str(config)],
            stdout=subprocess.DEVNULL,
            stderr=log_file,
            cwd=REPO,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
    return WorkerProcess(process, log)


async def start_workers(
    count: int, config: Path, announcements: Announcements, started: list[WorkerProcess]
) -> list[WorkerProcess]:
    """Start ``count`` workers and wait until each has announced itself ready."""
    new = []
    for _ in range(count):
        worker = spawn_worker(config, config.parent / f"worker-{len(started)}.log")
        started.append(worker)
        new.append(worker)

    def all_ready() -> bool:
        if all(w.process.pid in announcements.ready_pids() for w in new):
            return True
        for w in new:
            assert w.process.poll() is None, f"worker exited early: {w.log_tail()}"
        return False

    await eventually(
        all_ready,
        timeout_s=READY_TIMEOUT_S,
        interval_s=0.05,
        what=lambda: f"workers not ready: {[w.log_tail() for w in new]}",
    )
    for w in new:
        w.worker_id = announcements.ready_pids()[w.process.pid]
    return new


async def add(nc: NatsClient, subjects: Subjects, a: int, b: int) -> int:
    reply = await nc.request(subjects.call("kit_add"), json.dumps({"a": a, "b": b}).encode(), timeout=CALL_TIMEOUT_S)
    result = decode(reply.data, CallToolResult)
    assert not result.is_error and isinstance(result.structured_content, int)
    return result.structured_content


async def stats_by_worker(nc: NatsClient, prefix: str) -> dict[str, MicroStats]:
    """``$SRV.STATS.toolbus-worker`` answers of this test's workers, by worker id."""
    inbox = nc.new_inbox()
    answers: list[MicroStats] = []

    async def on_reply(msg: Msg) -> None:
        answers.append(decode(msg.data, MicroStats))

    sub = await nc.subscribe(inbox, cb=on_reply)
    await nc.publish(micro_control("STATS", SERVICE_NAME), b"", reply=inbox)
    await nc.flush()
    await asyncio.sleep(0.3)
    await sub.unsubscribe()
    return {s.id: s for s in answers if s.metadata["prefix"] == prefix}


def requests_of(stats: MicroStats, tool: str) -> int:
    [endpoint] = [e for e in stats.endpoints if e.name == tool]
    return endpoint.num_requests


async def test_sigterm_drains_the_worker_and_it_exits_0(
    nc: NatsClient, subjects: Subjects, config: Path, announcements: Announcements, spawn: list[WorkerProcess]
) -> None:
    [worker] = await start_workers(1, config, announcements, spawn)
    spin = asyncio.create_task(
        nc.request(subjects.call("kit_danger_spin"), b"{}", timeout=10, headers=deadline_in(1.5))
    )
    assert [await add(nc, subjects, i, 1) for i in range(3)] == [1, 2, 3]
    await asyncio.sleep(0.2)  # the spin is running in a guest thread by now

    terminated = time.monotonic()
    worker.process.send_signal(signal.SIGTERM)
    await announcements.wait_for(worker.worker_id, "draining", timeout_s=5)

    # From the draining announcement on, a call is answered (it reached the worker before its
    # unsubscribe did) or refused at once by the server; none goes unanswered (a timeout here
    # fails the test).
    answered = 0
    while True:
        try:
            assert await add(nc, subjects, answered, 1) == answered + 1
            answered += 1
        except nats.errors.NoRespondersError:
            break
        assert time.monotonic() - terminated < 5, "the worker kept taking calls while draining"
    for i in range(3):  # unsubscribed for good: refused at once, every time
        with pytest.raises(nats.errors.NoRespondersError):
            await add(nc, subjects, i, 1)

    # The call in flight at SIGTERM still gets its reply: the guest ran until its deadline.
    result = decode((await spin).data, CallToolResult)
    assert result.is_error
    assert any(isinstance(b, TextContent) and "timed out" in b.text for b in result.content)

    exit_code = await asyncio.to_thread(worker.process.wait, DRAIN_GRACE_S + 5)
    assert exit_code == 0, worker.log_tail()
    assert time.monotonic() - terminated < DRAIN_GRACE_S
    await announcements.wait_for(worker.worker_id, "stopped", timeout_s=1)


async def test_two_worker_processes_share_one_tools_calls(
    nc: NatsClient, subjects: Subjects, config: Path, announcements: Announcements, spawn: list[WorkerProcess]
) -> None:
    workers = await start_workers(2, config, announcements, spawn)
    limit = asyncio.Semaphore(16)

    async def one(i: int) -> int:
        async with limit:
            return await add(nc, subjects, i, i)

    assert await asyncio.gather(*(one(i) for i in range(200))) == [2 * i for i in range(200)]
    stats = await stats_by_worker(nc, subjects.prefix)
    assert set(stats) == {w.worker_id for w in workers}
    served = [requests_of(s, "kit_add") for s in stats.values()]
    assert sum(served) == 200
    assert all(n > 0 for n in served), f"one worker took every call: {served}"


async def test_killing_one_worker_loses_no_call_the_other_accepted(
    nc: NatsClient, subjects: Subjects, config: Path, announcements: Announcements, spawn: list[WorkerProcess]
) -> None:
    victim, survivor = await start_workers(2, config, announcements, spawn)
    callers = 8
    run_s, kill_after_s = 3.0, 1.0
    started = time.monotonic()
    killed_at: list[float] = []
    lost: list[tuple[float, BaseException]] = []
    succeeded = 0

    async def caller(k: int) -> None:
        nonlocal succeeded
        i = 0
        while time.monotonic() - started < run_s:
            sent = time.monotonic()
            try:
                assert await add(nc, subjects, k, i) == k + i
                succeeded += 1
            except (TimeoutError, nats.errors.NoRespondersError) as exc:
                lost.append((sent, exc))
            i += 1

    async def killer() -> None:
        await asyncio.sleep(kill_after_s)
        victim.process.send_signal(signal.SIGKILL)
        killed_at.append(time.monotonic())

    await asyncio.gather(killer(), *(caller(k) for k in range(callers)))
    assert victim.process.wait(5) == -signal.SIGKILL

    # The only calls that failed were with the dead worker when it died: at most one per
    # caller (each has one call in flight), all sent before the kill was noticed.
    assert len(lost) <= callers, lost
    assert all(sent < killed_at[0] + CALL_TIMEOUT_S for sent, _ in lost), lost
    # Every call the survivor took was answered with its result.
    [stats] = (await stats_by_worker(nc, subjects.prefix)).values()
    assert stats.id == survivor.worker_id
    [endpoint] = [e for e in stats.endpoints if e.name == "kit_add"]
    assert endpoint.num_requests > 0
    assert (endpoint.num_errors, endpoint.data.in_flight) == (0, 0)
    assert succeeded >= endpoint.num_requests
    assert survivor.process.poll() is None
