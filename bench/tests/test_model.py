"""bench.model: the 8- and 32-core projection is arithmetic on the run's own CPU per call."""

from __future__ import annotations

from typing import Any

from bench import report
from bench.model import model, per_call_us, project
from bench.plan import FULL
from bench.targets import TIMES


def test_per_call_sums_processes_of_a_role_and_leaves_out_the_load_generator_and_idle_roles() -> None:
    row = {"rps": 1000.0, "cpu_cores": {"gateway": 0.2, "worker": 0.05, "worker-2": 0.05, "wrk": 0.5, "registry": 0.0}}
    assert per_call_us(row) == {"gateway": 200.0, "worker": 100.0}


def test_projection_divides_cores_by_total_cpu_per_call_and_counts_processes() -> None:
    per_call = {"gateway": 200.0, "worker": 100.0, "nats-server": 50.0, "registry": 50.0}
    on_8 = project(per_call, 8)
    assert on_8["calls_per_s"] == 20000.0  # 8 cores * 1e6 / 400 µs
    # 20,000 calls/s * 200 µs = 4 cores of gateway: 4 single-threaded processes; one nats-server.
    assert on_8["processes"] == {"gateway": 4, "worker": 2, "nats-server": 1, "registry": 1}


def test_an_endpoint_without_calls_has_no_projection() -> None:
    assert model({"toolbus-2026": {"rps": 0.0, "cpu_cores": {"gateway": 1.0}}}) == []


def _row(endpoint: str, tool: str, rps: float, cpu: dict[str, float]) -> dict[str, Any]:
    return {
        "endpoint": endpoint,
        "tool": tool,
        "connections": 16,
        "rps": rps,
        **dict.fromkeys(("p50_ms", "p90_ms", "p99_ms", "mean_ms"), 1.0),
        "errors": 0,
        "cpu_cores": cpu,
        "machine_cores_busy": 1.5,
    }


def test_the_report_shows_warm_rows_as_warm_and_the_model_as_a_model() -> None:
    results = {
        "schema": 1,
        "command": "python bench/run.py --only http",
        "quick": False,
        "sections": ["http"],
        "plan": FULL.as_dict(),
        "machine": {
            "date": "2026-12-07",
            "cpu_count": 2,
            "cpu_model": "test CPU",
            "python": "3.11.7",
            "versions": {"wasmtime": "51", "nats-py": "2", "mcp": "2.3", "nats-server": "v2", "wrk": "wrk 4"},
            "git": {"commit": "a" * 40, "uncommitted_changes": []},
        },
        "duration_s": 60.0,
        "failures": {},
        "http": {
            "summary": [
                _row("toolbus-2026", "kit_add", 4000, {"gateway": 0.6, "worker": 0.2, "nats-server": 0.2}),
                _row("sdk-2026", "kit_add", 2000, {"sdk-server": 0.9}),
                _row("toolbus-calcpure-2026", "calcpure_add", 3000, {"gateway": 0.5, "worker": 0.3}),
            ]
        },
    }
    text = report.markdown({**results, "targets": []}, FULL)
    assert "| toolbus-calcpure-2026 | calcpure_add (warm) | 16 | 3,000 |" in text
    assert f"| 1.50{TIMES} |" in text  # calcpure against the SDK's kit_add of its era
    model_part = text[text.index("## Scaling to bigger machines: a model, not a measurement") :]
    # kit_add: 250 µs per call (gateway 150, worker 50, nats-server 50): 8 cores → 32,000 calls/s, 5 gateways.
    assert "32,000 (5 gateway, 2 worker, 1 nats-server)" in model_part
