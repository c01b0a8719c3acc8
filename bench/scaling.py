"""Scaling: a CPU-bound tool with 1 and with 2 worker processes, over the direct bus path.

``kit_burn`` with ``{"iterations": 1000000}`` spends about 2 ms in the guest per call. Each
system is ``toolbus up --workers N`` with ``concurrency = 1`` per worker (bench/config/scaling.toml),
so N is the number of guests running at once; the load generator keeps enough calls in flight
that no worker waits for work. The machine has two cores, which the load generator, nats-server
and the registry share with the workers, so twice the throughput is out of reach by construction.

A second series, ``small_calls``, loads ``kit_add`` (a guest of a few µs: the worker's Python share
is the whole cost) with ``SMALL_IN_FLIGHT`` in flight on the same systems, and records the CPU
per call of every process. Those figures are what a model of more cores starts from: a worker's
Python share holds its process's GIL, so small calls use more cores only through more processes.
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final

from bench import busload
from bench.cpu import CpuMeter
from bench.plan import Plan
from bench.system import CONFIG_DIR, ToolbusSystem
from harness.processes import Children

TOOL: Final = "kit_burn"
SMALL_TOOL: Final = "kit_add"
SMALL_IN_FLIGHT: Final = 64
WORKER_COUNTS: Final = (1, 2)

Progress = Callable[[str], None]


def _run(system: ToolbusSystem, in_flight: int, duration_s: float, warmup_s: float, plan: Plan) -> dict[str, Any]:
    body = json.dumps({"iterations": plan.scaling_iterations})
    load = busload.BusLoad(
        system.nats_url, system.subjects.call(TOOL), body, '"structuredContent"', in_flight, duration_s, warmup_s
    )
    meter = CpuMeter(system.processes())
    meter.start()
    result = busload.run(load)
    result["cpu_cores"] = meter.stop(warmup_s + duration_s)
    return result


def _small_calls(system: ToolbusSystem, workers: int, plan: Plan) -> dict[str, Any]:
    """``kit_add`` at ``SMALL_IN_FLIGHT`` in flight: calls/s, latency, and CPU µs per call by process."""
    load = busload.BusLoad(
        system.nats_url,
        system.subjects.call(SMALL_TOOL),
        '{"a":2,"b":3}',
        '"text":"5"',
        SMALL_IN_FLIGHT,
        plan.scaling_duration_s,
        plan.scaling_warmup_s,
    )
    meter = CpuMeter(system.processes())
    meter.start()
    result = busload.run(load)
    cores = meter.stop(plan.scaling_warmup_s + plan.scaling_duration_s)
    rps = result["rps"] or 1.0
    # Cores busy over warm-up plus run, against the measured rate: the warm-up runs at that rate too.
    cpu_us = {role: round(busy / rps * 1e6, 1) for role, busy in cores.items()}
    return {"workers": workers, "in_flight": SMALL_IN_FLIGHT, **result, "cpu_cores": cores, "cpu_us_per_call": cpu_us}


def measure(scratch: Path, children: Children, plan: Plan, progress: Progress) -> dict[str, Any]:
    """Runs with each worker count; returns runs, medians and the 2-vs-1 ratio."""
    runs: list[dict[str, Any]] = []
    small: list[dict[str, Any]] = []
    sequential: dict[str, Any] = {}
    for workers in WORKER_COUNTS:
        system = ToolbusSystem(f"scaling-{workers}", CONFIG_DIR / "scaling.toml", scratch, workers=workers)
        system.start(children)
        try:
            if workers == 1:
                # One call at a time: what a single call of the tool costs end to end on the bus.
                sequential = _run(system, 1, plan.scaling_duration_s / 2, plan.scaling_warmup_s, plan)
                progress(f"{TOOL} sequential: {sequential['p50_ms']:.2f} ms per call (p50)")
            for repetition in range(1, plan.runs + 1):
                result = _run(system, plan.scaling_in_flight, plan.scaling_duration_s, plan.scaling_warmup_s, plan)
                runs.append({"workers": workers, "run": repetition, "in_flight": plan.scaling_in_flight, **result})
                errors = f", {result['errors']} errors" if result["errors"] else ""
                progress(f"{TOOL} with {workers} worker(s), run {repetition}: {result['rps']:7.0f} calls/s{errors}")
            small.append(_small_calls(system, workers, plan))
            worker_us = sum(us for role, us in small[-1]["cpu_us_per_call"].items() if role.startswith("worker"))
            progress(
                f"{SMALL_TOOL} with {workers} worker(s): {small[-1]['rps']:7.0f} calls/s, "
                f"workers' CPU {worker_us:.0f} µs per call"
            )
        finally:
            system.stop(children)
    medians = {
        workers: statistics.median(r["rps"] for r in runs if r["workers"] == workers) for workers in WORKER_COUNTS
    }
    summary = [
        {
            "workers": workers,
            "rps": medians[workers],
            "p50_ms": statistics.median(r["p50_ms"] for r in runs if r["workers"] == workers),
            "p99_ms": statistics.median(r["p99_ms"] for r in runs if r["workers"] == workers),
            "errors": sum(r["errors"] for r in runs if r["workers"] == workers),
        }
        for workers in WORKER_COUNTS
    ]
    ratio = medians[2] / medians[1] if medians[1] else None
    return {
        "tool": TOOL,
        "iterations": plan.scaling_iterations,
        "sequential": sequential,
        "runs": runs,
        "summary": summary,
        "ratio_2_vs_1": ratio,
        "small_calls": small,
    }
