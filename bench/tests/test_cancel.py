"""bench.cancel: a client's cancel to the guest no longer using CPU, against a real ``toolbus up``, a few samples."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import pytest

from bench import cancel, report
from bench.plan import QUICK
from bench.system import CONFIG_DIR, ToolbusSystem
from bench.targets import evaluate
from harness.processes import Children
from schemas.errors import ErrorCode

MS = 1_000_000


def _sample(t_ms: float, guest_ms: float, worker_ms: float) -> cancel.Sample:
    return cancel.Sample(int(t_ms * MS), int(worker_ms * MS), (0, int(guest_ms * MS)))


def test_the_guest_stopped_at_its_thread_s_last_growth() -> None:
    at_cancel = _sample(100, 50, 60)
    samples = [
        _sample(99.5, 50, 59.5),  # before the cancel: not looked at
        _sample(101, 50, 61),  # no growth between kernel ticks while it still runs
        _sample(102, 54, 62),
        _sample(103, 55.5, 63.4),  # its last growth: it stopped before this sample
        _sample(104, 55.5, 63.5),
        _sample(110, 55.5, 63.6),
    ]
    stop = cancel.analyse(samples, at_cancel, guest=1)
    assert stop.guest_stopped_ms == pytest.approx(3.0)
    assert stop.resolution_ms == pytest.approx(1.0)
    assert stop.worker_cpu_after_ms == pytest.approx(3.6)
    assert stop.worker_busy_until_ms == pytest.approx(3.0)  # busy ≥ half of each interval up to 103 ms


def test_a_guest_still_growing_at_the_end_has_not_stopped() -> None:
    at_cancel = _sample(100, 50, 60)
    stop = cancel.analyse([_sample(101, 51, 61), _sample(102, 52, 62)], at_cancel, guest=1)
    assert stop.guest_stopped_ms is None
    with pytest.raises(cancel.CancelBenchError):
        cancel.analyse([_sample(99, 49, 59)], at_cancel, guest=1)


@pytest.fixture(scope="module")
def system(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ToolbusSystem]:
    scratch = tmp_path_factory.mktemp("bench-cancel")
    with Children(scratch / "logs") as children:
        # The testkit alone: the cancel bench calls only kit tools, and CI needs no componentize-py build.
        running = ToolbusSystem("system", CONFIG_DIR / "kit.toml", scratch)
        running.start(children)
        yield running
        running.stop(children)


def test_each_era_and_the_bus_are_measured_and_reported(system: ToolbusSystem) -> None:
    plan = replace(QUICK, cancel_samples=2, cancel_baseline_samples=3)
    lines: list[str] = []
    measured = cancel.measure(
        system.mcp_url, system.nats_url, system.subjects, system.pids_of("worker"), plan, lines.append
    )
    assert [p["path"] for p in measured["paths"]] == ["2025-11-25", "2026-07-28", "bus"]
    for path in measured["paths"]:
        assert len(path["baseline_ms"]) == 3
        for age in cancel.AGES:
            samples: list[dict[str, Any]] = path["cancels"][age.key]
            assert len(samples) == 2
            for sample in samples:
                assert sample["reply_code"] == ErrorCode.CANCELLED
                assert sample["call_age_ms"] >= age.at_s * 1000
                # Correctness only: the stop comes after the cancel and well before the 30 s deadline.
                assert 0 < sample["guest_stopped_ms"] < 5000
                assert 0 < sample["cancel_on_bus_ms"] < sample["reply_on_bus_ms"]
                assert sample["worker_cpu_after_ms"] > 0
    assert len(measured["summary"]) == 6 and len(lines) == 6

    results = {"cancel": measured}
    rows = [t for t in evaluate(results) if t.target.startswith("client cancel")]
    assert len(rows) == 4 and all(t.measured is not None for t in rows)
    assert "cancelled 5-15 ms into the call" in rows[0].target
    section = "\n".join(report._cancel_section(results))
    assert "| 2026-07-28 client (closes its stream) | 300-310 ms | 2 |" in section
    assert "| bus only (no gateway) | 5-15 ms | 2 |" in section
    assert "ms target." in section


def test_without_the_section_its_targets_are_not_measured() -> None:
    rows = [t for t in evaluate({}) if t.target.startswith("client cancel")]
    assert len(rows) == 4 and all(t.passed is None for t in rows)
