"""``toolbus up``: the whole system on one machine, as supervised child processes.

Starts the embedded nats-server (unless ``--nats`` names one), then the registry, the
workers and the gateway — each the same ``toolbus`` verb an operator would run — restarts any
child that dies, the nats-server included (same port, same store), and stops it all on Ctrl-C or
SIGTERM. Workers serve each component's tools as soon as it loads; the "toolbus is up" banner
(tools, MCP endpoint, metrics) comes only once every worker serves every configured component
and each gateway's ``/readyz`` says so too (docs/operations.md, "Start-up").

The embedded server is never open: it runs with one user per role (``bus.permissions``), their
passwords made once and kept 0600 under the state dir (``bus.credentials``), where every verb
run on this machine finds its role's.

Stopping is final: the moment a shutdown signal arrives (to ``up`` alone, or to its whole
process group, as Ctrl-C sends it), nothing is restarted any more — a child that exits because
it got the signal too is simply gone. Children are stopped together (``CHILD_STOP_TIMEOUT_S``,
then killed), the nats-server last: it runs in a session of its own, so a signal to the group
does not pull it away from children still draining through it.

``toolbus up --cluster 3`` runs the scale-out shape on one machine instead: three nats-servers
clustered on loopback (restarted if one dies), JetStream R3, two gateways on neighbouring
ports and three workers, every process given all three server URLs so it can fail over.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import secrets
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import structlog

from bus.cancellation import cancel_and_wait
from bus.connection import connected
from bus.credentials import credentials_dir, ensure_credentials, with_local_credentials, write_server_config
from bus.embedded import EmbeddedNatsCluster, EmbeddedNatsServer, port_in_use
from bus.errors import EmbeddedServerError
from bus.provisioning import wait_for_jetstream
from bus.security import authorization
from bus.shutdown import wait_for_shutdown_signal
from bus.subjects import Subjects
from cli.options import add_common_options, common_option, run_verb
from schemas.codec import DecodeError, decode
from schemas.config import Settings, allowed_cores
from schemas.environment import NATS_REPLICAS_VARIABLE, PRINCIPAL_KEY_VARIABLE, SUPERVISOR_PID_VARIABLE
from schemas.wire import WorkerAnnouncement

log = structlog.get_logger(__name__)

EXAMPLES_CONFIG = Path(__file__).resolve().parents[1] / "examples" / "toolbus.toml"
"""Served when no ``--config`` is given (the example tools of a source checkout)."""
READY_TIMEOUT_S = 600.0
"""First start builds the examples with componentize-py (~6 s each) and compiles them (~6 s)."""
READY_PROBE_INTERVAL_S = 0.1
"""How often ``up`` asks a starting gateway's ``/readyz``."""
PROBE_TIMEOUT_S = 5.0
"""One ``/readyz`` probe: connecting and reading its status line."""
RESTART_BACKOFF_S = (0.5, 1.0, 2.0, 5.0)
"""Pauses before restarting a child that keeps dying; a child up for a minute resets it."""
STABLE_AFTER_S = 60.0
CHILD_STOP_TIMEOUT_S = 3.5
"""A child still running this long after SIGTERM is killed: with the nats-server's own stop,
everything is down within 5 s (an idle child exits in well under a second)."""
CLUSTER_WORKERS = 3
"""Worker processes of ``--cluster`` unless ``--workers`` says otherwise."""
CLUSTER_GATEWAYS = 2
"""Gateways of ``--cluster``, on the MCP port and the ones after it."""
NODE_WATCH_INTERVAL_S = 0.5
"""How often the supervisor checks that every nats-server it started is alive."""
NODE_RESTART_DELAY_S = 10.0
"""A cluster node that died is started again after this: long enough that the cluster visibly
carries on without it (R3 keeps a quorum on two nodes), short enough that a dev cluster heals
itself. A lone server is started again at once: nothing works without it."""


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``up`` verb."""
    parser = subparsers.add_parser("up", help="run everything on this machine (embedded NATS unless --nats)")
    add_common_options(parser)
    parser.add_argument(
        "--workers",
        type=int,
        help="worker processes (default from config [worker] processes: one per core; 3 with --cluster)",
    )
    parser.add_argument(
        "--cluster",
        type=int,
        metavar="N",
        help="run N nats-servers clustered on loopback (JetStream replicas N), 2 gateways, 3 workers",
    )
    parser.add_argument("--port", type=int, help="MCP port (default from config: 3001)")
    parser.add_argument(
        "--nats-port", type=int, metavar="PORT", help="port of the embedded nats-server (default from config: 4222)"
    )
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

    env: dict[str, str] | None = None
    """The child's environment (default: ours)."""
    halt: asyncio.Event = field(default_factory=asyncio.Event)
    """Set once the whole system is shutting down (shared by every child): restart nothing."""

    async def start(self) -> None:
        self.process = await asyncio.create_subprocess_exec(*self.argv, stdin=asyncio.subprocess.DEVNULL, env=self.env)
        log.info("started", child=self.name, pid=self.process.pid)

    @property
    def _halting(self) -> bool:
        return self.stopping or self.halt.is_set()

    async def supervise(self) -> None:
        """Restart the child whenever it exits, with backoff, until ``stop`` or the halt."""
        while not self._halting:
            assert self.process is not None
            started = time.monotonic()
            code = await self.process.wait()
            if time.monotonic() - started > STABLE_AFTER_S:
                self.restarts = 0
            pause = RESTART_BACKOFF_S[min(self.restarts, len(RESTART_BACKOFF_S) - 1)]
            # Decide only after the pause: a signal sent to the whole group reaches the child and
            # us at once, and the child's exit may be noticed before our own signal handler runs.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.halt.wait(), pause)
            if self._halting:
                return
            log.warning("child exited; restarting", child=self.name, code=code, after_s=pause)
            self.restarts += 1
            await self.start()

    async def stop(self) -> None:
        """SIGTERM the child (unless it is gone), kill it after ``CHILD_STOP_TIMEOUT_S``."""
        self.stopping = True
        if self.monitor:
            self.monitor.cancel()
        if self.process is None or self.process.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError):  # it may exit between the check and the signal
            self.process.terminate()
        try:
            await asyncio.wait_for(self.process.wait(), CHILD_STOP_TIMEOUT_S)
        except TimeoutError:
            log.warning("child did not stop in time; killing it", child=self.name, after_s=CHILD_STOP_TIMEOUT_S)
            self.process.kill()
            await self.process.wait()


def _toolbus(verb: str, config: Path, nats_url: str, *extra: str) -> list[str]:
    return [sys.executable, "-m", "cli.main", verb, "--config", str(config), "--nats", nats_url, *extra]


async def _wait_for_workers(settings: Settings, count: int) -> list[str]:
    """Wait until ``count`` workers serve every configured component; return the tools they serve.

    A worker announces itself ``ready`` as soon as it is connected and serves each component's
    tools as it loads; until the last is loaded its announcements name those still ``loading``.
    Each change is logged, so a slow first start shows what it is waiting for.
    """
    subjects = Subjects(settings.nats.prefix)
    ready: dict[str, list[str]] = {}
    loading: dict[str, list[str]] = {}
    started = time.monotonic()
    async with connected(settings.nats, name="toolbus-up") as nc:
        seen = asyncio.Event()

        async def on_announce(msg: object) -> None:
            try:
                announcement = decode(msg.data, WorkerAnnouncement)  # type: ignore[attr-defined]
            except DecodeError:
                return
            worker = announcement.worker_id
            if announcement.state != "ready" or worker in ready:
                return
            if loading.get(worker) != announcement.loading:
                loading[worker] = announcement.loading
                log.info(
                    "worker serving",
                    tools=sorted(t.name for t in announcement.tools),
                    still_loading=announcement.loading,
                    elapsed_s=round(time.monotonic() - started, 1),
                )
            if not announcement.loading:
                ready[worker] = [t.name for t in announcement.tools]
                if len(ready) >= count:
                    seen.set()

        sub = await nc.subscribe(subjects.announce, cb=on_announce)
        await asyncio.wait_for(seen.wait(), READY_TIMEOUT_S)
        await sub.unsubscribe()
    return sorted({tool for tools in ready.values() for tool in tools})


async def _readyz(host: str, port: int) -> int | None:
    """The status code of the gateway's ``/readyz`` (None: nothing answers HTTP there yet)."""
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), PROBE_TIMEOUT_S)
    except (OSError, TimeoutError):
        return None
    try:
        writer.write(f"GET /readyz HTTP/1.1\r\nHost: {host}:{port}\r\nConnection: close\r\n\r\n".encode())
        status_line = await asyncio.wait_for(reader.readline(), PROBE_TIMEOUT_S)
    except (OSError, TimeoutError):
        return None
    finally:
        writer.close()
    parts = status_line.split()
    return int(parts[1]) if len(parts) >= 2 and parts[1].isdigit() else None


async def _wait_for_gateway(host: str, port: int) -> None:
    """Wait until the gateway on ``port`` says it is ready (``/readyz``: every configured
    component served), so the banner never comes before a client would see every tool."""
    # Polled: readiness is an HTTP probe by design (what a load balancer or compose asks too).
    while True:
        if await _readyz(host, port) == 200:
            return
        await asyncio.sleep(READY_PROBE_INTERVAL_S)


async def _wait_until_ready(settings: Settings, workers: int, gateway_ports: list[int]) -> list[str]:
    gateways = asyncio.gather(*(_wait_for_gateway(settings.gateway.host, port) for port in gateway_ports))
    tools, _ = await asyncio.wait_for(asyncio.gather(_wait_for_workers(settings, workers), gateways), READY_TIMEOUT_S)
    return tools


async def _keep_servers_up(servers: list[EmbeddedNatsServer], delay_s: float) -> None:
    """Start any of ``servers`` that died again after ``delay_s`` (same port, same store: a
    cluster node rejoins as the same server) until cancelled, which the shutdown does first."""
    while True:
        await asyncio.sleep(NODE_WATCH_INTERVAL_S)
        for server in servers:
            if server.running:
                continue
            log.warning("nats-server died; restarting it", url=server.url, in_s=delay_s)
            await asyncio.sleep(delay_s)
            # A shutdown cancelling us mid-start must wait for the start: the thread would
            # otherwise spawn the server after the shutdown stopped it, leaving it running alone.
            starting = asyncio.ensure_future(asyncio.to_thread(server.start))
            try:
                await asyncio.shield(starting)
            except asyncio.CancelledError:
                with contextlib.suppress(EmbeddedServerError):
                    await starting
                raise
            except EmbeddedServerError as exc:
                log.error("nats-server did not restart; trying again", url=server.url, error=str(exc))
            else:
                log.info("nats-server restarted", url=server.url, pid=server.pid)


def _worker_cores(settings: Settings, workers: int) -> list[int | None]:
    """The core each worker process is pinned to (``[worker] pin_to_cores``), None for no pin.

    Only with at least one worker per core this process may use: a worker pinned alone to one of
    several cores could not run its guest threads on the others."""
    cores = allowed_cores()
    if not settings.worker.pin_to_cores or cores is None or workers < len(cores):
        return [None] * workers
    return [cores[i % len(cores)] for i in range(workers)]


def _worker_metrics_ports(settings: Settings, workers: int) -> list[int | None]:
    """Each worker's metrics port: ``[worker] metrics_port`` and the ports after it, one per
    process (two cannot listen on one port); ``0`` lets each pick a free one."""
    port = settings.worker.metrics_port
    if port is None:
        return [None] * workers
    return [port if port == 0 else port + i for i in range(workers)]


def _gateway_urls(settings: Settings, ports: list[int]) -> list[str]:
    gw = settings.gateway
    return [f"http://{gw.host}:{port}{gw.path}" for port in ports]


def _banner(
    settings: Settings, tools: list[str], gateway_ports: list[int], cluster: int | None = None, workers: int = 1
) -> str:
    example = 'calc_add \'{"a":2,"b":3}\'' if "calc_add" in tools else f"{tools[0] if tools else 'TOOL'} '{{}}'"
    endpoints = _gateway_urls(settings, gateway_ports)
    gw = settings.gateway
    lines = ["", "toolbus is up"]
    lines += [f"  MCP endpoint  {url}" for url in endpoints]
    lines += [f"  metrics       http://{gw.host}:{port}/metrics" for port in gateway_ports]
    lines += [f"  readiness     http://{gw.host}:{port}/readyz" for port in gateway_ports]
    for port in _worker_metrics_ports(settings, workers):
        if port:  # 0: each worker picked its own, and logged it
            lines.append(f"  worker metrics http://{settings.worker.metrics_host}:{port}/metrics")
    lines.append(f"  NATS          {settings.nats.url}")
    if settings.nats.user is not None:
        lines.append(f"  credentials   {credentials_dir(settings.state_dir)} (one file per role, 0600)")
    if cluster:
        lines.append(f"  cluster       {cluster} nats-servers, JetStream replicas {settings.nats.replicas}")
    lines += [
        f"  tools         {', '.join(tools) or '(none)'}",
        f"  try           toolbus call --nats {settings.nats.url} {example}",
        "Ctrl-C stops everything.",
        "",
    ]
    return "\n".join(lines)


async def up(settings: Settings, config: Path, workers: int, nats_given: bool, cluster: int | None = None) -> int:
    """Run the system until a shutdown signal; return the exit code.

    With ``cluster``, the embedded NATS is that many clustered nodes and there are two gateways.
    """
    halt = asyncio.Event()
    shutdown = asyncio.create_task(wait_for_shutdown_signal())
    shutdown.add_done_callback(lambda _: halt.set())
    await asyncio.sleep(0)  # the signal handlers are in place before anything is started
    nodes: EmbeddedNatsCluster | None = None
    servers: list[EmbeddedNatsServer] = []
    watcher: asyncio.Task[None] | None = None
    children: list[Child] = []
    env: dict[str, str] | None = None
    parsed = urlsplit(settings.nats.url.split(",")[0])
    host = parsed.hostname or "127.0.0.1"
    gateway_ports = [settings.gateway.port + i for i in range(CLUSTER_GATEWAYS if cluster else 1)]
    busy = busy_port(settings, gateway_ports, embedded_nats=not nats_given and not cluster)
    if busy is not None:
        print(f"toolbus: {busy}", file=sys.stderr)
        return 1
    try:
        if cluster or not nats_given:
            passwords = ensure_credentials(settings.state_dir)
            auth = write_server_config(settings.state_dir, authorization(Subjects(settings.nats.prefix), passwords))
        if cluster:
            nodes = EmbeddedNatsCluster(
                settings.state_dir / "cluster", size=cluster, host=host, config_file=auth, die_with_owner=True
            )
            await asyncio.to_thread(nodes.start)
            servers = nodes.nodes
            log.info("embedded nats cluster started", urls=nodes.url, pids=[node.pid for node in nodes.nodes])
            # A replica count written in the config wins; otherwise every node holds a copy.
            replicas = settings.nats.replicas if "replicas" in settings.nats.model_fields_set else cluster
            env = {**os.environ, NATS_REPLICAS_VARIABLE: str(replicas)}
            nats_update: dict[str, object] = {"url": nodes.url, "replicas": replicas}
        elif not nats_given:
            server = EmbeddedNatsServer(
                settings.state_dir / "nats", host=host, port=parsed.port or 4222, config_file=auth, die_with_owner=True
            )
            await asyncio.to_thread(server.start)
            servers = [server]
            log.info("embedded nats-server ready", url=server.url, pid=server.pid)
            nats_update = {"url": server.url}
        else:
            nats_update = {"url": settings.nats.url}
        if settings.nats.principal_key is None:
            # Gateways sign each call's principal for the workers and the registry (bus/principal.py):
            # one fresh key per run ties this run's processes together.
            env = {**(env or os.environ), PRINCIPAL_KEY_VARIABLE: secrets.token_urlsafe(32)}
        # Each child stops when we die, even by kill -9 (cli.lifecycle.stop_with_supervisor).
        env = {**(env or os.environ), SUPERVISOR_PID_VARIABLE: str(os.getpid())}
        settings = settings.model_copy(update={"nats": settings.nats.model_copy(update=nats_update)})
        settings = with_local_credentials(settings, "operator")  # `up`'s own connections (readiness)
        nats_url = settings.nats.url
        gw = settings.gateway
        children = [Child("registry", _toolbus("registry", config, nats_url), env=env, halt=halt)]
        cores = _worker_cores(settings, workers)
        for i, port in enumerate(_worker_metrics_ports(settings, workers)):
            metrics = () if port is None else ("--metrics-port", str(port))
            pin = () if cores[i] is None else ("--cpu", str(cores[i]))
            argv = _toolbus("worker", config, nats_url, *metrics, *pin)
            children.append(Child(f"worker-{i + 1}", argv, env=env, halt=halt))
        for i, port in enumerate(gateway_ports):
            argv = _toolbus("gateway", config, nats_url, "--host", gw.host, "--port", str(port))
            children.append(Child(f"gateway-{i + 1}" if cluster else "gateway", argv, env=env, halt=halt))
        if servers:
            delay_s = NODE_RESTART_DELAY_S if cluster else 0.0
            watcher = asyncio.create_task(_keep_servers_up(servers, delay_s))
        if nodes is not None:
            async with connected(settings.nats, name="toolbus-up") as nc:
                await wait_for_jetstream(nc)
        for child in children:
            if halt.is_set():
                break
            await child.start()
            child.monitor = asyncio.create_task(child.supervise())
        ready = asyncio.create_task(_wait_until_ready(settings, workers, gateway_ports))
        done, _ = await asyncio.wait({shutdown, ready}, return_when=asyncio.FIRST_COMPLETED)
        if ready in done:
            try:
                tools = ready.result()
            except TimeoutError:
                # Still building, or a component that keeps failing (its worker's log says which).
                why = f"not every component was served within {READY_TIMEOUT_S:g} s; see the log above"
                print(f"toolbus: {why}", file=sys.stderr)
                return 1
            print(_banner(settings, tools, gateway_ports, cluster, workers), flush=True)
            await shutdown
        else:
            ready.cancel()
        return 0
    except EmbeddedServerError as exc:  # e.g. its port taken between our check and its bind
        print(f"toolbus: {exc}", file=sys.stderr)
        return 1
    finally:
        halt.set()  # from here on nothing is restarted, whatever exits
        if watcher is not None:
            await cancel_and_wait([watcher])
        # Together, not one by one: a group signal has reached them all already anyway.
        await asyncio.gather(*(child.stop() for child in children))
        if nodes is not None:
            await asyncio.to_thread(nodes.stop)
        else:
            for server in servers:
                await asyncio.to_thread(server.stop)
        shutdown.cancel()
        log.info("toolbus stopped")


def run(args: argparse.Namespace) -> int:
    config: Path = common_option(args, "settings_file") or EXAMPLES_CONFIG
    args.settings_file = config
    nats_given = bool(common_option(args, "nats"))
    if args.cluster is not None and (args.cluster < 1 or nats_given):
        why = "it starts its own nats-servers, so drop --nats" if nats_given else "N must be at least 1"
        print(f"toolbus: --cluster: {why}", file=sys.stderr)
        return 2
    if args.nats_port is not None:
        if nats_given or args.cluster is not None:
            print("toolbus: --nats-port is the embedded nats-server's: drop --nats and --cluster", file=sys.stderr)
            return 2
        args.nats = f"nats://127.0.0.1:{args.nats_port}"  # the embedded server's address, as [nats] url would say
    if args.workers is not None and args.workers < 1:
        print("toolbus: --workers: at least 1 (a system without workers serves no tool)", file=sys.stderr)
        return 2
    gateway = {k: v for k, v in (("port", args.port), ("host", args.host)) if v is not None}
    workers = args.workers if args.workers is not None else (CLUSTER_WORKERS if args.cluster else None)
    return run_verb(
        args,
        lambda settings, _: up(
            settings, config, workers or settings.worker.processes, nats_given=nats_given, cluster=args.cluster
        ),
        gateway=gateway,
    )


def busy_port(settings: Settings, gateway_ports: list[int], embedded_nats: bool) -> str | None:
    """Why ``up`` cannot start here, in one line: a port it would listen on is taken (by another
    ``toolbus up``, a nats-server, ...). Checked before anything starts: a gateway that cannot
    bind would otherwise be restarted for ever, and ``up``'s readiness probe could reach the other
    process and call the system up."""
    host = settings.gateway.host
    if embedded_nats:
        nats_port = urlsplit(settings.nats.url.split(",")[0]).port or 4222
        if nats_port in gateway_ports:  # both free now, but only one of the two could bind it
            return (
                f"port {nats_port} cannot be both the MCP and the NATS port; "
                "choose another with --port N or --nats-port N"
            )
    for port in gateway_ports:
        if port_in_use(host, port):
            return f"port {port} on {host} is in use by another process; choose the MCP port with --port N"
    if embedded_nats:
        nats = urlsplit(settings.nats.url.split(",")[0])
        nats_host, nats_port = nats.hostname or "127.0.0.1", nats.port or 4222
        if port_in_use(nats_host, nats_port):
            return (
                f"NATS port {nats_port} on {nats_host} is in use (another toolbus up, or a nats-server?); "
                "choose another with --nats-port N, or use that server with --nats URL"
            )
    return None
