"""bench.stats: percentiles and medians of runs, per-call timing."""

from __future__ import annotations

import asyncio
import math

import pytest

from bench.stats import median_of_runs, per_call_us, percentile, ratio, run_unsuspended, summary


def test_percentile_interpolates_between_ranks() -> None:
    samples = [1.0, 2.0, 3.0, 4.0, 5.0]
    assert percentile(samples, 50) == 3.0
    assert percentile(samples, 0) == 1.0
    assert percentile(samples, 100) == 5.0
    assert percentile(samples, 90) == 4.6
    assert math.isnan(percentile([], 50))


def test_summary_scales_every_figure() -> None:
    stats = summary([0.001, 0.002, 0.003], scale=1000)
    assert stats["n"] == 3
    assert stats["p50"] == 2.0
    assert stats["max"] == 3.0


def test_median_of_runs_and_ratio() -> None:
    runs = [{"rps": 10.0}, {"rps": 30.0}, {"rps": 20.0}]
    assert median_of_runs(runs, ["rps", "absent"])["rps"] == 20.0
    assert math.isnan(median_of_runs(runs, ["absent"])["absent"])
    assert ratio(50.0, 20.0) == 2.5
    assert ratio(1.0, 0.0) is None
    assert ratio(None, 1.0) is None


def test_per_call_us_makes_one_untimed_call_first() -> None:
    calls: list[None] = []
    assert per_call_us(lambda: calls.append(None), number=10, repeat=3) > 0
    assert len(calls) == 1 + 10 * 3


async def _answer() -> int:
    return 42


async def _sleeps() -> None:
    await asyncio.sleep(0)


def test_run_unsuspended_returns_what_the_coroutine_returns_and_refuses_one_that_suspends() -> None:
    assert run_unsuspended(_answer()) == 42
    suspending = _sleeps()
    with pytest.raises(RuntimeError, match="suspended"):
        run_unsuspended(suspending)
    suspending.close()
