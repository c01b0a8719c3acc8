"""End-to-end fixtures: the real system started by ``toolbus up``, as a user would start it."""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from bus.embedded import free_port

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples"
UP_TIMEOUT_S = 300.0
"""A cold start builds two componentize-py examples (~6 s each) and compiles them (~6 s each)."""
STOP_TIMEOUT_S = 30.0


@dataclass
class RunningSystem:
    """A ``toolbus up`` process and where to reach it."""

    process: subprocess.Popen[str]
    mcp_url: str
    nats_url: str
    config: Path
    banner: str

    def children(self) -> dict[str, int]:
        """Pids of the supervised children by role (``registry``, ``worker``, ``gateway``)."""
        found: dict[str, int] = {}
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = stat.read_text().rsplit(")", 1)[1].split()
                cmdline = (stat.parent / "cmdline").read_bytes().split(b"\0")
            except (OSError, IndexError):
                continue
            if int(fields[1]) == self.process.pid and b"bus.cli" in cmdline:
                found[cmdline[cmdline.index(b"bus.cli") + 1].decode()] = int(stat.parent.name)
        return found


def write_config(directory: Path, *, nats_port: int, mcp_port: int) -> Path:
    """A toolbus.toml serving the examples plus the WAT testkit on the given ports."""
    config = directory / "toolbus.toml"
    config.write_text(
        f"""
state_dir = "{directory / "state"}"

[nats]
url = "nats://127.0.0.1:{nats_port}"

[gateway]
port = {mcp_port}

[worker]
concurrency = 2
announce_interval_s = 1.0

[[components]]
name = "calc"
source = "{EXAMPLES / "calc"}"

[[components]]
name = "inventory"
source = "{EXAMPLES / "inventory"}"

[[components]]
name = "kit"
path = "{EXAMPLES / "wat" / "testkit.wat"}"
""",
        encoding="utf-8",
    )
    return config


def start_up(config: Path, *extra: str, log_path: Path) -> tuple[subprocess.Popen[str], str]:
    """Run ``toolbus up`` and wait for its banner; return the process and the banner text."""
    with log_path.open("w") as log:  # the child keeps its own copy of the descriptor
        process = subprocess.Popen(
            [sys.executable, "-m", "bus.cli", "up", "--config", str(config), *extra],
            stdout=subprocess.PIPE,
            stderr=log,
            text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
    lines: queue.Queue[str | None] = queue.Queue()

    def pump() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            lines.put(line)
        lines.put(None)

    threading.Thread(target=pump, daemon=True).start()
    banner: list[str] = []
    deadline = time.monotonic() + UP_TIMEOUT_S
    while time.monotonic() < deadline:
        try:
            line = lines.get(timeout=1)
        except queue.Empty:
            continue
        if line is None:
            raise AssertionError(f"toolbus up exited early ({process.wait()}): {log_path.read_text()[-3000:]}")
        banner.append(line)
        if line.startswith("Ctrl-C"):
            return process, "".join(banner)
    process.kill()
    raise AssertionError(f"toolbus up not ready in {UP_TIMEOUT_S}s: {log_path.read_text()[-3000:]}")


def stop_up(process: subprocess.Popen[str]) -> int:
    """SIGTERM ``toolbus up`` and return its exit code."""
    process.send_signal(signal.SIGTERM)
    try:
        return process.wait(STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        process.kill()
        raise
    finally:
        if process.stdout:
            process.stdout.close()


@pytest.fixture(scope="session")
def system(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningSystem]:
    """``toolbus up`` with the examples, embedded NATS, random ports; stopped at the end."""
    directory = tmp_path_factory.mktemp("system")
    nats_port, mcp_port = free_port(), free_port()
    config = write_config(directory, nats_port=nats_port, mcp_port=mcp_port)
    process, banner = start_up(config, log_path=directory / "up.log")
    running = RunningSystem(
        process, f"http://127.0.0.1:{mcp_port}/mcp", f"nats://127.0.0.1:{nats_port}", config, banner
    )
    yield running
    assert stop_up(process) == 0, (directory / "up.log").read_text()[-3000:]
