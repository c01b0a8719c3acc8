"""The issue's performance targets, each checked against this run's own numbers.

Nothing here is a recorded figure: every value is looked up in the results of the run that
writes the report, ratios use the baseline measured in that same run, and a target whose
section did not run is reported as not measured (``pass: None``).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Final

from bench.end_to_end import baseline_key, endpoint_key
from bench.mcp_http import ERA_2025, ERA_2026
from bench.stats import ratio

TIMES: Final = "\N{MULTIPLICATION SIGN}"
"""The unit of ratios."""
AT_CONNECTIONS: Final = 16
"""The connection count the throughput, ratio and p99 targets are stated at."""
ERAS: Final = (ERA_2026, ERA_2025)
BUS_GOALS: Final = {1: 0.70, 64: 0.45}
"""Direct bus / raw echo by calls in flight (issue 17); an in-flight count not named takes the last one's."""


@dataclass(frozen=True)
class Target:
    """One row of the target table."""

    target: str
    measured: float | None
    op: str
    """``>=`` or ``<=``."""
    threshold: float
    unit: str
    note: str = ""

    @property
    def passed(self) -> bool | None:
        if self.measured is None or math.isnan(self.measured):
            return None
        return self.measured >= self.threshold if self.op == ">=" else self.measured <= self.threshold

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "pass": self.passed}


def _http_row(results: dict[str, Any], endpoint: str, connections: int) -> dict[str, Any] | None:
    for row in results.get("http", {}).get("summary", []):
        if row["endpoint"] == endpoint and row["connections"] == connections:
            return dict(row)
    return None


def _http_value(results: dict[str, Any], endpoint: str, connections: int, key: str) -> float | None:
    row = _http_row(results, endpoint, connections)
    return None if row is None else float(row[key])


def worker_us_per_call(row: dict[str, Any] | None) -> float | None:
    """CPU µs per call of every worker process together (``worker``, ``worker-2``...) in an HTTP summary row."""
    if row is None or not row.get("rps"):
        return None
    cores = sum(v for k, v in row.get("cpu_cores", {}).items() if k == "worker" or k.startswith("worker-"))
    return float(cores / row["rps"] * 1e6)


def _bus_value(results: dict[str, Any], target: str, in_flight: int) -> float | None:
    for row in results.get("bus", {}).get("summary", []):
        if row["target"] == target and row["in_flight"] == in_flight:
            return float(row["rps"])
    return None


def _wasm_value(results: dict[str, Any], kind: str, language: str) -> float | None:
    """p50 of a fresh Store + instantiate of the tool of that kind (component, command) and language."""
    for tool in results.get("wasm", {}).get("tools", []):
        if tool["kind"] == kind and tool["language"] == language:
            return float(tool["fresh_instance_ms"]["p50"])
    return None


CANCEL_ERAS: Final = ("2025-11-25", "2026-07-28")
CANCEL_AGES: Final = ("early", "late")
"""When in a call the cancel section cancels it (``bench.cancel.AGES``)."""


def cancel_row(cancel: dict[str, Any], path: str, age: str) -> dict[str, Any]:
    """The cancel section's summary row for ``path`` (an era, or ``bus``) and ``age`` ({} if none)."""
    for row in cancel.get("summary", []):
        if row["path"] == path and row["age"] == age:
            return dict(row)
    return {}


def _cancel_value(results: dict[str, Any], era: str, age: str) -> float | None:
    """p90 of the time from a client's cancel to its guest no longer using CPU."""
    row = cancel_row(results.get("cancel", {}), era, age)
    return float(row["guest_stopped_ms"]["p90"]) if row else None


def evaluate(results: dict[str, Any]) -> list[Target]:
    """Every target with this run's value (None where the section did not run)."""
    c = AT_CONNECTIONS

    def http(endpoint: str, connections: int, key: str) -> float | None:
        return _http_value(results, endpoint, connections, key)

    rows: list[Target] = []
    # Issue 17: every SDK ratio is against the SDK's `add`, which does what both guests do (bench/servers/sdk.py);
    # the pure (warm) variants have their own rows and never stand in for the fresh ones.
    for label, variant, factor in (
        ("kit_add (WAT, fresh instance)", "", 3.0),
        ("calc_add (componentize-py, fresh instance)", "calc", 1.0),
        ("calc_add declared pure (warm instances)", "calcpure", 3.0),
    ):
        for era in ERAS:
            rows.append(
                Target(
                    f"toolbus / SDK baseline, {label}, {era[:4]} era, {c} connections",
                    ratio(
                        http(endpoint_key("toolbus", era, variant), c, "rps"),
                        http(baseline_key(era), c, "rps"),
                    ),
                    ">=",
                    factor,
                    TIMES,
                )
            )
    # Measured only once the three tools ran in both eras; then every toolbus row counts.
    required = [endpoint_key("toolbus", era, v) for v in ("", "calc", "calcpure") for era in ERAS]
    every = [row for row in results.get("http", {}).get("summary", []) if row["endpoint"].startswith("toolbus-")]
    errors_at_c = [row["errors"] for row in every if row["connections"] == c]
    rows.append(
        Target(
            f"toolbus errors at {c} connections (kit_add, calc_add, calc_add pure and every other variant; "
            "both eras, all runs)",
            None if any(http(key, c, "errors") is None for key in required) else float(sum(errors_at_c)),
            "<=",
            0,
            "errors",
        )
    )
    for era in ERAS:
        rows.append(
            Target(
                f"toolbus / limit endpoint, kit_add, {era[:4]} era, {c} connections",
                ratio(http(endpoint_key("toolbus", era), c, "rps"), http("limit", c, "rps")),
                ">=",
                0.55,
                TIMES,
            )
        )
    for era in ERAS:
        rows.append(
            Target(
                f"toolbus p99, kit_add, {era[:4]} era, {c} connections",
                http(endpoint_key("toolbus", era), c, "p99_ms"),
                "<=",
                10,
                "ms",
            )
        )
    for era in ERAS:
        rows.append(
            Target(
                f"toolbus sequential p50, kit_add, {era[:4]} era (1 connection)",
                http(endpoint_key("toolbus", era), 1, "p50_ms"),
                "<=",
                1,
                "ms",
            )
        )
    for label, variant, goal, note in (
        ("fresh instance", "", 70, ""),
        ("declared pure, warm instances", "kitwarm", 40, ""),
        ("fresh instance, declared short", "kitshort", 70, "limits.inline: run on the worker's event loop"),
    ):
        rows.append(
            Target(
                f"worker CPU per call, kit_add {label} ({ERAS[0][:4]} era, {c} connections)",
                worker_us_per_call(_http_row(results, endpoint_key("toolbus", ERAS[0], variant), c)),
                "<=",
                goal,
                "µs",
                note=note,
            )
        )
    in_flights = sorted({row["in_flight"] for row in results.get("bus", {}).get("summary", [])} | set(BUS_GOALS))
    for target, label, note in (
        ("toolbus-worker", "kit_add fresh", ""),
        ("toolbus-worker-short", "kit_add fresh, declared short", "limits.inline: run on the worker's event loop"),
    ):
        for in_flight in in_flights:
            rows.append(
                Target(
                    f"direct bus / raw nats-py echo, {label}, {in_flight} in flight",
                    ratio(_bus_value(results, target, in_flight), _bus_value(results, "raw-echo", in_flight)),
                    ">=",
                    BUS_GOALS.get(in_flight, BUS_GOALS[max(BUS_GOALS)]),
                    TIMES,
                    note=note,
                )
            )
    rows.append(
        Target(
            "fresh Store + instantiate, componentize-py (p50)",
            _wasm_value(results, "component", "componentize-py"),
            "<=",
            1,
            "ms",
        )
    )
    small = _wasm_value(results, "component", "WAT")
    rows.append(
        Target(
            "fresh Store + instantiate, small WAT component (p50)",
            None if small is None else small * 1000,
            "<=",
            50,
            "µs",
        )
    )
    singles = [s for s in results.get("restart", {}).get("setups", []) if s.get("components", 1) == 1]
    for setup in singles or [{"setup": "(not run)"}]:
        rows.append(
            Target(
                f"worker restart ready, one component: {setup['setup']}",
                setup.get("ready_ms_per_component"),
                "<=",
                200,
                "ms",
            )
        )
    startup = results.get("startup", {})
    cold, warm = startup.get("cold", {}), startup.get("warm", {})
    for label, value, goal in (
        ("toolbus up from an empty cache: first tool listed (median)", cold.get("first_tool_s"), 10),
        ("toolbus up from an empty cache: every example tool listed (median)", cold.get("all_tools_s"), 30),
        ("toolbus up warm: up and every tool listed (median)", warm.get("banner_s"), 2),
    ):
        rows.append(Target(label, value, "<=", goal, "s", note="2 cores" if value is not None else ""))
    eras = results.get("list", {}).get("eras", []) or [{"era": "(not run)"}]
    for era in eras:
        rows.append(
            Target(f"tools/list first page p50, {era['era']}", era.get("first_page_ms", {}).get("p50"), "<=", 20, "ms")
        )
    for era in eras:
        rows.append(
            Target(
                f"tools/list full listing p50, {era['era']}",
                era.get("full_listing_ms", {}).get("p50"),
                "<=",
                20,
                "ms",
                note="stricter reading: every page of 1,000+ tools in 20 ms",
            )
        )
    cancel = results.get("cancel", {})
    for era in CANCEL_ERAS:
        for age in CANCEL_AGES:
            at_ms, tick_ms = cancel.get("ages", {}).get(age), cancel.get("epoch_tick_ms", 0)
            when = f"cancelled {at_ms:g}-{at_ms + tick_ms:g} ms into the call" if at_ms is not None else f"{age} cancel"
            rows.append(
                Target(
                    f"client cancel → guest stops using CPU p90, {era}, {when}",
                    _cancel_value(results, era, age),
                    "<=",
                    100,
                    "ms",
                )
            )
    return rows
