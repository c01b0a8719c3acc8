"""The issue's performance targets, each checked against this run's own numbers.

Nothing here is a recorded figure: every value is looked up in the results of the run that
writes the report, ratios use the baseline measured in that same run, and a target whose
section did not run is reported as not measured (``pass: None``).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Final

from bench.stats import ratio

TIMES: Final = "\N{MULTIPLICATION SIGN}"
"""The unit of ratios."""
AT_CONNECTIONS: Final = 16
"""The connection count the throughput, ratio and p99 targets are stated at."""


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
    for era, factor in (("2026", 2.5), ("2025", 4.0)):
        rows.append(
            Target(
                f"toolbus / SDK baseline, {era} era, {c} connections",
                ratio(http(f"toolbus-{era}", c, "rps"), http(f"sdk-{era}", c, "rps")),
                ">=",
                factor,
                TIMES,
            )
        )
    errors = [http(f"toolbus-{era}", c, "errors") for era in ("2026", "2025")]
    rows.append(
        Target(
            f"toolbus errors at {c} connections (both eras, all runs)",
            None if None in errors else sum(e for e in errors if e is not None),
            "<=",
            0,
            "errors",
        )
    )
    for era in ("2026", "2025"):
        rows.append(
            Target(
                f"toolbus / limit endpoint, {era} era, {c} connections",
                ratio(http(f"toolbus-{era}", c, "rps"), http("limit", c, "rps")),
                ">=",
                0.70,
                TIMES,
            )
        )
    for era in ("2026", "2025"):
        rows.append(
            Target(f"toolbus p99, {era} era, {c} connections", http(f"toolbus-{era}", c, "p99_ms"), "<=", 10, "ms")
        )
    for era in ("2026", "2025"):
        rows.append(
            Target(
                f"toolbus sequential p50, {era} era (1 connection)", http(f"toolbus-{era}", 1, "p50_ms"), "<=", 1, "ms"
            )
        )
    for in_flight in sorted({row["in_flight"] for row in results.get("bus", {}).get("summary", [])} or {1, 64}):
        rows.append(
            Target(
                f"direct bus / raw nats-py echo, {in_flight} in flight",
                ratio(_bus_value(results, "toolbus-worker", in_flight), _bus_value(results, "raw-echo", in_flight)),
                ">=",
                0.70,
                TIMES,
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
    for setup in results.get("restart", {}).get("setups", []) or [{"setup": "(not run)"}]:
        rows.append(
            Target(
                f"worker restart ready per component: {setup['setup']}",
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
