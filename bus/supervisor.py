"""``toolbus up``: the whole system on one machine, as supervised child processes.

Starts the embedded nats-server (unless ``--nats`` names one), then the registry, the
workers and the gateway — each the same ``toolbus`` verb an operator would run — restarts any
child that dies, waits until every worker has announced, prints where everything is, and
stops it all in reverse order on Ctrl-C or SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import structlog

from bus import lifecycle
from bus.connection import connected
from bus.embedded import EmbeddedNatsServer
from bus.lifecycle import wait_for_shutdown_signal
from bus.logs import configure_logging
from bus.options import add_common_options, settings_from_args
from bus.subjects import Subjects
from schemas.codec import DecodeError, decode
from schemas.config import Settings
from schemas.wire import WorkerAnnouncement

log = structlog.get_logger(__name__)

EXAMPLES_CONFIG = Path(__file__).resolve().parents[1] / "examples" / "toolbus.toml"
"""Served when no ``--config`` is given (the example tools of a source checkout)."""
READY_TIMEOUT_S = 600.0
"""First start builds the examples with componentize-py (~6 s each) and compiles them (~6 s)."""
RESTART_BACKOFF_S = (0.5, 1.0, 2.0, 5.0)
"""Pauses before restarting a child that keeps dying; a child up for a minute resets it."""
STABLE_AFTER_S = 60.0
STOP_TIMEOUT_S = 15.0


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``up`` verb."""
    parser = subparsers.add_parser("up", help="run everything on this machine (embedded NATS unless --nats)")
    add_common_options(parser)
    parser.add_argument("--workers", type=int, default=1, help="worker processes (default 1)")
    parser.add_argument("--port", type=int, help="MCP port (default from config: 3001)")
    parser.add_argument("--host", help="MCP host (default from config: 127.0.0.1)")
    parser.set_defaults(run=run)


@dataclass
class Child:
    """One supervised ``toolbus`` process."""

    name: str
    argv: list[str]
    process: asyncio.subprocess.Process | None = None
    restarts: int = 0
    stopping: bool = False
    monitor: asyncio.Task[None] | None = field(default=None, repr=False)

    async def start(self) -> None:
        self.process = await asyncio.create_subprocess_exec(*self.argv, stdin=asyncio.subprocess.DEVNULL)
        log.info("started", child=self.name, pid=self.process.pid)

    async def supervise(self) -> None:
        """Restart the child whenever it exits, with backoff, until ``stop``."""
        while not self.stopping:
            assert self.process is not None
            started = time.monotonic()
            code = await self.process.wait()
            if self.stopping:
                return
            if time.monotonic() - started > STABLE_AFTER_S:
                self.restarts = 0
            pause = RESTART_BACKOFF_S[min(self.restarts, len(RESTART_BACKOFF_S) - 1)]
            log.warning("child exited; restarting", child=self.name, code=code, in_s=pause)
            self.restarts += 1
            await asyncio.sleep(pause)
            if not self.stopping:
                await self.start()

    async def stop(self) -> None:
        self.stopping = True
        if self.monitor:
            self.monitor.cancel()
        if self.process is None or self.process.returncode is not None:
            return
        self.process.terminate()
        try:
            await asyncio.wait_for(self.process.wait(), STOP_TIMEOUT_S)
        except TimeoutError:
            self.process.kill()
            await self.process.wait()


def _toolbus(verb: str, config: Path, nats_url: str, *extra: str) -> list[str]:
    return [sys.executable, "-m", "bus.cli", verb, "--config", str(config), "--nats", nats_url, *extra]


async def _wait_for_workers(settings: Settings, count: int) -> list[str]:
    """Wait until ``count`` workers announce themselves ready; return the tools they serve."""
    subjects = Subjects(settings.nats.prefix)
    ready: dict[str, list[str]] = {}
    async with connected(settings.nats, name="toolbus-up") as nc:
        seen = asyncio.Event()

        async def on_announce(msg: object) -> None:
            try:
                announcement = decode(msg.data, WorkerAnnouncement)  # type: ignore[attr-defined]
            except DecodeError:
                return
            if announcement.state == "ready":
                ready[announcement.worker_id] = [t.name for t in announcement.tools]
                if len(ready) >= count:
                    seen.set()

        sub = await nc.subscribe(subjects.announce, cb=on_announce)
        await asyncio.wait_for(seen.wait(), READY_TIMEOUT_S)
        await sub.unsubscribe()
    return sorted({tool for tools in ready.values() for tool in tools})


async def _wait_for_http(host: str, port: int) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError):
            _, writer = await asyncio.open_connection(host, port)
            writer.close()
            return
        await asyncio.sleep(0.1)
    raise TimeoutError(f"gateway did not listen on {host}:{port}")


async def _wait_until_ready(settings: Settings, workers: int) -> list[str]:
    tools, _ = await asyncio.gather(
        _wait_for_workers(settings, workers), _wait_for_http(settings.gateway.host, settings.gateway.port)
    )
    return tools


def _banner(settings: Settings, tools: list[str]) -> str:
    gw = settings.gateway
    example = 'calc_add \'{"a":2,"b":3}\'' if "calc_add" in tools else f"{tools[0] if tools else 'TOOL'} '{{}}'"
    return (
        "\ntoolbus is up\n"
        f"  MCP endpoint  http://{gw.host}:{gw.port}{gw.path}\n"
        f"  NATS          {settings.nats.url}\n"
        f"  tools         {', '.join(tools) or '(none)'}\n"
        f"  try           toolbus call --nats {settings.nats.url} {example}\n"
        "Ctrl-C stops everything.\n"
    )


async def up(settings: Settings, config: Path, workers: int, nats_given: bool) -> int:
    """Run the system until a shutdown signal; return the exit code."""
    server: EmbeddedNatsServer | None = None
    if not nats_given:
        parsed = urlsplit(settings.nats.url)
        server = EmbeddedNatsServer(
            settings.state_dir / "nats", host=parsed.hostname or "127.0.0.1", port=parsed.port or 4222
        )
        server.start()
        log.info("embedded nats-server ready", url=server.url, pid=server.pid)
    nats_url = server.url if server else settings.nats.url
    settings = settings.model_copy(update={"nats": settings.nats.model_copy(update={"url": nats_url})})
    gw = settings.gateway
    children = [Child("registry", _toolbus("registry", config, nats_url))]
    children += [Child(f"worker-{i + 1}", _toolbus("worker", config, nats_url)) for i in range(workers)]
    children.append(Child("gateway", _toolbus("gateway", config, nats_url, "--host", gw.host, "--port", str(gw.port))))
    try:
        for child in children:
            await child.start()
            child.monitor = asyncio.create_task(child.supervise())
        shutdown = asyncio.create_task(wait_for_shutdown_signal())
        ready = asyncio.create_task(_wait_until_ready(settings, workers))
        done, _ = await asyncio.wait({shutdown, ready}, return_when=asyncio.FIRST_COMPLETED)
        if ready in done:
            print(_banner(settings, ready.result()), flush=True)
            await shutdown
        else:
            ready.cancel()
        return 0
    finally:
        for child in reversed(children):
            await child.stop()
        if server:
            server.stop()
        log.info("toolbus stopped")


def run(args: argparse.Namespace) -> int:
    config: Path = args.settings_file or EXAMPLES_CONFIG
    args.settings_file = config
    gateway = {k: v for k, v in (("port", args.port), ("host", args.host)) if v is not None}
    settings = settings_from_args(args, gateway=gateway)
    if settings is None:
        return 2
    configure_logging(settings.log_format)
    return lifecycle.run(up(settings, config, args.workers, nats_given=bool(args.nats)))
