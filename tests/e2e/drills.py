"""Failure drills against ``toolbus up --cluster 3``: the running cluster, the load that runs
through a drill, and the figures a drill reports.

The load is what a deployment sees: real mcp SDK clients (both protocol eras) calling a tool
synchronously through both gateways, and durable tasks submitted through the gateways (MCP
``params.task``) and the registry (``PREFIX.tasks.submit``). Every call is classified when it
ends: ``ok``; ``retryable`` (a JSON-RPC error the gateway marks retryable or a deadline it
enforced, or the gateway itself gone: the client then moves to the other gateway); ``other``
(any other failure: a wrong answer or a non-retryable error); ``lost`` (no answer within
``CALL_DEADLINE_S``: a hang).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import subprocess
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx2
import nats.errors
from mcp import Client
from mcp.shared.exceptions import MCPError
from nats.aio.client import Client as NatsClient

from bus.subjects import Header, Subjects
from schemas.codec import decode, encode
from schemas.wire import TERMINAL_STATUSES, TaskRecord, TaskSubmit, WorkerAnnouncement
from stores import TaskStore
from tests.conftest import eventually
from tests.e2e.conftest import child_processes
from tests.gateway.mcp_tasks import raw_request

PREFIX = "toolbus"
CALL_TIMEOUT_S = 5.0
"""The gateways' ``call_timeout_s`` in a drill: a call whose reply died with a node ends then."""
CALL_DEADLINE_S = CALL_TIMEOUT_S + 15.0
"""A call still unanswered this long after it began is lost: the gateway should have ended it
at ``CALL_TIMEOUT_S``; the margin is for a busy 2-core machine."""
CALL_PAUSE_S = 0.05
"""Pause between one client's calls: four clients make a steady ~50 calls/s here."""
TASK_PAUSE_S = 0.4
TASK_ARGUMENTS: dict[str, Any] = {"iterations": 100_000_000}
"""About 0.15 s of guest time for testkit's burn: some tasks are always running."""
SUBMIT_TIMEOUT_S = 10.0
RECONNECT_PAUSE_S = 0.2
WARMUP_S = 4.0
MIN_AFTER_FAULT_S = 15.0
"""The load runs at least this long after the fault…"""
QUIET_S = 5.0
"""…and until this long has passed without a failure (recovered), …"""
MAX_AFTER_FAULT_S = 120.0
"""…but no longer than this (then the drill fails: no recovery)."""
TASKS_END_TIMEOUT_S = 180.0
"""Every submitted task must end within this after the load stops (ack_wait 2 s, 5 deliveries)."""
HEALTHY_TIMEOUT_S = 120.0


@dataclass
class Call:
    """One synchronous tools/call and how it ended."""

    gateway: int
    started: float
    ended: float = 0.0
    outcome: str = "pending"
    detail: str = ""

    def finish(self, outcome: str, detail: str = "") -> None:
        self.ended = time.monotonic()
        self.outcome = outcome
        self.detail = detail


@dataclass
class Submission:
    """One attempt to create a task; ``task_id`` is set when the submitter got one back."""

    via: str
    at: float
    task_id: str = ""
    error: str = ""


def _transport_failure(exc: BaseException) -> bool:
    """True when ``exc`` is (or holds only) HTTP transport errors: the gateway went away."""
    if isinstance(exc, BaseExceptionGroup):
        return all(_transport_failure(inner) for inner in exc.exceptions)
    return isinstance(exc, httpx2.TransportError)


class Load:
    """Synchronous calls and task submissions through both gateways, until ``stop``."""

    def __init__(
        self, urls: list[str], nc: NatsClient, subjects: Subjects, client: Callable[[str, str], Client] | None = None
    ) -> None:
        self.urls = urls
        self.nc = nc
        self.subjects = subjects
        # How a client is made for (url, mode): a plain one by default; with credentials where the
        # gateway has authentication on (tests/deploy).
        self.client: Callable[[str, str], Client] = client or (lambda url, mode: Client(url, mode=mode))  # type: ignore[arg-type]
        self.calls: list[Call] = []
        self.submissions: list[Submission] = []
        self._stopping = False
        self._tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        callers = [(0, "legacy"), (0, "auto"), (1, "legacy"), (1, "auto")]
        self._tasks = [asyncio.create_task(self._caller(gateway, mode)) for gateway, mode in callers]
        self._tasks.append(asyncio.create_task(self._submitter()))

    async def stop(self) -> None:
        """Let every client finish its call in flight (bounded by its deadline), then stop."""
        self._stopping = True
        _, pending = await asyncio.wait(self._tasks, timeout=CALL_DEADLINE_S + 5)
        for task in pending:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for call in self.calls:  # only a client stuck outside a call's deadline is left
            if call.outcome == "pending":
                call.finish("lost", "still pending when the load stopped")

    async def _caller(self, gateway: int, mode: str) -> None:
        while not self._stopping:
            call: Call | None = None
            try:
                async with self.client(self.urls[gateway], mode) as client:
                    while not self._stopping:
                        call = Call(gateway, time.monotonic())
                        self.calls.append(call)
                        if not await self._one_call(client, call):
                            break  # lost: the session's state is unknown, start a new one
                        call = None
                        await asyncio.sleep(CALL_PAUSE_S)
            except Exception as exc:  # the gateway went away (or broke the session)
                if call is not None and call.outcome == "pending":
                    call.finish("retryable" if _transport_failure(exc) else "other", repr(exc)[:200])
                gateway = 1 - gateway  # a client of a dead gateway moves to the other one
                await asyncio.sleep(RECONNECT_PAUSE_S)

    async def _one_call(self, client: Client, call: Call) -> bool:
        a, b = random.randint(0, 1000), random.randint(0, 1000)
        try:
            result = await asyncio.wait_for(client.call_tool("kit_add", {"a": a, "b": b}), CALL_DEADLINE_S)
        except TimeoutError:
            call.finish("lost", f"no answer within {CALL_DEADLINE_S}s")
            return False
        except MCPError as exc:
            data = exc.error.data if isinstance(exc.error.data, dict) else {}
            clean = data.get("retryable") is True or data.get("reason") == "DEADLINE_EXCEEDED"
            call.finish("retryable" if clean else "other", f"{exc.error.code} {exc.error.message}")
            return True
        text = getattr(result.content[0], "text", None) if result.content else None
        if result.is_error or text != str(a + b):
            call.finish("other", f"wrong answer {text!r} for {a}+{b}")
        else:
            call.finish("ok")
        return True

    async def _submitter(self) -> None:
        """Tasks in turn through gateway 1, the registry over NATS, and gateway 2."""
        turn = 0
        while not self._stopping:
            via = ("gateway-1", "registry", "gateway-2")[turn % 3]
            turn += 1
            submission = Submission(via, time.monotonic())
            self.submissions.append(submission)
            try:
                if via == "registry":
                    submission.task_id = await self._submit_over_nats()
                else:
                    url = self.urls[0 if via == "gateway-1" else 1]
                    submission.task_id = await asyncio.wait_for(self._submit_over_mcp(url), SUBMIT_TIMEOUT_S)
            except Exception as exc:  # refused or unreachable: no task id, so nothing to lose
                submission.error = repr(exc)[:200]
            await asyncio.sleep(TASK_PAUSE_S)

    async def _submit_over_mcp(self, url: str) -> str:
        """A 2025-11-25 ``tools/call`` with ``params.task`` on a session of its own."""
        async with self.client(url, "legacy") as client:
            arguments = {"name": "kit_burn", "arguments": TASK_ARGUMENTS, "task": {}}
            raw = await raw_request(client, "tools/call", arguments)
        return str(raw["task"]["taskId"])

    async def _submit_over_nats(self) -> str:
        body = encode(TaskSubmit(tool="kit_burn", arguments=TASK_ARGUMENTS))
        reply = await self.nc.request(self.subjects.task_request("submit"), body, timeout=SUBMIT_TIMEOUT_S)
        if reply.headers and Header.ERROR in reply.headers:
            raise RuntimeError(reply.data.decode(errors="replace"))
        return decode(reply.data, TaskRecord).task_id


@dataclass
class DrillReport:
    """The figures of one drill."""

    drill: str
    calls: list[Call]
    submissions: list[Submission]
    task_statuses: dict[str, str]
    fault_at: float

    def count(self, outcome: str) -> int:
        return sum(1 for call in self.calls if call.outcome == outcome)

    @property
    def failures(self) -> list[Call]:
        return [call for call in self.calls if call.outcome != "ok"]

    @property
    def first_ok_after_s(self) -> float | None:
        """From the fault to the first success of a call that began after it."""
        ends = [c.ended for c in self.calls if c.outcome == "ok" and c.started >= self.fault_at]
        return min(ends) - self.fault_at if ends else None

    @property
    def errors_until_s(self) -> float:
        """From the fault until the last failed call ended (0: nothing failed)."""
        return max((c.ended - self.fault_at for c in self.failures), default=0.0)

    @property
    def recovered(self) -> bool:
        """Calls that began after the last failure ended all succeeded, and there were some."""
        last = max((c.ended for c in self.failures), default=self.fault_at)
        after = [c for c in self.calls if c.started > last]
        return bool(after) and all(c.outcome == "ok" for c in after)

    @property
    def tasks_submitted(self) -> int:
        return len(self.task_statuses)

    @property
    def tasks_completed(self) -> int:
        return sum(1 for status in self.task_statuses.values() if status == "completed")

    @property
    def tasks_lost(self) -> int:
        """Tasks whose id a client got that did not complete."""
        return self.tasks_submitted - self.tasks_completed

    @property
    def slowest_s(self) -> float:
        return max((c.ended - c.started for c in self.calls), default=0.0)

    def row(self) -> list[str]:
        first = self.first_ok_after_s
        refused = sum(1 for s in self.submissions if not s.task_id)
        return [
            self.drill,
            str(len(self.calls)),
            str(self.count("ok")),
            str(self.count("retryable")),
            str(self.count("other")),
            str(self.count("lost")),
            f"{self.slowest_s:.1f}",
            f"{self.tasks_submitted} (+{refused} refused)",
            str(self.tasks_completed),
            str(self.tasks_lost),
            "-" if first is None else f"{first:.2f}",
            f"{self.errors_until_s:.1f}",
        ]


HEADER = [
    "drill",
    "calls",
    "ok",
    "retryable",
    "other",
    "lost",
    "slowest call s",
    "tasks submitted",
    "completed",
    "tasks lost",
    "first ok after fault s",
    "errors until s",
]
REPORTS: list[DrillReport] = []
"""Every drill of this session, for the table at the end of the run (tests/e2e/conftest.py)."""


def table(reports: list[DrillReport]) -> str:
    """The reports as a Markdown table."""
    lines = ["| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    lines += ["| " + " | ".join(report.row()) + " |" for report in reports]
    return "\n".join(lines)


async def run_drill(name: str, load: Load, store: TaskStore, fault: Callable[[], Awaitable[None]]) -> DrillReport:
    """Run ``load``, inject ``fault`` after a warm-up, keep the load on until the calls recover,
    stop it and wait for every submitted task to end; return the figures."""
    load.start()
    await asyncio.sleep(WARMUP_S)
    fault_at = time.monotonic()
    await fault()
    while True:
        await asyncio.sleep(0.5)
        now = time.monotonic()
        failed = [c.ended for c in load.calls if c.outcome not in ("ok", "pending")]
        quiet_since = max(failed, default=fault_at)
        if now - fault_at >= MIN_AFTER_FAULT_S and now - quiet_since >= QUIET_S:
            break
        if now - fault_at >= MAX_AFTER_FAULT_S:
            break
    await load.stop()
    ids = [s.task_id for s in load.submissions if s.task_id]
    statuses = await tasks_ended(store, ids)
    report = DrillReport(name, load.calls, load.submissions, statuses, fault_at)
    REPORTS.append(report)
    return report


async def tasks_ended(store: TaskStore, ids: list[str]) -> dict[str, str]:
    """Each task's status once all have ended, or as they are after ``TASKS_END_TIMEOUT_S``."""
    statuses: dict[str, str] = dict.fromkeys(ids, "unknown")
    deadline = time.monotonic() + TASKS_END_TIMEOUT_S
    while time.monotonic() < deadline:
        for task_id in ids:
            if statuses[task_id] in TERMINAL_STATUSES:
                continue
            with contextlib.suppress(Exception):  # a read during an election may fail; read again
                statuses[task_id] = (await store.get(task_id)).status
        if all(status in TERMINAL_STATUSES for status in statuses.values()):
            break
        await asyncio.sleep(0.5)
    return statuses


# -- the running cluster --------------------------------------------------------------------------


@dataclass
class Cluster:
    """``toolbus up --cluster 3``: its process, where to reach it, and its children's pids."""

    process: subprocess.Popen[str]
    banner: str
    log: Path
    mcp_urls: list[str] = field(default_factory=list)
    nats_url: str = ""

    def __post_init__(self) -> None:
        for line in self.banner.splitlines():
            words = line.split()
            if line.strip().startswith("MCP endpoint"):
                self.mcp_urls.append(words[-1])
            elif line.strip().startswith("NATS"):
                self.nats_url = words[-1]

    def children(self) -> list[tuple[int, list[str]]]:
        """(pid, argv) of every child process of ``toolbus up``."""
        return child_processes(self.process.pid)

    def pids(self, verb: str) -> list[int]:
        """Pids of the ``toolbus <verb>`` children (``worker``, ``gateway``, ``registry``)."""
        return [pid for pid, argv in self.children() if "cli.main" in argv and argv[argv.index("cli.main") + 1] == verb]

    def gateway_pid(self, index: int) -> int:
        """Pid of the gateway serving ``mcp_urls[index]``."""
        port = self.mcp_urls[index].rsplit(":", 1)[1].split("/")[0]
        [pid] = [
            pid
            for pid, argv in self.children()
            if "cli.main" in argv and "gateway" in argv and argv[argv.index("--port") + 1] == port
        ]
        return pid

    def nats_pids(self) -> dict[str, int]:
        """Pids of the nats-server nodes by server name."""
        return {argv[argv.index("--server_name") + 1]: pid for pid, argv in self.children() if "--server_name" in argv}


async def healthy(cluster: Cluster, nc: NatsClient, subjects: Subjects, workers: int = 3) -> None:
    """Wait until every node runs with JetStream answering, ``workers`` workers announce ready
    and both gateways answer a call: the state each drill starts from."""
    await eventually(lambda: len(cluster.nats_pids()) == 3, timeout_s=HEALTHY_TIMEOUT_S, what="a node is down")
    js = nc.jetstream()

    async def jetstream() -> bool:
        try:
            info = await js.stream_info(subjects.tasks_stream)
        except nats.errors.Error:
            return False
        cluster_info = info.cluster
        return cluster_info is not None and all(p.current for p in cluster_info.replicas or [])

    await eventually(jetstream, timeout_s=HEALTHY_TIMEOUT_S, interval_s=0.5, what="tasks stream not current")
    ready: dict[str, float] = {}

    async def on_announce(msg: Any) -> None:
        announcement = decode(msg.data, WorkerAnnouncement)
        if announcement.state == "ready" and not announcement.loading:  # serving every component
            ready[announcement.worker_id] = time.monotonic()

    sub = await nc.subscribe(subjects.announce, cb=on_announce)
    try:
        alive = lambda: {w for w, at in ready.items() if time.monotonic() - at < 3.0}  # noqa: E731
        await eventually(
            lambda: len(alive()) >= workers and len(cluster.pids("worker")) == workers,
            timeout_s=HEALTHY_TIMEOUT_S,
            what=lambda: f"workers announcing: {sorted(alive())}",
        )
    finally:
        await sub.unsubscribe()

    async def answers(url: str) -> bool:
        try:
            async with Client(url, mode="auto") as client:
                result = await asyncio.wait_for(client.call_tool("kit_add", {"a": 1, "b": 1}), CALL_DEADLINE_S)
        except Exception:
            return False
        return not result.is_error

    for url in cluster.mcp_urls:
        await eventually(lambda u=url: answers(u), timeout_s=HEALTHY_TIMEOUT_S, interval_s=0.5, what=f"{url} down")
