"""bench.stats: percentiles and medians of runs."""

from __future__ import annotations

import math

from bench.stats import median_of_runs, percentile, ratio, summary


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
