"""Calls per second and latency by tool, read from the metrics the gateway already keeps.

No second count: this reads the ``toolbus_gateway_calls`` counter and the
``toolbus_gateway_call_duration_seconds`` histogram of ``gateway.metrics`` (the ones ``/metrics``
serves) and turns two readings into a rate. The rate is this gateway's; behind a load balancer
each replica shows its own share (Prometheus sums them).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from prometheus_client import CollectorRegistry

CALLS = "toolbus_gateway_calls"
LATENCY = "toolbus_gateway_call_duration_seconds"


@dataclass
class ToolStats:
    """One tool's line in the table."""

    tool: str
    calls: float = 0.0
    errors: float = 0.0
    per_s: float = 0.0
    latency_sum_s: float = 0.0
    latency_count: float = 0.0

    @property
    def mean_ms(self) -> float:
        return 1000 * self.latency_sum_s / self.latency_count if self.latency_count else 0.0


class CallRates:
    """Per-tool calls, errors, calls per second (since the previous reading) and mean latency."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self._registry = registry
        self._previous: dict[str, float] = {}
        """Calls per tool at the previous reading (at start: none, and the gateway had made none)."""
        self._previous_at = time.monotonic()

    def read(self, *, advance: bool = True) -> list[ToolStats]:
        """The table now, by tool; with ``advance`` the reading starts the next rate's interval."""
        table: dict[str, ToolStats] = {}
        for metric in self._registry.collect():
            if metric.name not in (CALLS, LATENCY):
                continue
            for sample in metric.samples:
                tool = sample.labels.get("tool")
                if tool is None:
                    continue
                line = table.setdefault(tool, ToolStats(tool))
                if sample.name == CALLS + "_total":
                    line.calls += sample.value
                    if sample.labels.get("outcome") != "ok":
                        line.errors += sample.value
                elif sample.name == LATENCY + "_sum":
                    line.latency_sum_s = sample.value
                elif sample.name == LATENCY + "_count":
                    line.latency_count = sample.value
        now = time.monotonic()
        elapsed = max(now - self._previous_at, 1e-6)
        for line in table.values():
            # A tool first seen since the previous reading had 0 calls then (its series is made
            # at its first call).
            line.per_s = max(0.0, line.calls - self._previous.get(line.tool, 0.0)) / elapsed
        if advance:
            self._previous = {line.tool: line.calls for line in table.values()}
            self._previous_at = now
        return sorted(table.values(), key=lambda line: line.tool)

    def as_json(self) -> dict[str, Any]:
        """The table as the live feed sends it."""
        return {
            "tools": [
                {"tool": s.tool, "calls": s.calls, "errors": s.errors, "perS": round(s.per_s, 2), "meanMs": s.mean_ms}
                for s in self.read()
            ]
        }
