"""bench.model: the 8- and 32-core projection is arithmetic on the run's own CPU per call."""

from __future__ import annotations

from bench.model import model, per_call_us, project


def test_per_call_sums_processes_of_a_role_and_leaves_out_the_load_generator() -> None:
    row = {"rps": 1000.0, "cpu_cores": {"gateway": 0.2, "worker": 0.05, "worker-2": 0.05, "wrk": 0.5}}
    assert per_call_us(row) == {"gateway": 200.0, "worker": 100.0}


def test_projection_divides_cores_by_total_cpu_per_call_and_counts_processes() -> None:
    per_call = {"gateway": 200.0, "worker": 100.0, "nats-server": 50.0, "registry": 50.0}
    on_8 = project(per_call, 8)
    assert on_8["calls_per_s"] == 20000.0  # 8 cores * 1e6 / 400 µs
    # 20,000 calls/s * 200 µs = 4 cores of gateway: 4 single-threaded processes; one nats-server.
    assert on_8["processes"] == {"gateway": 4, "worker": 2, "nats-server": 1, "registry": 1}


def test_an_endpoint_without_calls_has_no_projection() -> None:
    assert model({"toolbus-2026": {"rps": 0.0, "cpu_cores": {"gateway": 1.0}}}) == []
