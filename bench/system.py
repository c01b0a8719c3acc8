"""A toolbus system under ``toolbus up``, started the way a user starts it, on free ports.

The config comes from a template in ``bench/config/``; this module fills in a free port for the
nats-server, a scratch state directory and the checkout's path, then runs
``toolbus up --config FILE --nats URL [--workers N] --port P`` and waits for its "toolbus is up" banner.

The nats-server is the bench's own and open (no users): the bench's probes do what no role of a
deployment may — the cancel bench taps calls, cancels and other clients' replies, the bus
section serves an echo subject outside the catalogue. ``toolbus up``'s embedded server is
never open (docs/security.md), so the bench starts the same binary itself and hands it to ``up``.
"""

from __future__ import annotations

import string
import sys
from dataclasses import dataclass, field
from pathlib import Path

from bench import cpu
from bus.embedded import free_port, nats_server_binary
from bus.subjects import Subjects
from harness.processes import REPO, Child, Children

CONFIG_DIR = Path(__file__).resolve().parent / "config"
READY_TIMEOUT_S = 600.0
"""A first start may build and compile components; later starts take a few seconds."""
READY_BANNER = "toolbus is up"


def toolbus_command() -> list[str]:
    """The ``toolbus`` console script installed beside this Python (else ``python -m cli.main``)."""
    script = Path(sys.executable).parent / "toolbus"
    return [str(script)] if script.is_file() else [sys.executable, "-m", "cli.main"]


def render_config(template: Path, target: Path, **values: str) -> Path:
    """Write ``template`` with its ``$placeholders`` filled in to ``target``; return ``target``."""
    text = string.Template(template.read_text()).substitute(repo=str(REPO), **values)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(text)
    return target


@dataclass
class ToolbusSystem:
    """One ``toolbus up`` run: embedded NATS, registry, ``workers`` workers (None: ``toolbus up``'s
    default, a worker per core, each pinned to its core) and the gateway."""

    name: str
    template: Path
    scratch: Path
    workers: int | None = None
    prefix: str = "toolbus"
    nats_port: int = field(default_factory=free_port)
    http_port: int = field(default_factory=free_port)
    child: Child | None = None
    nats: Child | None = None
    values: dict[str, str] = field(default_factory=dict)
    """More ``$placeholders`` of the template (a template without them ignores them)."""

    @property
    def nats_url(self) -> str:
        return f"nats://127.0.0.1:{self.nats_port}"

    @property
    def mcp_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}/mcp"

    @property
    def subjects(self) -> Subjects:
        return Subjects(self.prefix)

    def start(self, children: Children) -> None:
        """Start the system and wait until every worker has announced and the gateway listens.

        Raises:
            ChildFailed: ``toolbus up`` exited or was not ready in time (with its log tail).
        """
        config = render_config(
            self.template,
            self.scratch / f"{self.name}.toml",
            nats_url=self.nats_url,
            state_dir=str(self.scratch / f"{self.name}-state"),
            **self.values,
        )
        store = self.scratch / f"{self.name}-jetstream"
        server = [str(nats_server_binary()), "--addr", "127.0.0.1", "--port", str(self.nats_port), "--jetstream"]
        self.nats = children.spawn(f"{self.name}-nats", [*server, "--store_dir", str(store)])
        self.nats.wait_for_output("Server is ready", READY_TIMEOUT_S)
        argv = [*toolbus_command(), "up", "--config", str(config), "--nats", self.nats_url]
        if self.workers is not None:
            argv += ["--workers", str(self.workers)]
        argv += ["--host", "127.0.0.1", "--port", str(self.http_port)]
        self.child = children.spawn(self.name, argv)
        self.child.wait_for_output(READY_BANNER, READY_TIMEOUT_S)

    def processes(self) -> dict[int, str]:
        """Every process of the system (supervisor, nats-server, registry, workers, gateway) by role."""
        assert self.child is not None and self.nats is not None
        return cpu.labelled([*cpu.descendants(self.child.pid), self.nats.pid])

    def pids_of(self, role: str) -> list[int]:
        """The pids of every process with ``role`` (``worker``, ``worker-2``...)."""
        return [pid for pid, name in self.processes().items() if name == role or name.startswith(f"{role}-")]

    def pid_of(self, role: str) -> int:
        """The pid of the first process with ``role`` (e.g. ``gateway``)."""
        for pid, name in self.processes().items():
            if name == role:
                return pid
        raise LookupError(f"no {role} process in {self.name}")

    def stop(self, children: Children) -> None:
        if self.child is not None:
            children.stop(self.child)
            self.child = None
        if self.nats is not None:
            children.stop(self.nats)
            self.nats = None
