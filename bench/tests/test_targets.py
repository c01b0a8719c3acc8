"""bench.targets: every verdict comes from the results of the run, never from a recorded figure."""

from __future__ import annotations

from typing import Any

from bench.targets import evaluate


def _http(
    endpoint: str, connections: int, rps: float, p50: float = 0.5, p99: float = 5.0, errors: int = 0
) -> dict[str, Any]:
    return {
        "endpoint": endpoint,
        "connections": connections,
        "rps": rps,
        "p50_ms": p50,
        "p99_ms": p99,
        "errors": errors,
    }


def _by_name(results: dict[str, Any]) -> dict[str, Any]:
    return {t.target: t for t in evaluate(results)}


def test_ratios_use_the_baseline_of_the_same_run() -> None:
    results = {
        "http": {
            "summary": [
                _http("toolbus-2026", 16, 7000),
                _http("sdk-2026", 16, 2500),
                _http("toolbus-2025", 16, 6000, p99=12.0, errors=2),
                _http("sdk-2025", 16, 1600),
                _http("limit", 16, 9000),
                _http("toolbus-2026", 1, 1000, p50=0.8),
                _http("toolbus-2025", 1, 900, p50=1.1),
            ]
        }
    }
    targets = _by_name(results)
    assert targets["toolbus / SDK baseline, 2026 era, 16 connections"].measured == 2.8
    assert targets["toolbus / SDK baseline, 2026 era, 16 connections"].passed is True
    assert targets["toolbus / SDK baseline, 2025 era, 16 connections"].measured == 3.75
    assert targets["toolbus / SDK baseline, 2025 era, 16 connections"].passed is False
    assert targets["toolbus errors at 16 connections (both eras, all runs)"].passed is False
    assert targets["toolbus / limit endpoint, 2026 era, 16 connections"].passed is True
    assert targets["toolbus / limit endpoint, 2025 era, 16 connections"].passed is False
    assert targets["toolbus p99, 2025 era, 16 connections"].passed is False
    assert targets["toolbus sequential p50, 2026 era (1 connection)"].passed is True
    assert targets["toolbus sequential p50, 2025 era (1 connection)"].passed is False


def test_sections_that_did_not_run_are_not_measured() -> None:
    targets = evaluate({})
    assert targets
    assert all(t.passed is None for t in targets)


def test_bus_wasm_restart_and_list_targets() -> None:
    results = {
        "bus": {
            "summary": [
                {"target": "toolbus-worker", "in_flight": 64, "rps": 20000.0},
                {"target": "raw-echo", "in_flight": 64, "rps": 25000.0},
            ]
        },
        "wasm": {
            "tools": [
                {"kind": "command", "language": "WAT", "fresh_instance_ms": {"p50": 0.01}},  # not the component
                {"kind": "component", "language": "componentize-py", "fresh_instance_ms": {"p50": 0.6}},
                {"kind": "component", "language": "WAT", "fresh_instance_ms": {"p50": 0.06}},
            ]
        },
        "restart": {"setups": [{"setup": "kit", "ready_ms_per_component": 150.0}]},
        "list": {"eras": [{"era": "2026-07-28", "first_page_ms": {"p50": 3.0}, "full_listing_ms": {"p50": 25.0}}]},
    }
    targets = _by_name(results)
    assert targets["direct bus / raw nats-py echo, 64 in flight"].measured == 0.8
    assert targets["fresh Store + instantiate, componentize-py (p50)"].passed is True
    assert targets["fresh Store + instantiate, small WAT component (p50)"].measured == 60.0
    assert targets["fresh Store + instantiate, small WAT component (p50)"].passed is False
    assert targets["worker restart ready per component: kit"].passed is True
    assert targets["tools/list first page p50, 2026-07-28"].passed is True
    assert targets["tools/list full listing p50, 2026-07-28"].passed is False
