"""``toolbus up``'s start and end as a user meets them: a busy port is one clear line and exit 1,
tools are served as each component loads while the banner and ``/readyz`` wait for the last one,
and killing ``up`` outright (SIGKILL, a CI timeout) leaves nothing of it running."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from mcp import Client

from bus.embedded import free_port
from schemas.config import WorkerSettings
from tests.conftest import TESTKIT_WAT
from tests.e2e.conftest import EXAMPLES, start_up

GONE_WITHIN_S = 10.0
"""The kernel's parent-death signal is immediate; the children then stop as on SIGTERM."""
EVENT_TIMEOUT_S = 60.0
"""Bounds each wait for something ``up`` must do (a generous bound, never a measured time)."""


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


def test_the_same_port_for_mcp_and_nats_is_one_line_and_exit_1(tmp_path: Path) -> None:
    port = str(free_port())
    done = up(wat_config(tmp_path), "--port", port, "--nats-port", port)
    assert done.returncode == 1
    assert done.stderr.splitlines() == [
        f"toolbus: port {port} cannot be both the MCP and the NATS port; choose another with --port N or --nats-port N"
    ]


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
    mcp_port, nats_port = free_ports(2)
    process, _banner = start_up(
        wat_config(tmp_path), "--port", str(mcp_port), "--nats-port", str(nats_port), log_path=tmp_path / "up.log"
    )
    children = _children_of(process.pid)
    workers = WorkerSettings().processes  # one per core by default
    assert len(children) == 3 + workers, children  # nats-server, registry, the workers, gateway
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


def free_ports(count: int) -> list[int]:
    """``count`` different free ports (bound together: one after another, the kernel may hand out
    the same port twice, and ``up`` would then find its own NATS on its MCP port)."""
    with contextlib.ExitStack() as stack:
        sockets = [stack.enter_context(socket.socket()) for _ in range(count)]
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [int(sock.getsockname()[1]) for sock in sockets]


class UpProcess:
    """``toolbus up`` as a subprocess, its standard output collected line by line as it comes."""

    def __init__(self, config: Path, log_path: Path, *extra: str) -> None:
        self.log_path = log_path
        with log_path.open("w") as log:  # the child keeps its own copy of the descriptor
            self.process = subprocess.Popen(
                [sys.executable, "-m", "cli.main", "up", "--config", str(config), *extra],
                stdout=subprocess.PIPE,
                stderr=log,
                text=True,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )
        self._lines: queue.Queue[str | None] = queue.Queue()
        self._printed: list[str] = []
        self._pump_thread = threading.Thread(target=self._pump, daemon=True)
        self._pump_thread.start()

    def _pump(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self._lines.put(line)
        self._lines.put(None)

    def log_tail(self) -> str:
        return self.log_path.read_text()[-3000:]

    def output(self) -> str:
        """Everything ``up`` printed so far.

        Raises:
            AssertionError: ``up`` has exited.
        """
        while True:
            try:
                line = self._lines.get_nowait()
            except queue.Empty:
                return "".join(self._printed)
            if line is None:
                raise AssertionError(f"toolbus up exited: {self.log_tail()}")
            self._printed.append(line)

    def stop(self) -> int:
        """SIGTERM ``up``; return its exit code (killed if it does not stop in time)."""
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return self.process.wait()
        finally:
            self._pump_thread.join(10)  # it meets the end of the output once every holder has exited
            assert self.process.stdout is not None
            self.process.stdout.close()


def _readyz(port: int) -> tuple[int, dict[str, object]] | None:
    """``/readyz`` of the gateway on ``port``: its status and body (None: it does not answer yet)."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=5) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as refused:
        return refused.code, json.loads(refused.read())
    except (urllib.error.URLError, ConnectionError):
        return None


def _feed(fifo: Path, data: bytes) -> None:
    """Write ``data`` into ``fifo``, whose reader (the worker loading it) has opened it already."""
    deadline = time.monotonic() + EVENT_TIMEOUT_S
    while True:
        try:
            fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)  # ENXIO until a reader has it open
            break
        except OSError as exc:
            if exc.errno != errno.ENXIO or time.monotonic() > deadline:
                raise
            time.sleep(0.05)
    os.set_blocking(fd, True)
    with os.fdopen(fd, "wb") as pipe:
        pipe.write(data)


@pytest.mark.slow
async def test_tools_are_served_as_each_component_loads_and_up_waits_for_the_last(tmp_path: Path) -> None:
    # The slow component's Wasm is a named pipe: its load blocks until the test writes the WAT,
    # so "still loading" lasts exactly as long as the test wants, however busy the machine is.
    # It comes first in the config, so serving in config order would serve nothing.
    slow = tmp_path / "slow" / "testkit.wat"
    slow.parent.mkdir()
    os.mkfifo(slow)
    config = tmp_path / "toolbus.toml"
    config.write_text(
        f'state_dir = "{tmp_path / "state"}"\n'
        f'cache_dir = "{tmp_path / "cache"}"\n'
        "[[components]]\n"
        'name = "kit"\n'
        f'path = "{slow}"\n'
        "[[components]]\n"
        'name = "echo"\n'
        'kind = "command"\n'
        f'path = "{EXAMPLES / "wat" / "echo.wat"}"\n'
        'input_schema = { type = "object" }\n',
        encoding="utf-8",
    )
    port, nats_port = free_ports(2)
    mcp_url = f"http://127.0.0.1:{port}/mcp"
    # One worker: the pipe is fed once, and a second worker would wait on it for ever.
    up = UpProcess(config, tmp_path / "up.log", "--port", str(port), "--nats-port", str(nats_port), "--workers", "1")

    async def listed(mode: str = "auto") -> set[str]:
        try:
            async with Client(mcp_url, mode=mode) as client:
                return {tool.name for tool in (await client.list_tools()).tools}
        except Exception:  # not listening yet, or not connected to NATS yet
            return set()

    try:
        deadline = time.monotonic() + EVENT_TIMEOUT_S
        while "echo" not in await listed():
            up.output()
            assert time.monotonic() < deadline, f"echo never listed: {up.log_tail()}"
            await asyncio.sleep(0.2)
        # Served, not only listed: a call is answered while `kit` is still loading.
        async with Client(mcp_url, mode="auto") as client:
            echoed = await client.call_tool("echo", {"said": "early"})
        assert echoed.structured_content == {"said": "early"}
        # Both eras list what is served so far, and nothing of the component still loading.
        for mode in ("auto", "legacy"):
            served = await listed(mode)
            assert "echo" in served and not {name for name in served if name.startswith("kit_")}, mode
        # The system is not up yet, and says which component it waits for.
        assert "toolbus is up" not in up.output()
        status = _readyz(port)
        assert status is not None
        assert status[0] == 503
        assert status[1]["components"] == {"kit": "waiting", "echo": "served"}

        await asyncio.to_thread(_feed, slow, TESTKIT_WAT.read_bytes())
        while "Ctrl-C" not in up.output():
            assert time.monotonic() < deadline + EVENT_TIMEOUT_S, "no banner after the last component loaded"
            await asyncio.sleep(0.2)
        banner = up.output()
        assert "toolbus is up" in banner
        assert "kit_add" in banner and "echo" in banner
        assert f"http://127.0.0.1:{port}/metrics" in banner
        # By the time the banner is out, /readyz agrees and every tool is listed.
        status = _readyz(port)
        assert status is not None
        assert status[0] == 200
        assert status[1]["components"] == {"kit": "served", "echo": "served"}
        assert {"echo", "kit_add"} <= await listed()
    finally:
        code = up.stop()
        with contextlib.suppress(OSError):  # unblock a worker still reading the pipe
            os.close(os.open(slow, os.O_WRONLY | os.O_NONBLOCK))
    assert code == 0, up.log_tail()
