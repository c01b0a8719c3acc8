"""Percentiles of samples and medians of repeated runs: the only arithmetic the report relies on;
and the per-call timing of in-process micro-benchmarks (``bench.observability``, ``bench.audit_costs``...)."""

from __future__ import annotations

import math
import statistics
import timeit
from collections.abc import Callable, Coroutine, Iterable, Mapping, Sequence
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


def per_call_us(call: Callable[[], object], *, number: int, repeat: int) -> float:
    """Median µs per call of ``repeat`` timed runs of ``number`` calls, after one untimed call (which
    fills caches and creates lazily made state, e.g. metric label children)."""
    call()
    return statistics.median(timeit.repeat(call, number=number, repeat=repeat)) / number * 1e6


def run_unsuspended(coro: Coroutine[Any, Any, Any]) -> Any:
    """Run ``coro`` to its end without an event loop; it must not suspend (await nothing that waits).

    Raises:
        RuntimeError: the coroutine suspended.
    """
    try:
        coro.send(None)
    except StopIteration as stop:
        return stop.value
    raise RuntimeError("the coroutine suspended")
