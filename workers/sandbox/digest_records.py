"""A large Wasm file's digest remembered by its ``stat``, so a restart need not read and hash it.

A componentize-py component is ~18 MB: reading and hashing it cost each worker start ~18 ms
(issue 17's restart target), all to find a compiled form that is already in the compile cache.
A record in the cache directory keeps the digest with the file's identity and change times, and
a load trusts it only when

- the file is one toolbus wrote into its own cache directory (a component it built, a package it
  fetched): written once through a rename and never opened for writing again. A user's file
  elsewhere is hashed on every load, because its times do not always move when its bytes do: a
  write through a shared writable mapping to a page already dirty changes neither mtime nor ctime
  until the page is written back (tests/workers/sandbox/test_digest_record_attacks.py);
- the file is the same one: device, inode, size, and modification and change times to the
  nanosecond; and
- it had settled before it was hashed: last changed at least ``SETTLED_NS`` before the hash began
  (git's rule for a "racily clean" index entry). A write during or after the hash gives the file
  a change time (ctime) at or after the hash began, less a clock tick, and so one the record
  cannot hold; the kernel sets ctime on every change and no call sets it back.

Files under ``RECORD_MIN_BYTES`` are read and hashed every time: that costs less than a record.
The records sit beside the compiled components, which toolbus already trusts as native code, so
they add no trust the cache directory did not have.
"""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path
from stat import S_ISREG
from typing import Final

import msgspec
import structlog

from workers.sandbox.compile_cache import unreadable, wasm_digest, write_atomically

log = structlog.get_logger(__name__)

RECORD_MAX_BYTES: Final = 4096
"""A record is ~300 bytes; anything larger (or not a regular file) at a record's path is not one."""
RECORD_MIN_BYTES: Final = 1 << 20
"""Smaller files are hashed on every load: reading and hashing cost ~1 ms per MiB (calc's 17.5 MiB
took 8.4 to 9.2 ms to read and 9.0 to 9.1 ms to hash)."""
SETTLED_NS: Final = 2_000_000_000
"""How long before its hash a file must have last changed for the hash to be trusted later:
file times come from a coarse clock (a tick of a few ms) and FAT keeps them to 2 s."""


class _Record(msgspec.Struct, frozen=True):
    path: bytes
    """``os.fsencode`` of the path: a file name need not be UTF-8."""
    dev: int
    ino: int
    size: int
    mtime_ns: int
    ctime_ns: int
    digest: str


def recall(cache_dir: Path, path: Path) -> tuple[str, os.stat_result] | None:
    """The digest recorded for the file at ``path`` and its ``stat``, if the record holds for it now."""
    if not _recordable(cache_dir, path):
        return None
    try:
        # The stat of an opened file: opening revalidates a network filesystem's cached attributes
        # (NFS's close-to-open), which a bare stat may serve stale for up to a minute.
        with path.open("rb") as file:
            stat = os.fstat(file.fileno())
    except OSError:
        return None  # the read that follows names the error
    if stat.st_size < RECORD_MIN_BYTES:
        return None
    record = _read_record(_record_path(cache_dir, path))
    if record is None or record.path != os.fsencode(path) or not same_file(stat, record):
        return None
    return record.digest, stat


def same_file(stat: os.stat_result, other: os.stat_result | _Record) -> bool:
    """Whether two stats (or a stat and a record) describe the same file, unchanged."""
    return _identity(stat) == _identity(other)


def read(cache_dir: Path, path: Path) -> tuple[bytes, str]:
    """Read and hash the file at ``path``; remember the digest when the file is large.

    Raises:
        ComponentLoadError: the file cannot be read.
    """
    try:
        with path.open("rb") as file:
            stat = os.fstat(file.fileno())  # of the file read, before the read
            hashed_at_ns = time.time_ns()
            wasm = file.read()
    except OSError as exc:
        raise unreadable(path, exc) from exc
    digest = wasm_digest(wasm)
    # Only a file that had settled gets a record (a later load hashes a fresh one again, and
    # records it then); so every record on disk passes the racy-clean rule.
    settled = max(stat.st_mtime_ns, stat.st_ctime_ns) < hashed_at_ns - SETTLED_NS
    if stat.st_size >= RECORD_MIN_BYTES and settled and _recordable(cache_dir, path):
        record = _Record(
            os.fsencode(path),
            stat.st_dev,
            stat.st_ino,
            stat.st_size,
            stat.st_mtime_ns,
            stat.st_ctime_ns,
            digest,
        )
        try:
            write_atomically(_record_path(cache_dir, path), msgspec.json.encode(record))
        except OSError as exc:  # the record only saves time: a read-only cache must not stop the load
            log.warning("digest record not written", path=str(path), error=str(exc))
    return wasm, digest


def _recordable(cache_dir: Path, path: Path) -> bool:
    """Whether ``path`` is a file toolbus wrote into its cache (symlinks resolved)."""
    try:
        return path.resolve().is_relative_to(cache_dir.resolve())
    except (OSError, RuntimeError):  # a symlink loop
        return False


def _read_record(record_path: Path) -> _Record | None:
    """The record at ``record_path``; None when there is none or it is not one (a FIFO or a huge
    file there must cost the record, never hang the load)."""
    try:
        fd = os.open(record_path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        stat = os.fstat(fd)
        if not S_ISREG(stat.st_mode) or stat.st_size > RECORD_MAX_BYTES:
            return None
        return msgspec.json.decode(os.read(fd, RECORD_MAX_BYTES + 1), type=_Record)
    except (OSError, msgspec.DecodeError):
        return None
    finally:
        os.close(fd)


def _identity(stat: os.stat_result | _Record) -> tuple[int, int, int, int, int]:
    if isinstance(stat, _Record):
        return stat.dev, stat.ino, stat.size, stat.mtime_ns, stat.ctime_ns
    return stat.st_dev, stat.st_ino, stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns


def _record_path(cache_dir: Path, path: Path) -> Path:
    return cache_dir / "digests" / f"{hashlib.sha256(os.fsencode(path)).hexdigest()}.json"
