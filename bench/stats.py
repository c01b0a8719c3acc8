"""Percentiles of samples and medians of repeated runs: the only arithmetic the report relies on."""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Mapping, Sequence
from typing import Any


def percentile(samples: Sequence[float], p: float) -> float:
    """The ``p``-th percentile (0-100) with linear interpolation between closest ranks."""
    if not samples:
        return math.nan
    ordered = sorted(samples)
    rank = (len(ordered) - 1) * p / 100
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def summary(samples: Sequence[float], scale: float = 1.0) -> dict[str, float]:
    """Count, mean, p50, p90, p99 and max of ``samples`` (each multiplied by ``scale``)."""
    if not samples:
        return {"n": 0}
    return {
        "n": len(samples),
        "mean": statistics.fmean(samples) * scale,
        "p50": percentile(samples, 50) * scale,
        "p90": percentile(samples, 90) * scale,
        "p99": percentile(samples, 99) * scale,
        "max": max(samples) * scale,
    }


def median_of_runs(runs: Iterable[Mapping[str, Any]], keys: Sequence[str]) -> dict[str, float]:
    """For each of ``keys``, the median of that number over ``runs`` (a key missing in all → NaN)."""
    runs = list(runs)
    medians: dict[str, float] = {}
    for key in keys:
        values = [float(run[key]) for run in runs if run.get(key) is not None]
        medians[key] = statistics.median(values) if values else math.nan
    return medians


def ratio(numerator: float | None, denominator: float | None) -> float | None:
    """``numerator / denominator``, or None when either is missing, NaN or the denominator is 0."""
    if numerator is None or denominator is None or math.isnan(numerator) or math.isnan(denominator):
        return None
    return numerator / denominator if denominator else None
