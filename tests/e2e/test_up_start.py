"""``toolbus up``'s start and end as a user meets them: a busy port is one clear line and exit 1,
and killing ``up`` outright (SIGKILL, a CI timeout) leaves nothing of it running."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from bus.embedded import free_port
from tests.e2e.conftest import EXAMPLES, start_up

GONE_WITHIN_S = 10.0
"""The kernel's parent-death signal is immediate; the children then stop as on SIGTERM."""


def wat_config(tmp_path: Path) -> Path:
    """A config that needs no build (a WAT command), with its state under ``tmp_path``."""
    config = tmp_path / "toolbus.toml"
    config.write_text(
        f'state_dir = "{tmp_path / "state"}"\n'
        "[[components]]\n"
        'name = "echo"\n'
        'kind = "command"\n'
        f'path = "{EXAMPLES / "wat" / "echo.wat"}"\n'
        'input_schema = { type = "object" }\n',
        encoding="utf-8",
    )
    return config


@pytest.fixture
def listener() -> Iterator[int]:
    """A port some other program listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield int(sock.getsockname()[1])


def up(config: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cli.main", "up", "--config", str(config), *extra],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_a_busy_mcp_port_is_one_line_and_exit_1(tmp_path: Path, listener: int) -> None:
    done = up(wat_config(tmp_path), "--port", str(listener), "--nats-port", str(free_port()))
    assert done.returncode == 1
    assert done.stderr.splitlines() == [
        f"toolbus: port {listener} on 127.0.0.1 is in use by another process; choose the MCP port with --port N"
    ]
    assert "toolbus is up" not in done.stdout


def test_a_busy_nats_port_is_one_line_and_exit_1(tmp_path: Path, listener: int) -> None:
    done = up(wat_config(tmp_path), "--port", str(free_port()), "--nats-port", str(listener))
    assert done.returncode == 1
    [line] = done.stderr.splitlines()
    assert line.startswith(f"toolbus: NATS port {listener} on 127.0.0.1 is in use")
    assert "--nats-port N" in line and "--nats URL" in line


def test_nats_port_goes_with_the_embedded_server_only(tmp_path: Path) -> None:
    done = up(wat_config(tmp_path), "--nats", "nats://127.0.0.1:1", "--nats-port", "4299")
    assert done.returncode == 2
    assert "--nats-port is the embedded nats-server's" in done.stderr


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie (exited, not yet reaped by init) counts as gone.
    with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
        return stat.read().split(")")[-1].split()[0] != "Z"


def _children_of(pid: int) -> list[int]:
    """Every process whose parent is ``pid`` (from /proc)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text(encoding="ascii")
            except OSError:
                continue
            if int(stat.split(")")[-1].split()[1]) == pid:
                found.append(int(entry.name))
    return found


@pytest.mark.slow
def test_killing_up_outright_stops_every_child_nats_server_included(tmp_path: Path) -> None:
    nats_port = free_port()
    process, _banner = start_up(
        wat_config(tmp_path), "--port", str(free_port()), "--nats-port", str(nats_port), log_path=tmp_path / "up.log"
    )
    children = _children_of(process.pid)
    assert len(children) == 4, children  # nats-server, registry, worker, gateway
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert process.stdout is not None
    process.stdout.close()  # start_up's reader has met the end of it
    deadline = time.monotonic() + GONE_WITHIN_S
    while time.monotonic() < deadline and any(_alive(pid) for pid in children):
        time.sleep(0.1)
    assert not [pid for pid in children if _alive(pid)], "children outlived toolbus up"
    # The port is free again: the next `up` can start.
    with socket.socket() as sock:
        assert sock.connect_ex(("127.0.0.1", nats_port)) != 0
