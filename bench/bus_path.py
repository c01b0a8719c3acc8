"""The direct bus path: NATS requests straight to the toolbus worker vs a raw nats-py echo responder.

Both run on the same nats-server (the system's embedded one), with the same load generator
(``bench.busload``, its own process), sequentially (1 in flight) and with 64 in flight. The
toolbus side is the real thing a NATS client sees: ``toolbus.call.kit_add`` with the plain JSON
arguments, answered by the worker.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final

from bench import busload
from bench.cpu import CpuMeter, mean_cores
from bench.plan import Plan
from bench.stats import median_of_runs

ARGUMENTS: Final = '{"a":2,"b":3}'
SUMMARY_KEYS: Final = ("rps", "p50_ms", "p90_ms", "p99_ms", "mean_ms")

Progress = Callable[[str], None]


@dataclass(frozen=True)
class BusTarget:
    """A subject to load and the text every good reply holds."""

    key: str
    subject: str
    expect: str


def targets(call_subject: str, echo_subject: str, short_subject: str | None = None) -> list[BusTarget]:
    """The worker (``kit_add``, fresh), the echo, and the testkit declared short when it is served."""
    chosen = [BusTarget("toolbus-worker", call_subject, '"text":"5"'), BusTarget("raw-echo", echo_subject, '"a":2')]
    if short_subject is not None:  # fresh instances too, run on the worker's event loop (limits.inline)
        chosen.append(BusTarget("toolbus-worker-short", short_subject, '"text":"5"'))
    return chosen


def measure(
    nats_url: str, bus_targets: list[BusTarget], processes: Mapping[int, str], plan: Plan, progress: Progress
) -> dict[str, Any]:
    """Every run (interleaved: in-flight count, repetition, target); returns runs and medians."""
    runs: list[dict[str, Any]] = []
    for in_flight in plan.bus_in_flight:
        for repetition in range(1, plan.runs + 1):
            for target in bus_targets:
                load = busload.BusLoad(
                    nats_url,
                    target.subject,
                    ARGUMENTS,
                    target.expect,
                    in_flight,
                    plan.bus_duration_s,
                    plan.bus_warmup_s,
                )
                meter = CpuMeter(processes)
                meter.start()
                result = busload.run(load)
                # The servers are busy during warm-up and measurement, idle while the generator starts.
                result["cpu_cores"] = meter.stop(plan.bus_warmup_s + plan.bus_duration_s)
                runs.append({"target": target.key, "in_flight": in_flight, "run": repetition, **result})
                errors = f", {result['errors']} errors" if result["errors"] else ""
                progress(
                    f"{target.key:<20} in flight {in_flight:<3} run {repetition}: {result['rps']:8.0f} calls/s  "
                    f"p50 {result['p50_ms'] * 1000:.0f} µs  p99 {result['p99_ms'] * 1000:.0f} µs{errors}"
                )
    return {"runs": runs, "summary": summarize(runs)}


def summarize(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Medians over repetitions per (target, in flight); errors summed."""
    groups: dict[tuple[str, int], list[dict[str, Any]]] = {}
    for run in runs:
        groups.setdefault((run["target"], run["in_flight"]), []).append(run)
    return [
        {
            "target": target,
            "in_flight": in_flight,
            "runs": len(group),
            **median_of_runs(group, SUMMARY_KEYS),
            "errors": sum(run["errors"] for run in group),
            "cpu_cores": mean_cores(group),
        }
        for (target, in_flight), group in groups.items()
    ]
