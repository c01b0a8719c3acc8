"""``workers.cache_lock``: workers starting together build a cache entry once, in real processes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import structlog

from workers.cache_lock import building

REPO = Path(__file__).resolve().parents[2]
WAITING = "waiting for another process building the same entry"

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="flock")

# A builder in a process of its own: announces the lock, waits for a line on stdin, writes the
# entry unless it is there (counting its builds), and says what it found.
BUILDER = """
import sys
from pathlib import Path
import structlog
structlog.configure(logger_factory=structlog.PrintLoggerFactory(sys.stderr))
from workers.cache_lock import building
entry = Path(sys.argv[1])
with building(entry):
    print("holding", flush=True)
    sys.stdin.readline()
    if entry.exists():
        print("found", flush=True)
    else:
        entry.write_text("built")
        print("built", flush=True)
"""


def _builder(entry: Path, log: Path) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    with log.open("w") as stderr:  # the child keeps its own copy
        return subprocess.Popen(
            [sys.executable, "-c", BUILDER, str(entry)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
            env=env,
            cwd=REPO,
        )


def _finished(process: subprocess.Popen[str]) -> int:
    """Its exit status, its pipes closed."""
    for pipe in (process.stdin, process.stdout):
        if pipe is not None:
            pipe.close()
    return process.wait(30)


def _wait_for_line(log: Path, text: str, process: subprocess.Popen[str]) -> None:
    """Until ``text`` is in ``log`` (the second builder's "waiting" line, written before it blocks)."""
    deadline = time.monotonic() + 60  # a bound for a lock that never made it wait, not a speed
    while text not in log.read_text():
        assert process.poll() is None and time.monotonic() < deadline, log.read_text()
        try:
            process.wait(0.05)
        except subprocess.TimeoutExpired:
            pass


def test_a_second_process_waits_for_the_first_build_and_then_finds_it(tmp_path: Path) -> None:
    entry = tmp_path / "cache" / "built" / "abc.wasm"
    first = _builder(entry, tmp_path / "first.log")
    assert first.stdout is not None and first.stdin is not None
    assert first.stdout.readline().strip() == "holding"
    second = _builder(entry, tmp_path / "second.log")
    _wait_for_line(tmp_path / "second.log", WAITING, second)
    assert second.stdout is not None and second.stdin is not None
    second.stdin.write("go\n")
    second.stdin.flush()  # it cannot act on it: it is still waiting for the lock
    first.stdin.write("go\n")
    first.stdin.close()
    assert first.stdout.read().split() == ["built"]
    assert second.stdout.read().split() == ["holding", "found"]  # built once
    assert _finished(first) == 0 and _finished(second) == 0
    assert entry.read_text() == "built"


def test_a_builder_killed_outright_does_not_block_the_next(tmp_path: Path) -> None:
    entry = tmp_path / "built" / "abc.wasm"
    first = _builder(entry, tmp_path / "first.log")
    assert first.stdout is not None
    assert first.stdout.readline().strip() == "holding"
    second = _builder(entry, tmp_path / "second.log")
    _wait_for_line(tmp_path / "second.log", WAITING, second)
    first.send_signal(signal.SIGKILL)
    assert _finished(first) == -signal.SIGKILL
    assert second.stdout is not None and second.stdin is not None
    assert second.stdout.readline().strip() == "holding"  # the kernel dropped the dead one's lock
    second.stdin.write("go\n")
    second.stdin.close()
    assert second.stdout.read().split() == ["built"]
    assert _finished(second) == 0


def test_where_no_lock_file_can_be_made_it_builds_unlocked(tmp_path: Path) -> None:
    # A cache the worker cannot write (read-only, or here a file where the directory should be)
    # only costs time, as before the lock: the build goes on.
    (tmp_path / "built").write_text("not a directory")
    ran = False
    with building(tmp_path / "built" / "abc.wasm"):
        ran = True
    assert ran


def test_threads_of_one_process_exclude_each_other_too(tmp_path: Path) -> None:
    # A worker loads several components at once on loader threads: each opens its own descriptor.
    entry = tmp_path / "abc.wasm"
    inside: list[str] = []
    held, release = threading.Event(), threading.Event()

    def hold() -> None:
        with building(entry):
            inside.append("first in")
            held.set()
            release.wait(30)
            inside.append("first out")

    def take() -> None:
        with building(entry):
            inside.append("second in")

    with structlog.testing.capture_logs() as logs:
        first = threading.Thread(target=hold)
        first.start()
        assert held.wait(30)
        second = threading.Thread(target=take)
        second.start()
        while not any(event["event"] == WAITING for event in logs):  # it is blocked on the lock
            assert second.is_alive()
            second.join(0.05)
        release.set()
        first.join(30)
        second.join(30)
    assert inside == ["first in", "first out", "second in"]
