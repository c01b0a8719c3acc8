"""The bus load generator: nats-py requests with a fixed number in flight, in a process of its own.

``run`` starts ``python -m bench.busload`` and returns what it printed: calls/s, latency
percentiles and errors. A reply counts as good when it has no ``Toolbus-Error`` header and
holds the expected text; a timeout or "no responders" is an error too.

Used for the direct bus path (a toolbus worker vs the raw echo responder, 1 and 64 in flight)
and for the scaling runs (a CPU-bound tool, 1 vs 2 worker processes).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from typing import Any

import nats
import nats.errors
import uvloop

from bench.stats import summary
from bus.subjects import Header
from harness.processes import REPO

REQUEST_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class BusLoad:
    """What to send where, how many at once, and for how long."""

    nats_url: str
    subject: str
    body: str
    expect: str
    in_flight: int
    duration_s: float
    warmup_s: float


async def _generate(load: BusLoad) -> dict[str, Any]:
    nc = await nats.connect(load.nats_url, name="bench-busload")
    body = load.body.encode()
    expect = load.expect.encode()
    latencies: list[float] = []
    errors = 0
    started = time.perf_counter()
    measure_from = started + load.warmup_s
    stop_at = measure_from + load.duration_s

    async def caller() -> None:
        nonlocal errors
        while True:
            t0 = time.perf_counter()
            if t0 >= stop_at:
                return
            good = False
            try:
                msg = await nc.request(load.subject, body, timeout=REQUEST_TIMEOUT_S)
                good = not (msg.headers and Header.ERROR in msg.headers) and expect in msg.data
            except (nats.errors.TimeoutError, nats.errors.NoRespondersError):
                pass
            t1 = time.perf_counter()
            if t0 >= measure_from and t1 <= stop_at:
                latencies.append(t1 - t0)
                errors += not good

    await asyncio.gather(*(caller() for _ in range(load.in_flight)))
    await nc.close()
    return {
        "calls": len(latencies),
        "duration_s": load.duration_s,
        "rps": len(latencies) / load.duration_s,
        "errors": errors,
        **{f"{k}_ms": v for k, v in summary(latencies, scale=1000).items() if k != "n"},
    }


def run(load: BusLoad) -> dict[str, Any]:
    """Run the load generator in its own process; return its result.

    Raises:
        RuntimeError: the process failed or printed no result.
    """
    argv = [sys.executable, "-m", "bench.busload", json.dumps(asdict(load))]
    timeout_s = load.warmup_s + load.duration_s + REQUEST_TIMEOUT_S + 30
    done = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=timeout_s, check=False)
    if done.returncode != 0 or not done.stdout.strip():
        raise RuntimeError(f"busload failed ({done.returncode}):\n{done.stderr[-2000:]}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description="nats-py request load; prints one JSON line")
    parser.add_argument("load", help="a BusLoad as JSON")
    load = BusLoad(**json.loads(parser.parse_args().load))
    print(json.dumps(uvloop.run(_generate(load))), flush=True)


if __name__ == "__main__":
    main()
