"""Resident memory (RSS) of a system's processes, read from ``/proc`` by a sampler thread.

The soak run (``bench.soak``) starts a ``MemorySampler`` over a ``toolbus up`` system and reads
its samples afterwards; each sample names processes by role (``gateway``, ``worker-2``...) and
keeps their pids too, so a process that restarted mid-run is told apart from one that grew.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

_PAGE_BYTES: Final = os.sysconf("SC_PAGE_SIZE")
_PROC: Final = Path("/proc")
MB: Final = 1024 * 1024


def rss_bytes(pid: int) -> int | None:
    """Resident set size of ``pid`` in bytes, or None once it is gone."""
    try:
        fields = (_PROC / str(pid) / "statm").read_text().split()
    except OSError:
        return None
    return int(fields[1]) * _PAGE_BYTES  # statm: size resident shared text lib data dt (in pages)


@dataclass(frozen=True)
class MemorySample:
    """The RSS of every process at one moment, ``at_s`` seconds after the sampler started."""

    at_s: float
    rss_mb: dict[str, float]
    """Role → resident MB."""
    pids: dict[str, int]
    """Role → pid, as sampled (a new pid under a role means that process restarted)."""


@dataclass
class MemorySampler:
    """Samples every ``interval_s`` the RSS of the processes ``processes()`` returns (pid → role).

    ``processes`` is asked anew at each sample, so a restarted process is sampled under its role.
    """

    processes: Callable[[], Mapping[int, str]]
    interval_s: float = 5.0
    samples: list[MemorySample] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event, repr=False)
    _thread: threading.Thread | None = field(default=None, repr=False)
    _started: float = field(default=0.0, repr=False)

    def sample(self) -> MemorySample:
        """Take one sample now (and keep it)."""
        rss: dict[str, float] = {}
        pids: dict[str, int] = {}
        for pid, role in self.processes().items():
            size = rss_bytes(pid)
            if size is not None:
                rss[role] = round(size / MB, 2)
                pids[role] = pid
        taken = MemorySample(round(time.monotonic() - self._started, 2), rss, pids)
        self.samples.append(taken)
        return taken

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.sample()

    def start(self) -> None:
        """Take a first sample now, then one every ``interval_s`` in a background thread."""
        self._started = time.monotonic()
        self.sample()
        self._thread = threading.Thread(target=self._loop, name="memory-sampler", daemon=True)
        self._thread.start()

    def stop(self) -> list[MemorySample]:
        """Stop sampling, take a last sample and return them all."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        self.sample()
        return self.samples
