"""What the audit trail and the rate limiter cost a call, against baselines measured in the same run.

1. ``AuditTrail.observe`` (the call observer, on the hot path) against an observer that does
   nothing: in-process, no event loop work.
2. The drain task, per event (redact, encode, JetStream publish with ack), against a real
   nats-server: off the hot path, but on the same event loop.
3. ``RateLimiter.check`` with tokens leased locally, against a limiter with no limits set; and
   when every check has to lease from KV (a compare-and-set round trip), which is what counting
   every call in KV would cost.

Run: ``.venv/bin/python -m bench.audit_costs``
"""

from __future__ import annotations

import asyncio
import statistics
import tempfile
import time
from pathlib import Path

from nats.aio.client import Client as NatsClient

from bench.stats import per_call_us
from bus.connection import connect
from bus.embedded import EmbeddedNatsServer
from bus.subjects import Subjects
from gateway.audit_trail import AuditTrail
from gateway.principals import Principal
from gateway.ratelimit import RateLimiter
from gateway.tool_service import CallRecord
from registry.audit_stream import ensure_audit_stream
from schemas.config import AuditSettings, RateLimit, RateLimitSettings

NUMBER = 20_000
REPEAT = 9
DRAIN_EVENTS = 20_000
KV_CHECKS = 2_000
ARGUMENTS = {"query": "select 1", "options": {"api_key": "k", "limit": 10}, "tags": ["a", "b"]}


def record(n: int) -> CallRecord:
    return CallRecord(
        "kit_add", Principal("alice"), "2026-07-28", f"r{n}", None, ARGUMENTS, "ok", None, time.time(), 0.001
    )


def observer_costs() -> tuple[float, float]:
    """Median µs per call: (no-op observer, ``AuditTrail.observe``)."""
    trail = AuditTrail(NatsClient(), Subjects("bench"), AuditSettings(queue_size=10 * NUMBER))
    rec = record(0)
    observers = [lambda _r: None]

    def baseline() -> None:
        for observer in observers:
            observer(rec)

    def audited() -> None:
        trail.observe(rec)
        if len(trail._pending) >= NUMBER:  # keep the queue from filling (the drain task would)
            trail._pending.clear()

    return per_call_us(baseline, number=NUMBER, repeat=REPEAT), per_call_us(audited, number=NUMBER, repeat=REPEAT)


async def drain_cost(nc: NatsClient) -> tuple[float, float]:
    """(wall, CPU of this process) µs per event to publish ``DRAIN_EVENTS`` queued events and get their acks."""
    subjects = Subjects("benchdrain")
    await ensure_audit_stream(nc, subjects)
    trail = AuditTrail(nc, subjects, AuditSettings(queue_size=2 * DRAIN_EVENTS))
    for n in range(DRAIN_EVENTS):
        trail.observe(record(n))
    started, cpu = time.perf_counter(), time.process_time()
    trail.start()
    await trail.stop(timeout_s=300)  # returns once the queue is empty: every event acknowledged
    elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
    assert trail.published == DRAIN_EVENTS, trail.published
    await nc.jetstream().delete_stream(subjects.audit_stream)
    return elapsed / DRAIN_EVENTS * 1e6, cpu / DRAIN_EVENTS * 1e6


async def check_costs(nc: NatsClient) -> tuple[float, float, float]:
    """Median µs per check: (no limits, tokens leased locally, every check leasing from KV)."""
    subjects = Subjects("benchlimits")
    off = await RateLimiter.open(nc, subjects, RateLimitSettings())
    local = await RateLimiter.open(nc, subjects, RateLimitSettings(per_principal=RateLimit(requests=10**9, per_s=600)))
    await local.check("warm", "kit_add")  # the first lease

    async def timed(limiter: RateLimiter, principal: str, n: int) -> float:
        started = time.perf_counter()
        for _ in range(n):
            await limiter.check(principal, "kit_add")
        return (time.perf_counter() - started) / n * 1e6

    base = statistics.median([await timed(off, "warm", NUMBER) for _ in range(REPEAT)])
    leased = statistics.median([await timed(local, "warm", NUMBER) for _ in range(REPEAT)])
    # One token per lease: each check is a compare-and-set in KV (what exact counting costs).
    kv = await RateLimiter.open(nc, subjects, RateLimitSettings(per_principal=RateLimit(requests=1, per_s=600)))
    started = time.perf_counter()
    for n in range(KV_CHECKS):
        await kv.check(f"p{n}", "kit_add")
    round_trip = (time.perf_counter() - started) / KV_CHECKS * 1e6
    await nc.jetstream().delete_key_value(subjects.rate_limits_bucket)
    return base, leased, round_trip


async def bus_costs() -> tuple[tuple[float, float], tuple[float, float, float]]:
    with tempfile.TemporaryDirectory() as state:
        server = EmbeddedNatsServer(state_dir=Path(state))
        server.start()
        try:
            nc = await connect(server.url, name="bench-audit")
            try:
                return await drain_cost(nc), await check_costs(nc)
            finally:
                await nc.close()
        finally:
            server.stop()


def main() -> None:
    base, observe = observer_costs()
    print(f"call observer, median of {REPEAT} x {NUMBER} calls:")
    print(f"  no-op observer (baseline) {base:6.2f} us   AuditTrail.observe {observe:6.2f} us")
    (wall, cpu), (off, leased, round_trip) = asyncio.run(bus_costs())
    print(f"audit drain task, per event (redact, encode, publish, ack): {wall:.1f} us wall, {cpu:.1f} us CPU")
    print("RateLimiter.check, per call:")
    print(f"  no limits (baseline) {off:6.2f} us   token leased locally {leased:6.2f} us   ({leased / off:.1f}x)")
    print(f"  leasing from KV (a compare-and-set round trip) {round_trip:6.1f} us   ({round_trip / leased:.0f}x local)")


if __name__ == "__main__":
    main()
