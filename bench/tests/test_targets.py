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


ERRORS = (
    "toolbus errors at 16 connections (kit_add, calc_add, calc_add pure and every other variant; both eras, all runs)"
)


def _by_name(results: dict[str, Any]) -> dict[str, Any]:
    return {t.target: t for t in evaluate(results)}


def test_ratios_use_the_baseline_of_the_same_run() -> None:
    results = {
        "http": {
            "summary": [
                _http("toolbus-2026", 16, 7600),
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
    kit = "toolbus / SDK baseline, kit_add (WAT, fresh instance)"
    assert targets[f"{kit}, 2026 era, 16 connections"].measured == 3.04
    assert targets[f"{kit}, 2026 era, 16 connections"].passed is True
    assert targets[f"{kit}, 2025 era, 16 connections"].measured == 3.75
    assert targets[f"{kit}, 2025 era, 16 connections"].passed is True
    # calc_add was not measured: its ratios and the error count stay open, never borrowed from kit_add.
    calc = "toolbus / SDK baseline, calc_add (componentize-py, fresh instance)"
    assert targets[f"{calc}, 2026 era, 16 connections"].passed is None
    assert targets[ERRORS].passed is None
    assert targets["toolbus / limit endpoint, kit_add, 2026 era, 16 connections"].passed is True
    assert targets["toolbus / limit endpoint, kit_add, 2025 era, 16 connections"].passed is True  # 0.67
    assert targets["toolbus p99, kit_add, 2025 era, 16 connections"].passed is False
    assert targets["toolbus sequential p50, kit_add, 2026 era (1 connection)"].passed is True
    assert targets["toolbus sequential p50, kit_add, 2025 era (1 connection)"].passed is False


def test_calc_and_pure_variants_have_their_own_rows_against_the_sdk_add() -> None:
    results = {
        "http": {
            "summary": [
                *(_http(key, 16, 3000) for key in ("toolbus-2026", "toolbus-2025")),
                _http("sdk-2026", 16, 1000),
                _http("sdk-2025", 16, 1000),
                _http("toolbus-calc-2026", 16, 1100),
                _http("toolbus-calc-2025", 16, 900, errors=1),
                _http("toolbus-calcpure-2026", 16, 3100),
                _http("toolbus-calcpure-2025", 16, 2900),
                _http("toolbus-kitwarm-2026", 16, 3000, errors=2),  # counts too, once the three tools ran
            ]
        }
    }
    targets = _by_name(results)
    calc = "toolbus / SDK baseline, calc_add (componentize-py, fresh instance)"
    pure = "toolbus / SDK baseline, calc_add declared pure (warm instances)"
    assert targets[f"{calc}, 2026 era, 16 connections"].measured == 1.1
    assert targets[f"{calc}, 2025 era, 16 connections"].passed is False
    assert targets[f"{pure}, 2026 era, 16 connections"].passed is True  # 3.1x the SDK's add
    assert targets[f"{pure}, 2025 era, 16 connections"].passed is False
    errors = targets[ERRORS]
    assert errors.measured == 3 and errors.passed is False


def test_worker_cpu_per_call_sums_worker_processes_fresh_and_warm_apart() -> None:
    fresh = {**_http("toolbus-2026", 16, 10000), "cpu_cores": {"gateway": 0.9, "worker": 0.3, "worker-2": 0.3}}
    warm = {**_http("toolbus-kitwarm-2026", 16, 10000), "cpu_cores": {"gateway": 0.9, "worker": 0.35}}
    targets = _by_name({"http": {"summary": [fresh, warm]}})
    fresh_target = targets["worker CPU per call, kit_add fresh instance (2026 era, 16 connections)"]
    warm_target = targets["worker CPU per call, kit_add declared pure, warm instances (2026 era, 16 connections)"]
    assert round(fresh_target.measured or 0) == 60 and fresh_target.passed is True
    assert round(warm_target.measured or 0) == 35 and warm_target.passed is True


def test_sections_that_did_not_run_are_not_measured() -> None:
    targets = evaluate({})
    assert targets
    assert all(t.passed is None for t in targets)


def test_bus_wasm_restart_and_list_targets() -> None:
    results = {
        "bus": {
            "summary": [
                {"target": "toolbus-worker", "in_flight": 1, "rps": 2000.0},
                {"target": "raw-echo", "in_flight": 1, "rps": 3000.0},
                {"target": "toolbus-worker", "in_flight": 64, "rps": 12000.0},
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
        "restart": {
            "setups": [
                {"setup": "kit", "components": 1, "ready_ms_per_component": 150.0},
                {"setup": "calc + kit", "components": 2, "ready_ms_per_component": 90.0},
            ]
        },
        "list": {"eras": [{"era": "2026-07-28", "first_page_ms": {"p50": 3.0}, "full_listing_ms": {"p50": 25.0}}]},
    }
    targets = _by_name(results)
    at_1, at_64 = (targets[f"direct bus / raw nats-py echo, kit_add fresh, {n} in flight"] for n in (1, 64))
    assert at_1.threshold == 0.70 and at_1.passed is False  # 0.67
    assert at_64.threshold == 0.45 and at_64.measured == 0.48 and at_64.passed is True
    assert targets["fresh Store + instantiate, componentize-py (p50)"].passed is True
    assert targets["fresh Store + instantiate, small WAT component (p50)"].measured == 60.0
    assert targets["fresh Store + instantiate, small WAT component (p50)"].passed is False
    assert targets["worker restart ready, one component: kit"].passed is True
    assert not any("calc + kit" in name for name in targets)  # the goal is per single component
    assert targets["tools/list first page p50, 2026-07-28"].passed is True
    assert targets["tools/list full listing p50, 2026-07-28"].passed is False
