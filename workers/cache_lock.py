"""One process builds a cache entry; the others wait for it and then read it.

``toolbus up`` starts a worker per core at once, and on a cold cache every one of them finds the
same builds and compilations missing. Renaming finished files into place keeps the cache
consistent without a lock, but each worker would do the whole work (componentize-py ~6 s and
compiling ~6 s of CPU per example) and the last rename would win. ``building(entry)`` holds an
exclusive ``flock`` on ``<entry>.lock`` beside the entry; a caller checks for the entry again once
it holds the lock, so the others find what the first one built.

The kernel drops the lock with its holder's last descriptor, even on kill -9: a builder that dies
never blocks the others, and a build that hangs is bounded by its own timeout. Where no lock file
can be made (a read-only cache, a system without ``flock``), building goes on unlocked, as before.
Lock files stay beside their entries (removing one would let two processes lock two files).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import structlog

try:
    import fcntl
except ImportError:  # not a POSIX system: build unlocked
    fcntl = None  # type: ignore[assignment]

log = structlog.get_logger(__name__)


@contextmanager
def building(entry: Path) -> Iterator[None]:
    """Hold the build lock of cache entry ``entry`` (waiting for another process holding it)."""
    lock_path = entry.with_name(f"{entry.name}.lock")
    try:
        lock_path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    except OSError as exc:
        log.debug("building without a lock", entry=str(entry), error=str(exc))
        yield
        return
    try:
        if fcntl is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                log.info("waiting for another process building the same entry", entry=str(entry))
                fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock
