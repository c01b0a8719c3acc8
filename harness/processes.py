"""Child processes of a bench run or a test: each in its own process group, every one stopped on the way out.

A child gets a new session, so the terminal's Ctrl-C reaches only the bench (or pytest), which then stops
its children in reverse order of starting: SIGTERM to the leader (``toolbus up`` stops its own
children on SIGTERM), then SIGKILL to whatever is left in the group. On Linux a child also gets
SIGTERM if its parent itself dies without cleaning up.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

from harness.errors import ChildFailed

REPO = Path(__file__).resolve().parents[1]
"""The checkout the bench and the tests run from (children start here, so ``python -m bench.x`` works)."""
STOP_TIMEOUT_S = 20.0
"""How long a child gets to exit after SIGTERM (``toolbus up`` stops four processes in turn)."""
_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """In the child before exec: ask Linux for SIGTERM when its parent (the bench, pytest) dies."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


@dataclass
class Child:
    """One running child process and the file its output goes to."""

    name: str
    process: subprocess.Popen[bytes]
    log_path: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def log_tail(self, chars: int = 3000) -> str:
        return self.log_text()[-chars:]

    def wait_for_output(self, marker: str, timeout_s: float) -> None:
        """Wait until ``marker`` appears in the child's output.

        Raises:
            ChildFailed: the child exited first, or ``timeout_s`` passed.
        """
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if marker in self.log_text():
                return
            if self.process.poll() is not None:
                raise ChildFailed(f"{self.name} exited with {self.process.returncode}:\n{self.log_tail()}")
            time.sleep(0.05)
        raise ChildFailed(f"{self.name} did not print {marker!r} within {timeout_s:g} s:\n{self.log_tail()}")


@dataclass
class Children:
    """Starts children and guarantees they are stopped (use as a context manager)."""

    log_dir: Path
    _running: list[Child] = field(default_factory=list)

    def spawn(self, name: str, argv: Sequence[str], *, env: Mapping[str, str] | None = None) -> Child:
        """Start ``argv`` in its own process group; stdout and stderr go to ``LOG_DIR/NAME.log``."""
        self.log_dir.mkdir(parents=True, exist_ok=True)
        log_path = self.log_dir / f"{name}.log"
        with log_path.open("wb") as log:
            process = subprocess.Popen(
                list(argv),
                cwd=REPO,
                env={**os.environ, **(env or {})},
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=_die_with_parent if sys.platform == "linux" else None,
            )
        child = Child(name, process, log_path)
        self._running.append(child)
        return child

    def stop(self, child: Child, timeout_s: float = STOP_TIMEOUT_S) -> int | None:
        """Stop one child and everything in its process group; return its exit status."""
        process = child.process
        if process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                print(f"bench: {child.name} ignored SIGTERM for {timeout_s:g} s; killing it", file=sys.stderr)
        # Grandchildren (toolbus up's workers, nats-server) share the leader's group.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(5)
        if child in self._running:
            self._running.remove(child)
        return process.returncode

    def stop_all(self) -> None:
        """Stop every child still running, newest first."""
        for child in reversed(list(self._running)):
            self.stop(child)

    def __enter__(self) -> Children:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop_all()
