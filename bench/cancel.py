"""Cancellation: from the client's cancel to the guest no longer using CPU, both eras.

Each sample, against the shared ``toolbus up`` system:

1. an mcp SDK ``Client`` (``mode="legacy"``: 2025-11-25; ``mode="auto"``: 2026-07-28) calls
   ``kit_danger_spin`` (an endless loop) in a task, as ``tests/gateway/test_gateway_events.py`` does;
2. a plain subscriber on ``toolbus.call.kit_danger_spin`` (it gets a copy; the workers' queue
   group gets the call) sees the request: its request id, its reply subject and when it was sent;
3. at an ``Age`` of the call (5 ms, or 300 ms, after it was on the bus) plus a random 0-10 ms
   (so the cancel lands anywhere in the worker's 10 ms epoch tick), the clock starts and the
   client cancels the task: the SDK then sends ``notifications/cancelled`` (2025) or closes the
   call's response stream (2026-07-28);
4. all along, a sampler thread reads the CPU time of the worker's guest threads
   (``/proc/PID/task/TID/schedstat``, nanoseconds) and of the whole worker process (its CPU clock)
   every ``SAMPLE_INTERVAL_S``. The guest's thread is the one that used the most CPU during the
   call; it has stopped at the first sample after which its CPU time never grows again (an upper
   bound, at most one sampling interval late), watched until ``SETTLE_S`` after the worker's reply.

Also recorded, in ms after the cancel: when the awaited task ends in the client (the cancellation
as the client sees it), when the gateway's empty message on ``toolbus.cancel.<request-id>`` and
the worker's reply appear on the bus, how much CPU the worker process used after the cancel
(exact, whatever the sampling), and when it last ran at half a core or more. The
same is done without a gateway (a NATS request, then a cancel message published by the bench): the
worker's share alone. Baseline: the plain round trip of ``kit_add`` with the same clients.
"""

from __future__ import annotations

import asyncio
import random
import threading
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import nats
from mcp import Client
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg

from bench.mcp_http import ERA_2025, ERA_2026
from bench.plan import Plan
from bench.stats import summary
from bus.call_request import CallRequests
from bus.subjects import Header, Subjects
from schemas.codec import decode, encode
from schemas.errors import ErrorCode
from schemas.wire import ErrorReply

SPIN: Final = "kit_danger_spin"
ADD: Final = "kit_add"
ADD_ARGUMENTS: Final = {"a": 2, "b": 3}
BUS: Final = "bus"
"""The path without a gateway: a NATS request to the worker and a cancel message from the bench."""
PATHS: Final = ((ERA_2025, "legacy"), (ERA_2026, "auto"), (BUS, ""))
"""(key, ``mcp.Client`` mode): each era's client, then the direct bus path."""
TARGET_MS: Final = 100.0
"""Issue 6: the guest stops using CPU at most this long after the client's cancel."""

EPOCH_TICK_S: Final = 0.010
"""The worker's epoch tick (``workers/sandbox/engine.py``): a cancelled guest stops at the next one."""
SAMPLE_INTERVAL_S: Final = 0.0005
SETTLE_S: Final = 0.05
"""How long the sampler goes on after the worker's reply, to see that the guest stays stopped."""
BUSY_SHARE: Final = 0.5
"""The worker process counts as busy during a sampling interval in which it ran at least this share."""
MIN_GUEST_CPU_MS: Final = 2.0
"""The guest's thread uses at least this much CPU in a sample (anything less is not a spinning guest)."""
STEP_TIMEOUT_S: Final = 10.0
BASELINE_WARMUP: Final = 20
_PROC: Final = Path("/proc")

Progress = Callable[[str], None]


class CancelBenchError(RuntimeError):
    """Raised when a call is not seen, its guest does not spin or does not stop, or no reply comes."""


# -- CPU time of the worker ----------------------------------------------------------------------------------


def thread_cpu_ns(pid: int, tid: int) -> int | None:
    """Time thread ``tid`` of ``pid`` has spent on a CPU, in ns (``schedstat``), or None once it is gone.

    The kernel brings a running thread's figure up to date only at its scheduler ticks (every 4 ms
    at HZ=250) and when it leaves the CPU, so it grows in steps while the thread runs; its last
    growth is when the thread stopped running, to the nanosecond.
    """
    try:
        return int((_PROC / str(pid) / "task" / str(tid) / "schedstat").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def process_cpu_ns(pid: int) -> int | None:
    """CPU time of every thread of ``pid`` together, in ns, or None once it is gone.

    Read from the process's CPU clock, which is up to date at every read (running threads included).
    """
    try:
        return time.clock_gettime_ns(((~pid) << 3) | 2)  # MAKE_PROCESS_CPUCLOCK(pid, CPUCLOCK_SCHED)
    except OSError:
        return None


def threads_cpu_ns(pid: int) -> dict[int, int]:
    """Every thread of ``pid`` with its CPU time so far, in ns."""
    times = {}
    for entry in (_PROC / str(pid) / "task").iterdir():
        used = thread_cpu_ns(pid, int(entry.name))
        if used is not None:
            times[int(entry.name)] = used
    return times


@dataclass(frozen=True)
class Sample:
    """One reading (ns): monotonic time, the worker process's CPU time, each watched thread's CPU time."""

    t: int
    process: int
    threads: tuple[int, ...]


class Sampler:
    """Reads some threads' and their process's CPU time every ``interval_s``, in a thread of its own."""

    def __init__(self, pid: int, tids: Sequence[int], interval_s: float = SAMPLE_INTERVAL_S) -> None:
        self.pid, self.tids, self.interval_s = pid, tuple(tids), interval_s
        self.samples: list[Sample] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="bench-cpu-sampler", daemon=True)

    def read(self) -> Sample:
        threads = tuple(thread_cpu_ns(self.pid, tid) or 0 for tid in self.tids)
        process = process_cpu_ns(self.pid)
        if process is None:
            raise CancelBenchError(f"the worker (pid {self.pid}) is gone")
        return Sample(time.perf_counter_ns(), process, threads)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.samples.append(self.read())
            time.sleep(self.interval_s)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> list[Sample]:
        self._stop.set()
        self._thread.join()
        return self.samples


@dataclass(frozen=True)
class Stop:
    """When the guest stopped, as the samples after a cancel show it (times in ms after the cancel)."""

    guest_stopped_ms: float | None
    """First sample after which the guest thread's CPU time never grew (None: it still grew at the end)."""
    resolution_ms: float | None
    """Width of the sampling interval the stop falls in: the stop is at most this much earlier."""
    worker_cpu_after_ms: float
    """CPU the worker process (all threads) used from the cancel to the last sample."""
    worker_busy_until_ms: float
    """End of the last sampling interval after the cancel in which the worker ran ``BUSY_SHARE`` or more."""


def analyse(samples: Sequence[Sample], at_cancel: Sample, guest: int = 0) -> Stop:
    """Where in ``samples`` (taken around the cancel ``at_cancel``) thread number ``guest`` stopped."""
    ms = 1e-6
    series = [at_cancel, *(s for s in samples if s.t > at_cancel.t)]
    if len(series) < 2:
        raise CancelBenchError("no CPU sample after the cancel")
    cpu = [s.threads[guest] for s in series]
    last_growth = max((i for i in range(1, len(series)) if cpu[i] > cpu[i - 1]), default=0)
    stopped = resolution = None
    if last_growth < len(series) - 1:  # it did not grow in the last interval: stopped
        stopped = (series[last_growth].t - at_cancel.t) * ms
        resolution = (series[last_growth].t - series[last_growth - 1].t) * ms if last_growth else 0.0
    busy = [
        series[i].t
        for i in range(1, len(series))
        if series[i].process - series[i - 1].process >= BUSY_SHARE * (series[i].t - series[i - 1].t)
    ]
    return Stop(
        guest_stopped_ms=stopped,
        resolution_ms=resolution,
        worker_cpu_after_ms=(series[-1].process - at_cancel.process) * ms,
        worker_busy_until_ms=(max(busy) - at_cancel.t) * ms if busy else 0.0,
    )


def busiest_thread(before: dict[int, int], after: dict[int, int]) -> tuple[int, int]:
    """The thread whose CPU time grew most from ``before`` to ``after``, and by how much (ns)."""
    grown = {tid: used - before.get(tid, 0) for tid, used in after.items()}
    tid = max(grown, key=lambda t: grown[t])
    return tid, grown[tid]


# -- what the bus shows --------------------------------------------------------------------------------------


@dataclass
class Observed:
    """One call as a plain NATS subscriber sees it."""

    request_id: str
    reply_subject: str
    seen_ns: int
    cancel_ns: int | None = None
    reply_ns: int | None = None
    reply: Msg | None = None
    replied: asyncio.Event = field(default_factory=asyncio.Event)


class BusWatch:
    """Spin calls, cancel messages and the worker's replies, timed as this process receives them."""

    def __init__(self, nc: NatsClient, subjects: Subjects) -> None:
        self._nc = nc
        self._subjects = subjects
        self._calls: asyncio.Queue[Observed] = asyncio.Queue()
        self._by_id: dict[str, Observed] = {}
        self._by_reply: dict[str, Observed] = {}

    async def start(self) -> None:
        await self._nc.subscribe(self._subjects.call(SPIN), cb=self._on_call)
        await self._nc.subscribe(self._subjects.cancel_any, cb=self._on_cancel)
        await self._nc.flush()

    async def _on_call(self, msg: Msg) -> None:
        now = time.perf_counter_ns()
        request_id = (msg.headers or {}).get(Header.REQUEST_ID, "")
        observed = Observed(request_id, msg.reply, now)
        self._by_id[request_id] = observed
        self._by_reply[msg.reply] = observed
        # The reply comes long after this: subscribing now cannot miss it.
        await self._nc.subscribe(msg.reply, cb=self._on_reply, max_msgs=1)
        self._calls.put_nowait(observed)

    async def _on_cancel(self, msg: Msg) -> None:
        observed = self._by_id.get(msg.subject.rpartition(".")[2])
        if observed is not None and observed.cancel_ns is None:
            observed.cancel_ns = time.perf_counter_ns()

    async def _on_reply(self, msg: Msg) -> None:
        observed = self._by_reply.pop(msg.subject, None)
        if observed is not None:
            observed.reply_ns, observed.reply = time.perf_counter_ns(), msg
            observed.replied.set()
            self._by_id.pop(observed.request_id, None)

    async def next_call(self) -> Observed:
        try:
            return await asyncio.wait_for(self._calls.get(), STEP_TIMEOUT_S)
        except TimeoutError:
            raise CancelBenchError(f"no call of {SPIN} on the bus within {STEP_TIMEOUT_S:g} s") from None


def _cancelled_code(msg: Msg | None) -> int | None:
    """The typed error code of a worker's reply (None: not a typed error)."""
    if msg is None or not msg.headers or Header.ERROR not in msg.headers:
        return None
    return int(decode(msg.data, ErrorReply).error.code)


# -- one cancel ----------------------------------------------------------------------------------------------

Cancel = Callable[["asyncio.Task[Any]", Observed], Awaitable[None]]
"""Cancels the call (its task, as seen on the bus) and returns when the caller sees it ended."""


@dataclass(frozen=True)
class Age:
    """When in the call the client cancels: ``at_s`` plus up to one epoch tick after the call is on the bus."""

    key: str
    at_s: float


AGES: Final = (Age("early", 0.005), Age("late", 0.3))
"""Soon after the guest starts, and once the call has run a while (the gateway's hot path starts
watching a call's connection for a disconnect only after one to two ``DISCONNECT_TICK_S``; see
gateway/hotpath.py)."""


async def one_cancel(
    watch: BusWatch,
    worker_pids: Sequence[int],
    guest_tids: dict[int, list[int]],
    start: Callable[[], Awaitable[Any]],
    cancel: Cancel,
    at_s: float,
) -> dict[str, Any] | None:
    """Start a spinning call and cancel it ``at_s`` after it is on the bus; times are in ms after the cancel.

    Every worker process is watched (``toolbus up`` runs one per core; the queue group picks one).
    None when the guest ran on a thread not watched yet (that thread is added to ``guest_tids``
    of its process) or never spun before the cancel reached it: measure again.
    """
    before = {pid: threads_cpu_ns(pid) for pid in worker_pids}
    task: asyncio.Task[Any] = asyncio.ensure_future(start())
    try:
        observed = await watch.next_call()
        samplers = {pid: Sampler(pid, guest_tids[pid]) for pid in worker_pids}
        for sampler in samplers.values():
            sampler.start()
        try:
            await asyncio.sleep(max(0.0, at_s - (time.perf_counter_ns() - observed.seen_ns) / 1e9))
            at_cancels = {pid: sampler.read() for pid, sampler in samplers.items()}
            await cancel(task, observed)
            client_ns = time.perf_counter_ns()
            try:
                await asyncio.wait_for(observed.replied.wait(), STEP_TIMEOUT_S)
            except TimeoutError:
                raise CancelBenchError(f"no reply from the worker {STEP_TIMEOUT_S:g} s after the cancel") from None
            await asyncio.sleep(SETTLE_S)
        finally:
            sampled = {pid: sampler.stop() for pid, sampler in samplers.items()}
    finally:
        if not task.done():
            task.cancel()
    # The worker that ran the guest: the one with the busiest thread.
    busiest = {pid: busiest_thread(before[pid], threads_cpu_ns(pid)) for pid in worker_pids}
    pid = max(busiest, key=lambda p: busiest[p][1])
    (guest, used), samples, at_cancel = busiest[pid], sampled[pid], at_cancels[pid]
    if used < MIN_GUEST_CPU_MS * 1e6:
        # On a loaded machine an early cancel can reach the worker before its guest got a core:
        # the guest never spun, so there is no stop to time. Measured again, as for an unwatched
        # thread (bounded by the caller); leaving it out only ever makes the figure worse.
        return None
    if guest not in guest_tids[pid]:
        guest_tids[pid].append(guest)
        return None
    stop = analyse(samples, at_cancel, guest_tids[pid].index(guest))
    if stop.guest_stopped_ms is None:
        raise CancelBenchError(
            f"the guest still used CPU {(samples[-1].t - at_cancel.t) / 1e6:.0f} ms after the cancel"
        )

    def since_cancel(ns: int | None) -> float | None:
        return None if ns is None else (ns - at_cancel.t) / 1e6

    return {
        "call_age_ms": (at_cancel.t - observed.seen_ns) / 1e6,
        "guest_cpu_ms": used / 1e6,
        "guest_stopped_ms": stop.guest_stopped_ms,
        "resolution_ms": stop.resolution_ms,
        "worker_cpu_after_ms": stop.worker_cpu_after_ms,
        "worker_busy_until_ms": stop.worker_busy_until_ms,
        "client_done_ms": since_cancel(client_ns),
        "cancel_on_bus_ms": since_cancel(observed.cancel_ns),
        "reply_on_bus_ms": since_cancel(observed.reply_ns),
        "reply_code": _cancelled_code(observed.reply),
        "samples": len(samples),
    }


async def _sdk_cancel(task: asyncio.Task[Any], _observed: Observed) -> None:
    """As the gateway tests do: cancel the ``call_tool`` task and wait for it to end."""
    task.cancel()
    try:
        await task
    except asyncio.CancelledError:
        current = asyncio.current_task()
        if current is not None and current.cancelling():
            raise  # the bench itself is being cancelled
    else:
        raise CancelBenchError(f"{SPIN} finished instead of being cancelled")


def _bus_cancel(nc: NatsClient, subjects: Subjects) -> Cancel:
    async def cancel(task: asyncio.Task[Any], observed: Observed) -> None:
        await nc.publish(subjects.cancel(observed.request_id), b"")
        reply: Msg = await asyncio.wait_for(task, STEP_TIMEOUT_S)
        if _cancelled_code(reply) != ErrorCode.CANCELLED:
            raise CancelBenchError(f"the worker answered a cancelled call with {reply.headers} {reply.data[:200]!r}")

    return cancel


def _bus_call(nc: NatsClient, subjects: Subjects, tool: str, arguments: Any) -> Callable[[], Awaitable[Msg]]:
    requests = CallRequests(subjects)

    def call() -> Awaitable[Msg]:
        request = requests.build(tool, encode(arguments), timeout_s=30)
        return nc.request(request.subject, request.body, timeout=30, headers=request.headers)

    return call


async def _round_trips(call: Callable[[], Awaitable[Any]], samples: int) -> list[float]:
    for _ in range(BASELINE_WARMUP):
        await call()
    times = []
    for _ in range(samples):
        started = time.perf_counter_ns()
        await call()
        times.append((time.perf_counter_ns() - started) / 1e6)
    return times


async def _cancels(
    watch: BusWatch, worker_pids: Sequence[int], start: Callable[[], Awaitable[Any]], cancel: Cancel, count: int
) -> dict[str, list[dict[str, Any]]]:
    """``count`` cancels at each of ``AGES``, each at a random point of its epoch tick."""
    jitter = random.Random(count)
    guest_tids: dict[int, list[int]] = {pid: [] for pid in worker_pids}
    by_age: dict[str, list[dict[str, Any]]] = {age.key: [] for age in AGES}
    for age in AGES:
        measured = by_age[age.key]
        unwatched = 0
        while len(measured) < count:
            sample = await one_cancel(
                watch, worker_pids, guest_tids, start, cancel, age.at_s + jitter.uniform(0, EPOCH_TICK_S)
            )
            if sample is not None:
                measured.append(sample)
                continue
            unwatched += 1  # an unwatched guest thread (now watched) or a guest that never spun: again
            if unwatched > 2 * count:
                raise CancelBenchError(f"{unwatched} cancels could not be measured (unwatched thread, or no spin)")
    return by_age


async def _measure_path(
    key: str,
    mode: str,
    mcp_url: str,
    nc: NatsClient,
    subjects: Subjects,
    watch: BusWatch,
    worker_pids: Sequence[int],
    plan: Plan,
) -> dict[str, Any]:
    if key == BUS:
        baseline = await _round_trips(_bus_call(nc, subjects, ADD, ADD_ARGUMENTS), plan.cancel_baseline_samples)
        spin = _bus_call(nc, subjects, SPIN, {})
        by_age = await _cancels(watch, worker_pids, spin, _bus_cancel(nc, subjects), plan.cancel_samples)
        return {"path": key, "baseline_ms": baseline, "cancels": by_age}
    async with Client(mcp_url, mode=mode) as client:
        if client.protocol_version != key:
            raise CancelBenchError(f"mode {mode!r} negotiated {client.protocol_version}, not {key}")
        await client.list_tools()

        async def add() -> Any:
            return await client.call_tool(ADD, ADD_ARGUMENTS)

        async def spin() -> Any:
            return await client.call_tool(SPIN, {})

        baseline = await _round_trips(add, plan.cancel_baseline_samples)
        by_age = await _cancels(watch, worker_pids, spin, _sdk_cancel, plan.cancel_samples)
    return {"path": key, "baseline_ms": baseline, "cancels": by_age}


SUMMARY_KEYS: Final = (
    "call_age_ms",
    "cancel_on_bus_ms",
    "guest_stopped_ms",
    "worker_cpu_after_ms",
    "worker_busy_until_ms",
    "reply_on_bus_ms",
    "client_done_ms",
    "resolution_ms",
)


def summarize(path: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per age of a path: n, mean, p50, p90, p99, max of each measured time, and the path's baseline."""
    rows = []
    for age in AGES:
        cancels = path["cancels"][age.key]
        row: dict[str, Any] = {"path": path["path"], "age": age.key, "baseline_ms": summary(path["baseline_ms"])}
        for key in SUMMARY_KEYS:
            row[key] = summary([c[key] for c in cancels if c[key] is not None])
        row["replied_cancelled"] = sum(1 for c in cancels if c["reply_code"] == ErrorCode.CANCELLED)
        rows.append(row)
    return rows


async def _measure(
    mcp_url: str, nats_url: str, subjects: Subjects, worker_pids: Sequence[int], plan: Plan, progress: Progress
) -> dict[str, Any]:
    nc = await nats.connect(nats_url, name="bench-cancel")
    try:
        watch = BusWatch(nc, subjects)
        await watch.start()
        paths, rows = [], []
        for key, mode in PATHS:
            measured = await _measure_path(key, mode, mcp_url, nc, subjects, watch, worker_pids, plan)
            paths.append(measured)
            for row in summarize(measured):
                rows.append(row)
                stopped, on_bus = row["guest_stopped_ms"], row["cancel_on_bus_ms"]
                progress(
                    f"cancel {key:<10} {row['age']:<5}: guest stopped p50 {stopped['p50']:5.1f} / "
                    f"p90 {stopped['p90']:5.1f} / max {stopped['max']:5.1f} ms; cancel on the bus p50 "
                    f"{on_bus['p50']:.1f} ms (plain call p50 {row['baseline_ms']['p50']:.2f} ms)"
                )
    finally:
        await nc.close()
    return {
        "tool": SPIN,
        "baseline_tool": ADD,
        "target_ms": TARGET_MS,
        "epoch_tick_ms": EPOCH_TICK_S * 1000,
        "sample_interval_ms": SAMPLE_INTERVAL_S * 1000,
        "ages": {age.key: age.at_s * 1000 for age in AGES},
        "summary": rows,
        "paths": paths,
    }


def measure(
    mcp_url: str, nats_url: str, subjects: Subjects, worker_pids: Sequence[int], plan: Plan, progress: Progress
) -> dict[str, Any]:
    """``plan.cancel_samples`` cancels per era (and on the bus alone) at each age; raw samples and summaries."""
    return asyncio.run(_measure(mcp_url, nats_url, subjects, worker_pids, plan, progress))
