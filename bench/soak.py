"""The soak run: minutes at half the measured maximum throughput, sampling every process's memory.

    .venv/bin/python -m bench.soak                # 10 minutes of soak (~12 min in all)
    .venv/bin/python -m bench.soak --minutes 2    # shorter, while developing

1. ``toolbus up`` (bench/config/soak.toml: the testkit and both examples, ``--workers 2``).
2. The maximum: wrk at ``AT_CONNECTIONS`` connections on 2026-07-28 ``tools/call kit_add``
   (the same request, script and wrk runner as the HTTP section of bench/run.py).
3. The soak: the same request paced at half that rate — wrk with a per-connection delay after
   each response (``wrk.Load.delay_ms``), one 60 s wrk run per minute so that every minute has
   its own counts and latency percentiles; the delay is re-aimed after each minute from the
   rate it achieved. Beside it, once a second, a fresh 2025-11-25 session (initialize,
   ``tools/list``, ``tools/call calc_add``, DELETE) so that session set-up and tear-down and
   the componentize-py component run all along too.
4. Every ``SAMPLE_INTERVAL_S`` the RSS of every process (nats-server, registry, gateway,
   workers, the ``toolbus up`` supervisor); each minute the CPU they used, the machine's load
   and what the rest of the machine used (it is shared).

Growth per process compares the median RSS of the first minute with that of the last.
Writes bench/soak.json (or ``--out``) and prints the tables.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import resource
import shutil
import signal
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Final

import nats

from bench import end_to_end, machine, wrk
from bench.cpu import CpuMeter, MachineMeter
from bench.mcp_http import ERA_2025, McpClient, McpHttpError
from bench.memory import MB, MemorySample, MemorySampler
from bench.system import CONFIG_DIR, ToolbusSystem
from bench.targets import AT_CONNECTIONS
from harness.processes import REPO, Children

DEFAULT_MINUTES: Final = 10
DEFAULT_WORKERS: Final = 2
MINUTE_S: Final = 60.0
WARMUP_S: Final = 3.0
PEAK_S: Final = 10.0
"""How long the maximum is measured (after ``WARMUP_S`` at the same load)."""
CYCLE_S: Final = 0.02
"""A paced connection sends about one request per cycle: the connection count follows from the
rate, and a delay of ~20 ms keeps wrk's whole-millisecond delay within a few % of the aim."""
CALIBRATION_S: Final = 5.0
CALIBRATION_RUNS: Final = 2
SOAK_DAMPING: Final = 0.5
"""How far each minute re-aims the delay (calibration re-aims all the way)."""
SAMPLE_INTERVAL_S: Final = 5.0
SESSION_INTERVAL_S: Final = 1.0
SESSION_TOOL: Final = "calc_add"
SESSION_ARGUMENTS: Final = {"a": 2, "b": 3}
DEFAULT_OUT: Final = REPO / "bench" / "soak.json"

Progress = Callable[[str], None]


# -- pacing -----------------------------------------------------------------------------------------


def paced_connections(target_rps: float) -> int:
    """Connections for a paced load at ``target_rps``: one request per ``CYCLE_S`` on each."""
    if not (math.isfinite(target_rps) and target_rps > 0):
        raise ValueError(f"target rate must be a positive number of calls/s, not {target_rps!r}")
    return max(1, round(target_rps * CYCLE_S))


def delay_for(target_rps: float, connections: int, overhead_ms: float) -> int:
    """The per-connection delay (whole ms, at least 1) that gives ``target_rps`` when each
    request also takes ``overhead_ms`` (its latency plus wrk's own timer slack)."""
    return max(1, round(connections * 1000 / target_rps - overhead_ms))


def next_delay(target_rps: float, connections: int, delay_ms: int, measured_rps: float, *, damping: float = 1.0) -> int:
    """Re-aim the delay after a run at ``delay_ms`` achieved ``measured_rps``.

    A connection's cycle is ``connections / rate``; what it spent beyond the delay is the
    overhead, assumed to stay the same for the next run. ``damping`` (0-1] moves only that
    share of the way to the new aim: on a shared machine the overhead of one minute says
    little about the next, and a full correction overshoots.
    """
    if measured_rps <= 0:
        return delay_ms
    overhead_ms = connections * 1000 / measured_rps - delay_ms
    aim = delay_for(target_rps, connections, max(0.0, overhead_ms))
    return max(1, round(delay_ms + (aim - delay_ms) * damping))


# -- memory growth ---------------------------------------------------------------------------------


def _median(values: Sequence[float]) -> float | None:
    return round(statistics.median(values), 2) if values else None


def growth(samples: Sequence[MemorySample], window_s: float = MINUTE_S) -> list[dict[str, Any]]:
    """Per process: median RSS over the first ``window_s`` and over the last, the change in MB
    and %, the peak, and whether its pid changed (a restart, not growth).

    Raises:
        ValueError: there are no samples.
    """
    if not samples:
        raise ValueError("no memory samples")
    start, end = samples[0].at_s, samples[-1].at_s
    first = [s for s in samples if s.at_s < start + window_s]
    last = [s for s in samples if s.at_s > end - window_s]
    roles = sorted({role for s in samples for role in s.rss_mb}, key=_role_order)
    rows = []
    for role in roles:
        before = _median([s.rss_mb[role] for s in first if role in s.rss_mb])
        after = _median([s.rss_mb[role] for s in last if role in s.rss_mb])
        delta = None if before is None or after is None else round(after - before, 2)
        rows.append(
            {
                "process": role,
                "first_minute_mb": before,
                "last_minute_mb": after,
                "growth_mb": delta,
                "growth_pct": None if delta is None or not before else round(100 * delta / before, 1),
                "peak_mb": max(s.rss_mb[role] for s in samples if role in s.rss_mb),
                "restarted": len({s.pids[role] for s in samples if role in s.pids}) > 1,
            }
        )
    return rows


_ROLE_ORDER: Final = ("nats-server", "registry", "gateway", "worker", "toolbus-up")


def _role_order(role: str) -> tuple[int, str]:
    base = role.rsplit("-", 1)[0] if role[-1:].isdigit() else role
    return (_ROLE_ORDER.index(base) if base in _ROLE_ORDER else len(_ROLE_ORDER), role)


# -- the 2025 sessions beside the load ------------------------------------------------------------


@dataclass(frozen=True)
class SessionOutcome:
    """One 2025-11-25 session run ``at_s`` seconds into the soak: how long it took, what failed."""

    at_s: float
    seconds: float
    error: str | None = None


def sessions_per_minute(outcomes: Sequence[SessionOutcome], minutes: int) -> list[dict[str, Any]]:
    """Per minute of the soak: sessions done, failed, and the median session's duration (ms)."""
    rows = []
    for minute in range(minutes):
        inside = [o for o in outcomes if minute * MINUTE_S <= o.at_s < (minute + 1) * MINUTE_S]
        good = [o.seconds * 1000 for o in inside if o.error is None]
        rows.append(
            {
                "minute": minute + 1,
                "sessions": len(inside),
                "failed": len(inside) - len(good),
                "p50_ms": _median(good),
            }
        )
    return rows


def one_session(url: str) -> None:
    """A fresh 2025-11-25 session: initialize, ``tools/list``, one ``tools/call``, DELETE.

    Raises:
        McpHttpError: an answer was not a result, or the call's text was wrong.
        OSError: the gateway could not be reached.
    """
    client = McpClient(url, ERA_2025)
    try:
        client.handshake()
        if not client.list_tools().get("tools"):
            raise McpHttpError("tools/list returned no tools")
        result = client.call_tool(SESSION_TOOL, SESSION_ARGUMENTS)
        if result.get("isError") or result["content"][0]["text"] != "5":
            raise McpHttpError(f"{SESSION_TOOL}: unexpected result {result}")
    finally:
        client.end_session()
        client.close()


@dataclass
class SessionTraffic:
    """Runs ``one_session`` every ``interval_s`` in a thread and records each outcome."""

    url: str
    interval_s: float = SESSION_INTERVAL_S
    outcomes: list[SessionOutcome] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None
    _started: float = 0.0

    def _loop(self) -> None:
        next_at = time.monotonic()
        while not self._stop.is_set():
            began = time.monotonic()
            error = None
            try:
                one_session(self.url)
            except (OSError, McpHttpError, KeyError, IndexError) as exc:
                error = f"{type(exc).__name__}: {exc}"[:300]
            self.outcomes.append(SessionOutcome(round(began - self._started, 3), time.monotonic() - began, error))
            next_at += self.interval_s
            self._stop.wait(max(0.0, next_at - time.monotonic()))

    def start(self) -> None:
        self._started = time.monotonic()
        self._thread = threading.Thread(target=self._loop, name="soak-sessions", daemon=True)
        self._thread.start()

    def stop(self) -> list[SessionOutcome]:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        return self.outcomes


# -- tables ----------------------------------------------------------------------------------------


def _cell(value: Any, digits: int = 1) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def memory_table(rows: Sequence[dict[str, Any]]) -> str:
    """The growth rows as a Markdown table."""
    lines = [
        "| process | first minute MB | last minute MB | growth MB | growth % | peak MB |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        name = row["process"] + (" (restarted)" if row["restarted"] else "")
        cells = [row["first_minute_mb"], row["last_minute_mb"], row["growth_mb"], row["growth_pct"], row["peak_mb"]]
        lines.append(f"| {name} | " + " | ".join(_cell(c) for c in cells) + " |")
    return "\n".join(lines)


def minutes_table(minutes: Sequence[dict[str, Any]]) -> str:
    """The per-minute load, latency and machine figures as a Markdown table."""
    lines = [
        "| minute | calls | failed | calls/s | p50 ms | p99 ms | sessions (failed) | session p50 ms "
        "| toolbus cores | other cores | load avg |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for m in minutes:
        cells = [
            m["minute"],
            m["calls"],
            m["failed"],
            m["rps"],
            m["p50_ms"],
            m["p99_ms"],
            f"{m['sessions']} ({m['sessions_failed']})",
            m["session_p50_ms"],
            m["toolbus_cores"],
            m["other_cores"],
            m["load_average"],
        ]
        digits = [0, 0, 0, 0, 2, 2, 0, 1, 2, 2, 2]
        lines.append("| " + " | ".join(_cell(c, d) for c, d in zip(cells, digits, strict=True)) + " |")
    return "\n".join(lines)


# -- JetStream ---------------------------------------------------------------------------------------


async def _streams(nats_url: str) -> dict[str, dict[str, int]]:
    nc = await nats.connect(nats_url, name="bench-soak")
    infos: list[Any] = []
    try:
        # The server answers one page (256 streams) per request: ask from each offset until all came.
        while True:
            page = await nc.jsm().streams_info(offset=len(infos))
            infos += page
            if not page:
                break
    finally:
        await nc.close()
    return {i.config.name or "?": {"messages": i.state.messages, "bytes": i.state.bytes} for i in infos}


def stream_sizes(nats_url: str) -> dict[str, dict[str, int]]:
    """Messages and bytes held by every JetStream stream (nats-server's memory follows them)."""
    return asyncio.run(_streams(nats_url))


def stream_growth(before: dict[str, dict[str, int]], after: dict[str, dict[str, int]]) -> list[dict[str, Any]]:
    """Per stream that holds anything at the end: messages and MB before, after, and added."""
    rows = []
    for name in sorted(after, key=lambda n: -after[n]["bytes"]):
        start, end = before.get(name, {"messages": 0, "bytes": 0}), after[name]
        if not end["messages"]:
            continue
        rows.append(
            {
                "stream": name,
                "messages_before": start["messages"],
                "messages_after": end["messages"],
                "mb_before": round(start["bytes"] / MB, 2),
                "mb_after": round(end["bytes"] / MB, 2),
                "added_mb": round((end["bytes"] - start["bytes"]) / MB, 2),
            }
        )
    return rows


def streams_table(rows: Sequence[dict[str, Any]]) -> str:
    """What the JetStream streams held before and after the soak, as a Markdown table."""
    lines = ["| stream | messages before | messages after | MB before | MB after |", "|---|---:|---:|---:|---:|"]
    for row in rows:
        cells = [row["messages_before"], row["messages_after"], row["mb_before"], row["mb_after"]]
        lines.append(f"| {row['stream']} | " + " | ".join(_cell(c, 2) for c in cells) + " |")
    return "\n".join(lines)


# -- the run ---------------------------------------------------------------------------------------


def _cpu_self_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)  # wrk, once each run has ended
    return usage.ru_utime + usage.ru_stime + children.ru_utime + children.ru_stime


@dataclass
class Soak:
    """One soak run against a started system."""

    system: ToolbusSystem
    minutes: int
    progress: Progress
    binary: str = field(default_factory=wrk.ensure_wrk)

    def peak(self, load: wrk.Load) -> dict[str, Any]:
        """The maximum: wrk at full speed, after a warm-up at the same load."""
        wrk.run(self.binary, load, AT_CONNECTIONS, WARMUP_S)
        result = wrk.run(self.binary, load, AT_CONNECTIONS, PEAK_S)
        self.progress(
            f"maximum: {result['rps']:.0f} calls/s at {AT_CONNECTIONS} connections, "
            f"p50 {result['p50_ms']:.2f} ms, p99 {result['p99_ms']:.2f} ms, {result['errors']} errors"
        )
        return result

    def calibrate(self, load: wrk.Load, target_rps: float, peak_p50_ms: float) -> tuple[int, int, list[float]]:
        """Connections and a first delay for ``target_rps``, re-aimed over short runs."""
        connections = paced_connections(target_rps)
        delay = delay_for(target_rps, connections, peak_p50_ms / 2)
        achieved = []
        for _ in range(CALIBRATION_RUNS):
            result = wrk.run(self.binary, replace(load, delay_ms=delay), connections, CALIBRATION_S)
            achieved.append(round(result["rps"], 1))
            self.progress(f"calibration: delay {delay} ms on {connections} connections → {result['rps']:.0f} calls/s")
            delay = next_delay(target_rps, connections, delay, result["rps"])
        return connections, delay, achieved

    def run(self) -> dict[str, Any]:
        endpoint = end_to_end.toolbus_endpoints(self.system.mcp_url, self.system.processes())[0]
        end_to_end.probe(endpoint)
        load = endpoint.load(None)
        peak = self.peak(load)
        target = peak["rps"] / 2
        connections, delay, calibration = self.calibrate(load, target, peak["p50_ms"])
        self.progress(f"soak: {self.minutes} min at {target:.0f} calls/s ({connections} connections) + sessions")

        streams_before = stream_sizes(self.system.nats_url)
        sampler = MemorySampler(self.system.processes, SAMPLE_INTERVAL_S)
        sessions = SessionTraffic(self.system.mcp_url)
        minutes: list[dict[str, Any]] = []
        sampler.start()
        sessions.start()
        try:
            for minute in range(1, self.minutes + 1):
                minutes.append(self._minute(minute, replace(load, delay_ms=delay), connections))
                delay = next_delay(target, connections, delay, minutes[-1]["rps"], damping=SOAK_DAMPING)
        finally:
            outcomes = sessions.stop()
            samples = sampler.stop()
        streams = stream_growth(streams_before, stream_sizes(self.system.nats_url))
        for row, per in zip(minutes, sessions_per_minute(outcomes, self.minutes), strict=True):
            row.update(sessions=per["sessions"], sessions_failed=per["failed"], session_p50_ms=per["p50_ms"])
        return {
            "peak": peak,
            "target_rps": round(target, 1),
            "connections": connections,
            "calibration_rps": calibration,
            "minutes": minutes,
            "session_errors": sorted({o.error for o in outcomes if o.error})[:20],
            "memory": {"growth": growth(samples), "samples": [asdict(s) for s in samples]},
            "streams": streams,
        }

    def _minute(self, minute: int, load: wrk.Load, connections: int) -> dict[str, Any]:
        processes = self.system.processes()
        meter, whole = CpuMeter(processes), MachineMeter()
        meter.start()
        whole.start()
        own_before = _cpu_self_s()
        result = wrk.run(self.binary, load, connections, MINUTE_S)
        wall_s = result["duration_s"]
        cores = meter.stop(wall_s)
        machine_busy = whole.stop(wall_s)
        own = (_cpu_self_s() - own_before) / wall_s if wall_s else 0.0  # wrk + this bench's sessions
        toolbus_cores = round(sum(cores.values()), 2)
        row = {
            "minute": minute,
            "delay_ms": load.delay_ms,
            "calls": result["requests"],
            "failed": result["errors"],
            "rps": round(result["rps"], 1),
            "p50_ms": result["p50_ms"],
            "p90_ms": result["p90_ms"],
            "p99_ms": result["p99_ms"],
            "max_ms": result["max_ms"],
            "cpu_cores": cores,
            "toolbus_cores": toolbus_cores,
            "bench_cores": round(own, 2),
            "machine_cores_busy": machine_busy,
            "other_cores": round(max(0.0, machine_busy - toolbus_cores - own), 2),
            "load_average": round(os.getloadavg()[0], 2),
        }
        self.progress(
            f"minute {minute}: {row['calls']} calls ({row['failed']} failed), {row['rps']:.0f}/s, "
            f"p50 {row['p50_ms']:.2f} ms, p99 {row['p99_ms']:.2f} ms; machine {machine_busy:.2f} cores busy "
            f"(toolbus {toolbus_cores:.2f}, others {row['other_cores']:.2f}), load {row['load_average']:.2f}"
        )
        return row


def execute(minutes: int, workers: int, out: Path, progress: Progress, keep_logs: bool = False) -> dict[str, Any]:
    """Start the system, soak it, stop it; write the JSON report to ``out`` and return it."""
    started = time.monotonic()
    scratch = Path(tempfile.mkdtemp(prefix="toolbus-soak-"))
    binary = wrk.ensure_wrk()
    results: dict[str, Any] = {
        "schema": 1,
        "command": " ".join(["python -m bench.soak", *sys.argv[1:]]),
        "minutes": minutes,
        "workers": workers,
        "load": {
            "tool": end_to_end.TOOL,
            "era": "2026-07-28",
            "sessions": f"one 2025-11-25 session per {SESSION_INTERVAL_S:g} s calling {SESSION_TOOL}",
        },
        "sample_interval_s": SAMPLE_INTERVAL_S,
        "machine": machine.describe(wrk.version(binary)),
    }
    try:
        with Children(scratch / "logs") as children:
            system = ToolbusSystem("soak", CONFIG_DIR / "soak.toml", scratch, workers=workers)
            progress(f"starting toolbus up (bench/config/soak.toml, {workers} workers)")
            system.start(children)
            progress(f"toolbus is up: {system.mcp_url}; processes {sorted(system.processes().values())}")
            results.update(Soak(system, minutes, progress, binary).run())
    except BaseException:
        print(f"soak: logs of every process are in {scratch / 'logs'}", file=sys.stderr)
        raise
    results["duration_s"] = round(time.monotonic() - started, 1)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=1) + "\n")
    if not keep_logs:
        shutil.rmtree(scratch, ignore_errors=True)
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=int, default=DEFAULT_MINUTES, help="soak duration (default: 10)")
    parser.add_argument("--workers", type=int, default=DEFAULT_WORKERS, help="worker processes (default: 2)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="the JSON report (default: bench/soak.json)")
    parser.add_argument("--keep-logs", action="store_true", help="keep every process's log")
    args = parser.parse_args()
    if args.minutes < 2:
        parser.error("--minutes must be at least 2: growth compares the first minute with the last")
    if args.workers < 1:
        parser.error("--workers must be at least 1")
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    started = time.monotonic()

    def progress(message: str) -> None:
        elapsed = time.monotonic() - started
        print(f"[{int(elapsed // 60):02d}:{elapsed % 60:04.1f}] {message}", flush=True)

    try:
        results = execute(args.minutes, args.workers, args.out, progress, args.keep_logs)
    except KeyboardInterrupt:
        print("soak: interrupted; every child process has been stopped", file=sys.stderr)
        return 130
    print()
    print(minutes_table(results["minutes"]))
    print()
    print(memory_table(results["memory"]["growth"]))
    print()
    print(streams_table(results["streams"]))
    progress(f"wrote {args.out}")
    failed = sum(m["failed"] for m in results["minutes"]) + sum(m["sessions_failed"] for m in results["minutes"])
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
