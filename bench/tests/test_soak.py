"""bench.soak and bench.memory: pacing arithmetic, memory growth, per-minute sessions, the tables,
the RSS sampler on real processes, and a paced wrk against a real local server."""

from __future__ import annotations

import asyncio
import itertools
import math
import os
import shutil
import subprocess
import sys
import uuid

import pytest

from bench import soak, wrk
from bench.memory import MB, MemorySample, MemorySampler, rss_bytes
from bus.connection import connect
from bus.embedded import EmbeddedNatsServer

# -- pacing ------------------------------------------------------------------------------------------


def test_paced_connections_send_one_request_per_cycle() -> None:
    assert soak.paced_connections(1200) == round(1200 * soak.CYCLE_S) == 24
    assert soak.paced_connections(10) == 1  # never zero connections


@pytest.mark.parametrize("rate", [0, -5, math.nan, math.inf])
def test_a_rate_that_is_not_positive_is_refused(rate: float) -> None:
    with pytest.raises(ValueError, match="positive number of calls/s"):
        soak.paced_connections(rate)


def test_the_delay_leaves_room_for_the_overhead_and_never_reaches_zero() -> None:
    assert soak.delay_for(1000, 20, overhead_ms=2) == 18  # 20 connections x 20 ms cycles = 1000/s
    # 0 would mean no delay() at all (full speed): the shortest pacing is 1 ms.
    assert soak.delay_for(1000, 1, overhead_ms=5) == 1


def test_next_delay_shortens_when_the_rate_fell_short_and_keeps_it_when_on_target() -> None:
    # 20 connections at 900/s: a 22.2 ms cycle, of which 18 ms delay, so 4.2 ms overhead.
    assert soak.next_delay(1000, 20, 18, measured_rps=900) == 16
    assert soak.next_delay(1000, 20, 18, measured_rps=1000) == 18
    assert soak.next_delay(1000, 20, 16, measured_rps=1100) > 16
    assert soak.next_delay(1000, 20, 18, measured_rps=0) == 18  # nothing measured: unchanged


def test_damping_moves_only_part_of_the_way() -> None:
    # The full aim is 16 ms (above); half-way from 18 is 17.
    assert soak.next_delay(1000, 20, 18, measured_rps=900, damping=0.5) == 17
    assert soak.next_delay(1000, 20, 2, measured_rps=2000, damping=0.5) >= 1


# -- memory growth -----------------------------------------------------------------------------------


def _samples() -> list[MemorySample]:
    """Three minutes every 5 s: the gateway grows 80 → 90 MB, the worker restarts at 100 s,
    a second worker appears only after the first minute."""
    samples = []
    for i in range(37):
        at = i * 5.0
        rss = {"nats-server": 20.0, "gateway": 80.0 + 10.0 * at / 180, "worker": 100.0}
        pids = {"nats-server": 1, "gateway": 2, "worker": 3 if at < 100 else 4}
        if at >= 60:
            rss["worker-2"], pids["worker-2"] = 50.0, 5
        samples.append(MemorySample(at, rss, pids))
    return samples


def test_growth_compares_the_medians_of_the_first_and_the_last_minute() -> None:
    rows = {row["process"]: row for row in soak.growth(_samples())}
    assert list(rows) == ["nats-server", "gateway", "worker", "worker-2"]  # the system's order
    gateway = rows["gateway"]
    # First minute: 0..55 s, median at 27.5 s; last minute: 125..180 s, median at 152.5 s.
    assert gateway["first_minute_mb"] == pytest.approx(80 + 10 * 27.5 / 180, abs=0.01)
    assert gateway["last_minute_mb"] == pytest.approx(80 + 10 * 152.5 / 180, abs=0.01)
    assert gateway["growth_mb"] == pytest.approx(10 * 125 / 180, abs=0.02)
    assert gateway["growth_pct"] == pytest.approx(100 * gateway["growth_mb"] / gateway["first_minute_mb"], abs=0.1)
    assert gateway["peak_mb"] == pytest.approx(90.0)
    assert (rows["nats-server"]["growth_mb"], rows["nats-server"]["growth_pct"]) == (0.0, 0.0)
    assert rows["worker"]["restarted"] and not rows["gateway"]["restarted"]
    # Not there in the first minute: no growth to speak of.
    assert rows["worker-2"]["first_minute_mb"] is None and rows["worker-2"]["growth_mb"] is None


def test_growth_of_no_samples_is_an_error() -> None:
    with pytest.raises(ValueError, match="no memory samples"):
        soak.growth([])


def test_sessions_are_counted_in_the_minute_they_started() -> None:
    outcomes = [
        soak.SessionOutcome(1.0, 0.020),
        soak.SessionOutcome(59.9, 0.040),
        soak.SessionOutcome(60.0, 0.030, error="OSError: refused"),
        soak.SessionOutcome(61.0, 0.010),
    ]
    assert soak.sessions_per_minute(outcomes, 3) == [
        {"minute": 1, "sessions": 2, "failed": 0, "p50_ms": 30.0},
        {"minute": 2, "sessions": 2, "failed": 1, "p50_ms": 10.0},
        {"minute": 3, "sessions": 0, "failed": 0, "p50_ms": None},
    ]


def test_the_tables_show_every_process_and_minute() -> None:
    memory = soak.memory_table(soak.growth(_samples()))
    assert "| worker (restarted) |" in memory
    assert "| worker-2 | — | 50.0 | — | — | 50.0 |" in memory
    minute = {
        "minute": 1,
        "calls": 60000,
        "failed": 2,
        "rps": 1000.4,
        "p50_ms": 1.234,
        "p99_ms": 9.5,
        "sessions": 60,
        "sessions_failed": 0,
        "session_p50_ms": 25.0,
        "toolbus_cores": 0.9,
        "other_cores": 0.5,
        "load_average": 3.25,
    }
    row = soak.minutes_table([minute]).splitlines()[-1]
    assert row == "| 1 | 60000 | 2 | 1000 | 1.23 | 9.50 | 60 (0) | 25.0 | 0.90 | 0.50 | 3.25 |"


# -- RSS of real processes ---------------------------------------------------------------------------


def test_rss_of_a_live_process_and_of_a_gone_one() -> None:
    assert (rss_bytes(os.getpid()) or 0) > MB
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    assert rss_bytes(child.pid) is None


def test_the_sampler_samples_at_start_and_stop_and_skips_gone_processes() -> None:
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        processes = {os.getpid(): "bench", child.pid: "worker"}
        sampler = MemorySampler(lambda: processes, interval_s=0.05)
        sampler.start()
        assert set(sampler.samples[0].rss_mb) == {"bench", "worker"}
        child.kill()
        child.wait()
        samples = sampler.stop()
    finally:
        child.kill()
    assert len(samples) >= 2
    assert samples[0].pids == {"bench": os.getpid(), "worker": child.pid}
    assert set(samples[-1].rss_mb) == {"bench"}  # the killed one is left out, not sampled as 0
    assert all(later.at_s >= earlier.at_s for earlier, later in itertools.pairwise(samples))


# -- a paced wrk -------------------------------------------------------------------------------------


@pytest.mark.skipif(shutil.which("wrk") is None, reason="wrk is not installed")
def test_a_delay_paces_each_connection(server: str) -> None:
    binary = shutil.which("wrk")
    assert binary is not None
    load = wrk.Load(server, {}, '{"id":{id}}', '"text":"5"', delay_ms=200)
    paced = wrk.run(binary, load, 1, 2)
    # One connection waiting 200 ms after each answer: at most ~10 requests in 2 s (unpaced,
    # the same server answers hundreds; see test_wrk).
    assert 1 <= paced["requests"] <= 11
    assert paced["bad_body"] == 0


# -- JetStream streams -------------------------------------------------------------------------------


def test_stream_growth_lists_what_each_stream_added_biggest_first() -> None:
    before = {"AUDIT": {"messages": 10, "bytes": MB}, "EMPTY": {"messages": 0, "bytes": 0}}
    after = {
        "AUDIT": {"messages": 1010, "bytes": 11 * MB},
        "TASKS": {"messages": 3, "bytes": MB // 2},
        "EMPTY": {"messages": 0, "bytes": 0},
    }
    rows = soak.stream_growth(before, after)
    assert [row["stream"] for row in rows] == ["AUDIT", "TASKS"]  # empty streams are left out
    assert rows[0] == {
        "stream": "AUDIT",
        "messages_before": 10,
        "messages_after": 1010,
        "mb_before": 1.0,
        "mb_after": 11.0,
        "added_mb": 10.0,
    }
    assert rows[1]["messages_before"] == 0 and rows[1]["added_mb"] == 0.5  # created during the soak
    assert "| AUDIT | 10 | 1010 | 1.00 | 11.00 |" in soak.streams_table(rows)


def test_stream_sizes_reads_a_real_server(nats_server: EmbeddedNatsServer) -> None:
    name = f"SOAK{uuid.uuid4().hex[:8]}"

    async def fill() -> None:
        nc = await connect(nats_server.url, name="test-soak")
        try:
            js = nc.jetstream()
            await js.add_stream(name=name, subjects=[f"{name}.>"])
            for i in range(5):
                await js.publish(f"{name}.x", b"x" * 100 * (i + 1))
        finally:
            await nc.close()

    asyncio.run(fill())
    sizes = soak.stream_sizes(nats_server.url)
    assert sizes[name]["messages"] == 5
    assert sizes[name]["bytes"] > 1500  # 1,500 bytes of payload plus headers
