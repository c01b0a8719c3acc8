"""What a guest writes to stdout and stderr: bounded buffers, one log entry per call.

wasmtime calls the output callbacks from its own I/O thread and may release them after a call
has returned; if that happens while the interpreter exits, the process aborts inside Rust. So
live buffers are counted and interpreter exit waits for them (``drain_output_callbacks``).
"""

from __future__ import annotations

import atexit
import threading
import time

import structlog
import wasmtime

log = structlog.get_logger(__name__)

STDERR_LIMIT_BYTES = 4096
"""Tail of a guest's stderr kept per call, appended to trap messages (Python guests print
their traceback there)."""

GUEST_LOG_LIMIT_BYTES = 64 * 1024
"""Most of each stream (stdout, stderr) a call's log entry carries; the rest is counted and
marked as truncated, so a guest writing megabytes costs the log 64 KiB."""

EXIT_DRAIN_TIMEOUT_S = 1.0
"""Longest wait at interpreter exit for wasmtime to release guest output callbacks."""


class TailBuffer:
    """Keeps the last ``limit`` bytes written (a guest's stderr).

    wasmtime calls ``write`` and releases it from its own I/O thread, possibly after the call
    returned. If that happens while the interpreter is exiting, the thread dies inside Rust and
    the process aborts; so live buffers are counted and exit waits for them
    (``drain_output_callbacks``).
    """

    live = 0
    _live_lock = threading.RLock()  # re-entrant: __del__ may run from a GC inside __init__

    def __init__(self, limit: int = STDERR_LIMIT_BYTES) -> None:
        self._limit = limit
        self._data = bytearray()
        self.total = 0
        """Bytes written since the last ``clear``, kept or not."""
        with TailBuffer._live_lock:
            TailBuffer.live += 1

    def __del__(self) -> None:
        with TailBuffer._live_lock:
            TailBuffer.live -= 1

    def write(self, data: bytes) -> None:
        self.total += len(data)
        self._data += data
        if len(self._data) > self._limit:
            del self._data[: len(self._data) - self._limit]

    def text(self, last: int | None = None) -> str:
        """What was kept (only its last ``last`` bytes if given), decoded and stripped."""
        data = self._data if last is None else self._data[-last:]
        return data.decode("utf-8", errors="replace").strip()

    def clear(self) -> None:
        self._data.clear()
        self.total = 0

    def log_text(self) -> str:
        """What was kept, with a marker in front when earlier bytes were dropped."""
        dropped = self.total - len(self._data)
        text = self._data.decode("utf-8", errors="replace")
        return f"[{dropped} earlier bytes truncated]\n{text}" if dropped else text


class HeadLog(TailBuffer):
    """Keeps the first ``limit`` bytes written (a guest's stdout) and counts the rest.

    Writes past the limit are accepted and dropped: failing them would only make the guest
    retry or crash, and its wall-clock deadline already bounds how long it can keep writing.
    """

    def write(self, data: bytes) -> None:
        self.total += len(data)
        room = self._limit - len(self._data)
        if room > 0:
            self._data += data[:room]

    @property
    def overflowed(self) -> bool:
        """True when more than ``limit`` bytes were written (the rest was dropped)."""
        return self.total > self._limit

    def raw(self) -> bytes:
        return bytes(self._data)

    def log_text(self) -> str:
        """What was kept, with a marker after it when later bytes were dropped."""
        dropped = self.total - len(self._data)
        text = self._data.decode("utf-8", errors="replace")
        return f"{text}\n[{dropped} more bytes truncated]" if dropped else text


class GuestOutput:
    """A Store's stdout and stderr: bounded, logged once per call, never the worker's own stdout."""

    def __init__(self) -> None:
        self.stdout = HeadLog(GUEST_LOG_LIMIT_BYTES)
        self.stderr = TailBuffer(GUEST_LOG_LIMIT_BYTES)

    def capture(self, wasi: wasmtime.WasiConfig) -> wasmtime.WasiConfig:
        """``wasi`` with its stdout and stderr going into these buffers (stdin stays empty)."""
        wasi.stdout_custom = self.stdout.write
        wasi.stderr_custom = self.stderr.write
        return wasi

    def flush_to_log(self, tool: str) -> None:
        """Log what the guest wrote during this call (if anything) and start afresh."""
        fields: dict[str, object] = {}
        for name, buffer in (("stdout", self.stdout), ("stderr", self.stderr)):
            if buffer.total:
                fields[name] = buffer.log_text()
                fields[f"{name}_bytes"] = buffer.total
                buffer.clear()
        if fields:
            log.info("guest output", tool=tool, **fields)


def drain_output_callbacks(timeout_s: float = EXIT_DRAIN_TIMEOUT_S) -> None:
    """Wait (bounded) until wasmtime has released every stderr callback, then a little more."""
    deadline = time.monotonic() + timeout_s
    while TailBuffer.live > 0 and time.monotonic() < deadline:
        time.sleep(0.005)
    # The I/O thread may still be returning through the callback trampoline.
    time.sleep(0.02)


atexit.register(drain_output_callbacks)
