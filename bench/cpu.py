"""Where the CPU goes: per-process CPU time from ``/proc``, sampled around a measured run.

Each run records, for every process taking part (gateway, worker, registry, nats-server, the
baseline servers), the CPU it used divided by the run's wall time: 1.0 is one core busy.
On a 2-core machine the column sums tell at once whether the machine was the limit.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

_TICKS_PER_S = os.sysconf("SC_CLK_TCK")
_PROC = Path("/proc")

_ROLES = (
    ("nats-server", "nats-server"),
    (" gateway", "gateway"),
    (" worker", "worker"),
    (" registry", "registry"),
    (" up", "toolbus-up"),
    ("bench.servers.sdk", "sdk-server"),
    ("bench.servers.limit", "limit-server"),
    ("bench.servers.echo", "echo-responder"),
    ("bench.busload", "busload"),
)


def _stat_fields(pid: int) -> list[str] | None:
    try:
        text = (_PROC / str(pid) / "stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may hold spaces; everything after its closing paren is fixed.
    return text[text.rindex(")") + 2 :].split()


def cpu_seconds(pid: int) -> float | None:
    """User plus system CPU time of ``pid`` so far, or None once it is gone."""
    fields = _stat_fields(pid)
    if fields is None:
        return None
    return (int(fields[11]) + int(fields[12])) / _TICKS_PER_S  # utime, stime (fields 14, 15)


def cmdline(pid: int) -> str:
    """The command line of ``pid`` as one string ("" once it is gone)."""
    try:
        raw = (_PROC / str(pid) / "cmdline").read_bytes()
    except OSError:
        return ""
    return raw.replace(b"\0", b" ").decode(errors="replace").strip()


def role(pid: int) -> str:
    """A short name for what ``pid`` is (``gateway``, ``worker``, ``nats-server``...)."""
    line = cmdline(pid)
    for needle, name in _ROLES:
        if needle in line:
            return name
    return Path(line.split(" ", 1)[0]).name or str(pid)


def descendants(root: int) -> list[int]:
    """``root`` and every process below it, found through the parent pids in ``/proc``."""
    children: dict[int, list[int]] = {}
    for entry in _PROC.iterdir():
        if not entry.name.isdigit():
            continue
        fields = _stat_fields(int(entry.name))
        if fields is not None:
            children.setdefault(int(fields[1]), []).append(int(entry.name))  # ppid (field 4)
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo.extend(children.get(pid, []))
    return found


def labelled(pids: Iterable[int]) -> dict[int, str]:
    """``pids`` with role names, numbered when a role repeats (``worker``, ``worker-2``)."""
    names: dict[int, str] = {}
    seen: dict[str, int] = {}
    for pid in sorted(pids):
        name = role(pid)
        seen[name] = seen.get(name, 0) + 1
        names[pid] = name if seen[name] == 1 else f"{name}-{seen[name]}"
    return names


class CpuMeter:
    """CPU used by a set of processes between ``start`` and ``stop``, as cores busy."""

    def __init__(self, processes: Mapping[int, str]) -> None:
        self._processes = dict(processes)
        self._before: dict[int, float] = {}

    def start(self) -> None:
        self._before = {pid: t for pid in self._processes if (t := cpu_seconds(pid)) is not None}

    def stop(self, wall_s: float) -> dict[str, float]:
        """Cores busy per process over ``wall_s`` seconds (rounded to 0.01)."""
        usage: dict[str, float] = {}
        for pid, before in self._before.items():
            after = cpu_seconds(pid)
            if after is not None and wall_s > 0:
                usage[self._processes[pid]] = round((after - before) / wall_s, 2)
        return usage


def mean_cores(runs: Iterable[Mapping[str, Any]]) -> dict[str, float]:
    """Per process, the mean of the runs' ``cpu_cores`` (a process missing from a run counts as idle)."""
    runs = list(runs)
    roles = sorted({role for run in runs for role in run.get("cpu_cores", {})})
    return {role: round(sum(run.get("cpu_cores", {}).get(role, 0.0) for run in runs) / len(runs), 2) for role in roles}


def _machine_ticks() -> tuple[int, int]:
    """(busy, total) jiffies of all CPUs together since boot, from the first line of /proc/stat."""
    values = [int(v) for v in (_PROC / "stat").read_text().splitlines()[0].split()[1:]]
    idle = values[3] + (values[4] if len(values) > 4 else 0)  # idle + iowait
    total = sum(values[:8])  # user nice system idle iowait irq softirq steal (guest is in user)
    return total - idle, total


class MachineMeter:
    """Cores busy on the whole machine between ``start`` and ``stop`` (ours and anybody else's)."""

    def __init__(self) -> None:
        self._before = (0, 0)

    def start(self) -> None:
        self._before = _machine_ticks()

    def stop(self, wall_s: float) -> float:
        busy, _ = _machine_ticks()
        return round((busy - self._before[0]) / _TICKS_PER_S / wall_s, 2) if wall_s > 0 else 0.0
