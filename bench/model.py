"""A model, not a measurement: what 8 and 32 cores would serve, from this run's CPU per call.

The HTTP section measures, at ``AT_CONNECTIONS`` connections, the CPU each process spends per
call (gateway, worker, registry, nats-server). If every role scales out — gateways side by side
(SO_REUSEPORT or a load balancer), workers in the call's queue group, one multi-threaded
nats-server — a machine of N cores serves at most N * 10⁶ / (the sum of those µs) calls/s, and
each Python process, single-threaded, at most 10⁶ / (its µs) calls/s: so that many processes of
each role are needed. The load generator is assumed to run elsewhere (here wrk shares the two
cores), and nothing is charged for contention, NUMA or the kernel's network stack beyond what
the 2-core run already paid: the figures are ceilings, labelled as a model wherever they appear.
"""

from __future__ import annotations

import math
from typing import Any, Final

MODEL_CORES: Final = (2, 8, 32)
"""Machine sizes the report projects to (2: this machine, to hold the model against the run)."""
LEFT_OUT: Final = ("wrk", "toolbus-up")
"""Not part of serving a call: the load generator, and ``toolbus up``'s supervisor (idle)."""


def role_of(process: str) -> str:
    """``worker-2`` → ``worker``: processes of one role are summed."""
    head, _, tail = process.rpartition("-")
    return head if head and tail.isdigit() else process


def per_call_us(row: dict[str, Any]) -> dict[str, float]:
    """CPU µs per call by role in one HTTP summary row (``cpu_cores`` / ``rps``), busiest first."""
    rps = row.get("rps") or 0.0
    if not rps:
        return {}
    by_role: dict[str, float] = {}
    for process, cores in row.get("cpu_cores", {}).items():
        if process in LEFT_OUT:
            continue
        role = role_of(process)
        by_role[role] = by_role.get(role, 0.0) + cores / rps * 1e6
    # A role that spent under a µs per call (the registry once it is off the call path) needs no process for it.
    return dict(sorted(((r, us) for r, us in by_role.items() if us >= 1.0), key=lambda kv: -kv[1]))


def project(per_call: dict[str, float], cores: int) -> dict[str, Any]:
    """Calls/s on ``cores`` cores and the processes of each role it takes (the model above)."""
    total = sum(per_call.values())
    if total <= 0:
        return {"cores": cores, "calls_per_s": None, "processes": {}}
    calls_per_s = cores * 1e6 / total
    # nats-server is one multi-threaded process; every other role is single-threaded Python.
    processes = {
        role: 1 if role == "nats-server" else max(1, math.ceil(calls_per_s * us / 1e6)) for role, us in per_call.items()
    }
    return {"cores": cores, "calls_per_s": calls_per_s, "total_us": total, "processes": processes}


def model(rows: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """Per endpoint (key → HTTP summary row): its CPU per call by role and a projection per ``MODEL_CORES``."""
    out = []
    for key, row in rows.items():
        per_call = per_call_us(row)
        if per_call:
            out.append(
                {
                    "endpoint": key,
                    "measured_rps": row["rps"],
                    "per_call_us": per_call,
                    "projections": [project(per_call, cores) for cores in MODEL_CORES],
                }
            )
    return out
